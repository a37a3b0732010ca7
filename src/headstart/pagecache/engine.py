"""The page-cache engine: read ordered byte ranges into the page cache, in the background.

How it reads (the measurements behind these choices: ``benchmarks/design_measurements.md``):

* A planner thread turns ranges into blocks of ``block_size`` (16 MiB), in order, and a
  pool of workers takes blocks *in that order* from one shared queue, so the first ranges
  become resident first. Bytes are never split across workers up front.
* Each file is opened once (``O_RDONLY | O_NONBLOCK``: a FIFO can never block us) and the fd
  is shared by the workers reading its blocks; it is closed after its last block.
* ``POSIX_FADV_RANDOM`` on that fd turns off readahead for reads through it, so a pread
  makes exactly the pages asked for resident (readahead would add up to the device's
  ``read_ahead_kb`` past each read).
* ``method="populate"`` (the default): ``mmap`` + ``madvise(MADV_POPULATE_READ)``, no copy
  into user space, no buffer. Contiguous blocks of one file at the head of the queue are
  mapped together, up to :data:`POPULATE_WINDOW` (64 MiB): the CPU cost is per madvise
  call, not per byte. Page faults read *around* the mapping (up to about
  a readahead window before and after it), so blocks within two readahead windows of the
  end of a range, the start of a range that does not start the file, or the end of the
  budget are read with pread instead: ranges and budgets stay exact.
* ``method="pread"``: ``os.preadv`` into one reusable ``block_size`` buffer per worker.
* Already-resident blocks are skipped with ``cachestat(2)`` (one call per file when it is
  all resident or all cold, one per block otherwise; ``mincore(2)`` when cachestat is
  missing), so a warm prefetch reads ~0 bytes.
* The memory budget is spent in plan order: the first block that does not fit is cut and
  everything after it is counted in ``bytes_over_budget``.

Guarantees: :func:`prefetch` returns at once and never raises into the caller for anything
the file system does (missing files, FIFOs, sockets, devices, folders, dangling symlinks,
symlink loops, permission denied, files truncated or deleted while being read): each is
skipped and named in ``stats.errors``. Threads are daemon threads. Nothing is written.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headstart.pagecache import syscalls
from headstart.pagecache.pathcheck import check_path as _check_path
from headstart.pagecache.pathcheck import file_kind as _kind
from headstart.pagecache.pathcheck import os_reason as _reason
from headstart.pagecache.ranges import Range, Readable, expand_paths, to_ranges
from headstart.settings import PREFETCH_DEFAULTS, PREFETCH_METHODS

__all__ = ["DEFAULT_METHOD", "Prefetch", "PrefetchStats", "prefetch"]

log = logging.getLogger(__name__)

DEFAULT_METHOD = "populate"
_PAGE = syscalls.PAGE_SIZE
POPULATE_WINDOW = 64 * 2**20  # largest mapping one populate call covers (see above)


@dataclass
class PrefetchStats:
    """Progress and outcome of one prefetch. Keys of :meth:`to_dict` are stable."""

    bytes_planned: int = 0
    bytes_read: int = 0
    bytes_skipped_resident: int = 0
    bytes_over_budget: int = 0
    bytes_failed: int = 0
    budget_bytes: int | None = None
    truncated_by_budget: bool = False
    files: int = 0
    files_done: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    elapsed: float = 0.0
    throughput: float = 0.0
    method: str = ""
    workers: int = 0
    block_size: int = 0
    cancelled: bool = False
    done: bool = False
    holds: int = 0  # times a readahead replay stood back for the target's own reads
    held_seconds: float = 0.0
    bytes_touched: int = 0  # what a readahead pass read again once resident (pagecache/touch.py)
    # bytes_skipped_resident split by path (not in to_dict nor repr: one key per file, and a
    # replay logs its stats with -v)
    skipped_resident_by_path: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def bytes_done(self) -> int:
        """Bytes dealt with so far (read, skipped, over budget or failed): progress."""
        return (self.bytes_read + self.bytes_skipped_resident + self.bytes_over_budget
                + self.bytes_failed)

    def count_skipped_resident(self, path: str, n: int) -> None:
        """``n`` bytes of ``path`` found resident, so not read (the caller holds any lock)."""
        self.bytes_skipped_resident += n
        self.skipped_resident_by_path[path] = self.skipped_resident_by_path.get(path, 0) + n

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["skipped_resident_by_path"]
        d["errors"] = [{"path": p, "reason": r} for p, r in self.errors]
        d["throughput"] = round(self.throughput, 1)
        d["elapsed"] = round(self.elapsed, 6)
        return d


class _File:
    """One open file shared by the workers reading its blocks."""

    __slots__ = ("blocks_left", "failed", "fd", "key", "path", "planned", "ranges", "read",
                 "size", "skipped", "t0")

    def __init__(self, path: str, fd: int, key: tuple[int, int]) -> None:
        self.path = path
        self.fd = fd
        self.key = key
        self.size = 0
        self.ranges = 0
        self.blocks_left = 0
        self.failed = False
        self.planned = 0
        self.read = 0
        self.skipped = 0
        self.t0: float | None = None


class Prefetch:
    """Handle of a running prefetch. Thread-safe; every method returns promptly."""

    def __init__(self, ranges: list[Range], *, workers: int, block_size: int,
                 budget: int | float | str | None, skip_resident: bool,
                 progress: Callable[[PrefetchStats], Any] | None, method: str) -> None:
        if block_size < _PAGE or block_size % _PAGE:
            raise ValueError(f"block_size must be a positive multiple of {_PAGE}")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._ranges = ranges
        self._workers = workers
        self._block_size = block_size
        self._budget_arg = budget
        self._skip_resident = skip_resident
        self._progress = progress
        self._method = _pick_method(method)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[tuple[_File, int, int, bool]] = collections.deque()
        self._ranges_left: dict[tuple[int, int], int] = {}
        self._blocks_total = 0
        self._workers_started = False
        self._workers_alive = 0
        # plan (and check residency) only a little ahead of the workers: two takes each
        per_take = max(1, POPULATE_WINDOW // block_size) if self._method == "populate" else 1
        self._queue_max = 2 * workers * per_take
        self._planning = True
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._active = 0
        self._t0 = time.perf_counter()
        self._t_end: float | None = None
        self._last_progress = 0.0
        self._progress_lock = threading.Lock()
        self._err_paths: set[str] = set()
        self._stats = PrefetchStats(method=self._method, workers=workers, block_size=block_size)
        self._threads: list[threading.Thread] = []

    # -- public -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stats(self) -> PrefetchStats:
        """A consistent copy of the statistics so far."""
        with self._lock:
            s = dataclasses.replace(self._stats, errors=list(self._stats.errors))
            end = self._t_end if self._t_end is not None else time.perf_counter()
        s.elapsed = end - self._t0
        s.throughput = s.bytes_read / s.elapsed if s.elapsed > 0 else 0.0
        s.done = self._done.is_set()
        return s

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until finished (or cancelled and stopped); ``True`` if it has finished."""
        return self._done.wait(timeout)

    def cancel(self) -> None:
        """Stop: each worker finishes at most the block it is reading, then exits."""
        self._cancel.set()
        with self._cond:
            self._stats.cancelled = True
            self._cond.notify_all()

    def __repr__(self) -> str:
        s = self.stats
        return (f"<Prefetch {'done' if s.done else 'running'} read={s.bytes_read} "
                f"skipped={s.bytes_skipped_resident} files={s.files_done}/{s.files}>")

    # -- machinery ------------------------------------------------------------------------
    def _start(self) -> None:
        self._active = 1
        t = threading.Thread(target=self._plan_safely, name="headstart-prefetch-plan",
                             daemon=True)
        self._threads.append(t)
        t.start()

    def _error(self, path: str, reason: str) -> None:
        """Record one reason per path (callers hold no lock)."""
        log.debug("prefetch: skip %s: %s", path, reason)
        with self._lock:
            if path not in self._err_paths:
                self._err_paths.add(path)
                self._stats.errors.append((path, reason))

    def _thread_exit(self) -> None:
        with self._cond:
            self._active -= 1
            last = self._active == 0
            if last:
                self._t_end = time.perf_counter()
        if last:
            self._report(final=True)
            self._done.set()

    def _report(self, final: bool = False) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if not final and now - self._last_progress < 0.1:
            return
        if not self._progress_lock.acquire(blocking=final):
            return
        try:
            self._last_progress = now
            stats = self.stats
            if final:
                stats.done = True
            self._progress(stats)
        except Exception:  # a broken callback must not stop the prefetch
            log.debug("prefetch progress callback failed", exc_info=True)
        finally:
            self._progress_lock.release()

    # planner ---------------------------------------------------------------------------
    def _plan_safely(self) -> None:
        try:
            self._plan()
        except Exception as exc:  # never raise into anyone; record and stop planning
            log.debug("prefetch planner failed", exc_info=True)
            self._error("<planner>", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self._planning = False
                self._cond.notify_all()
            self._thread_exit()

    def _start_workers(self, count: int) -> None:
        with self._cond:
            self._active += count
            self._workers_alive += count
        for i in range(count):
            t = threading.Thread(target=self._work_safely, name=f"headstart-prefetch-{i}",
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _plan(self) -> None:
        files = self._checked_ranges()
        keys = [(st.st_dev, st.st_ino) for *_r, st in files]
        with self._lock:
            self._stats.bytes_planned = sum(length for _p, _o, length, _st in files)
            self._stats.files = len(set(keys))
            for key in keys:
                self._ranges_left[key] = self._ranges_left.get(key, 0) + 1
        for (_p, _o, length, _st), key in zip(files, keys, strict=True):
            if length == 0:  # empty files and ranges past EOF: nothing to do
                self._ranges_done(key, 1)
        budget = None
        if self._budget_arg is not None:
            try:
                from headstart.pagecache.budget import resolve_budget

                budget = resolve_budget(self._budget_arg)
            except Exception as exc:
                self._error("<budget>", f"cannot compute budget, using none: {exc}")
        with self._lock:
            self._stats.budget_bytes = budget
        pending = [r for r in files if r[2] > 0]
        self._blocks_total = sum(-(-n // self._block_size) for _p, _o, n, _s in pending)
        used = 0
        remaining = sum(n for _p, _o, n, _s in pending)
        current: _File | None = None
        try:
            for path, offset, length, st in pending:
                if self._cancel.is_set():
                    return
                remaining -= length
                key = (st.st_dev, st.st_ino)
                if budget is not None and used >= budget:
                    self._over_budget(length + remaining, used, budget)
                    return
                if current is None or current.key != key:
                    if current is not None:
                        self._block_finished(current)  # the planner's own reference
                        current = None
                    current = self._open(path, st)
                    if current is None:
                        with self._lock:
                            self._stats.bytes_failed += length
                        self._ranges_done(key, 1)
                        continue
                current.ranges += 1
                used, cut = self._plan_range(current, offset, length, used, budget)
                if cut is not None:
                    self._over_budget(cut + remaining, used, budget or 0)
                    return
        finally:
            if current is not None:
                self._block_finished(current)

    def _ranges_done(self, key: tuple[int, int], count: int) -> None:
        with self._cond:
            left = self._ranges_left.get(key, 0) - count
            self._ranges_left[key] = left
            if left == 0:
                self._stats.files_done += 1

    def _over_budget(self, nbytes: int, used: int, budget: int) -> None:
        log.debug("prefetch: budget %d reached after %d bytes", budget, used)
        with self._lock:
            self._stats.truncated_by_budget = True
            self._stats.bytes_over_budget += nbytes

    def _checked_ranges(self) -> list[tuple[str, int, int, os.stat_result]]:
        """Expand folders, stat every path, clip ranges to file sizes, drop duplicates."""
        out: list[tuple[str, int, int, os.stat_result]] = []
        seen: set[tuple[int, int, int, int]] = set()
        ranges: list[Range] = []
        for r in self._ranges:
            if r.offset == 0 and r.length is None and os.path.isdir(r.path):
                ranges.extend(Range(p, 0, None) for p in expand_paths([r.path]))
            else:
                ranges.append(r)
        for r in ranges:
            reason, st = _check_path(r.path)
            if st is None:
                self._error(r.path, reason)
                continue
            size = st.st_size
            offset = max(0, int(r.offset))
            end = size if r.length is None else min(size, offset + max(0, int(r.length)))
            length = max(0, end - offset)
            key = (st.st_dev, st.st_ino, offset, length)
            if key in seen:
                continue
            seen.add(key)
            out.append((r.path, offset, length, st))
        return out

    def _open(self, path: str, st: os.stat_result) -> _File | None:
        try:
            fd = syscalls.open_for_read(path)
        except OSError as exc:
            self._error(path, _reason(exc, path))
            return None
        try:
            now = os.fstat(fd)
            if not stat_mod.S_ISREG(now.st_mode):
                raise _Skip(_kind(now.st_mode))
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise _Skip("replaced while planning")
            # exact bytes, no speculative readahead past the block: keeps budgets exact
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        except (OSError, _Skip) as exc:
            os.close(fd)
            self._error(path, str(exc) if isinstance(exc, _Skip) else _reason(exc, path))
            return None
        entry = _File(path, fd, (st.st_dev, st.st_ino))
        entry.size = now.st_size
        entry.blocks_left = 1  # the planner's own reference, released after planning
        return entry

    def _data_segments(self, entry: _File, offset: int, length: int) -> list[tuple[int, int]]:
        """The data (non-hole) parts of a range of a sparse file; the whole range otherwise."""
        end = offset + length
        try:
            st = os.fstat(entry.fd)
        except OSError:
            return [(offset, length)]
        if st.st_blocks * 512 >= st.st_size or not hasattr(os, "SEEK_DATA"):
            return [(offset, length)]
        segments = []
        pos = offset
        try:
            while pos < end:
                start = os.lseek(entry.fd, pos, os.SEEK_DATA)
                if start >= end:
                    break
                stop = min(end, os.lseek(entry.fd, start, os.SEEK_HOLE))
                segments.append((start, stop - start))
                pos = stop
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data after pos
                return [(offset, length)]
        holes = length - sum(n for _o, n in segments)
        if holes > 0:
            self._error(entry.path, f"sparse file: {holes} bytes of holes not read")
            with self._lock:
                self._stats.bytes_failed += holes
        return segments

    def _resident(self, fd: int, offset: int, length: int) -> int | None:
        """Resident bytes of a range, or None when unknown (mincore untrusted, errors)."""
        try:
            cs = syscalls.cachestat(fd, offset, length)
            if cs is not None:
                return min(length, cs.nr_cache * _PAGE)
        except OSError:
            pass
        try:
            if not syscalls.mincore_trusted(os.fstat(fd)):
                return None
            return syscalls.mincore_resident(fd, offset, length)
        except OSError:
            return None

    def _plan_range(self, entry: _File, offset: int, length: int, used: int,
                    budget: int | None) -> tuple[int, int | None]:
        """Queue the blocks of one range. Returns (budget used, bytes cut) - cut is None
        unless the budget ran out inside this range."""
        bs = self._block_size
        # mmap faults read around, up to about a readahead window before and after the
        # mapping: read exactly (pread, readahead off) where that would leave the range
        # or exceed the budget
        margin = 0
        if self._method == "populate":  # 16 MiB when sysfs does not say: err on exact reads
            margin = 2 * syscalls.readahead_window(entry.key[0], 16 * 2**20)
        whole = None
        if self._skip_resident or budget is not None:
            whole = self._resident(entry.fd, offset, length)
        segments = self._data_segments(entry, offset, length)
        planned_here = sum(n for _o, n in segments)
        done_here = 0
        for seg_off, seg_len in segments:
            pos, seg_end = seg_off, seg_off + seg_len
            while pos < seg_end:
                if self._cancel.is_set():
                    return used, None
                # align block ends to multiples of block_size in the file
                stop = min(seg_end, (pos // bs + 1) * bs)
                n = stop - pos
                if whole == 0:
                    resident = 0
                elif whole is not None and whole >= length:
                    resident = n
                elif whole is None:
                    resident = None
                else:
                    resident = self._resident(entry.fd, pos, n)
                if self._skip_resident and resident is not None and resident >= n:
                    with self._lock:
                        self._stats.count_skipped_resident(entry.path, n)
                        entry.skipped += n
                    pos, done_here = stop, done_here + n
                    continue
                cost = n - (resident or 0)  # the budget limits what becomes resident
                if budget is not None and used + cost > budget:
                    allowed = (budget - used) // _PAGE * _PAGE
                    if allowed > 0:
                        self._enqueue(entry, pos, allowed, True)
                        used += allowed
                    return used, planned_here - done_here - allowed
                exact = bool(margin) and (
                    (seg_off > 0 and pos - margin < seg_off)
                    or (seg_end < entry.size and stop + margin > seg_end)
                    or (budget is not None and used + cost + margin > budget))
                self._enqueue(entry, pos, n, exact)
                used += cost
                pos, done_here = stop, done_here + n
        return used, None

    def _enqueue(self, entry: _File, offset: int, length: int, exact: bool) -> None:
        if not self._workers_started:  # lazily: a warm prefetch starts no thread at all
            self._workers_started = True
            self._start_workers(max(1, min(self._workers, self._blocks_total)))
        with self._cond:
            # back-pressure: plan (and check residency) only a few blocks ahead of the
            # workers; this also bounds the fds held open
            while (not self._cancel.is_set() and self._workers_alive
                   and len(self._queue) >= self._queue_max):
                self._cond.wait(0.5)
            if self._cancel.is_set() or not self._workers_alive:
                return
            entry.blocks_left += 1
            entry.planned += length
            self._queue.append((entry, offset, length, exact))
            self._cond.notify()

    def _block_finished(self, entry: _File) -> None:
        with self._cond:
            entry.blocks_left -= 1
            if entry.blocks_left > 0:
                return
        self._ranges_done(entry.key, entry.ranges)
        with contextlib.suppress(OSError):
            os.close(entry.fd)
        if entry.t0 is not None or entry.skipped:
            from headstart.trace import tracer

            tracer.complete("prefetch " + os.path.basename(entry.path),
                            entry.t0 if entry.t0 is not None else tracer.now(),
                            cat="prefetch", path=entry.path, read=entry.read,
                            skipped_resident=entry.skipped, failed=entry.failed)

    # workers ---------------------------------------------------------------------------
    def _work_safely(self) -> None:
        try:
            self._work()
        except Exception as exc:
            log.debug("prefetch worker failed", exc_info=True)
            self._error("<worker>", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self._workers_alive -= 1
                self._cond.notify_all()
            self._thread_exit()

    def _next(self) -> tuple[_File, int, int, bool, int] | None:
        """The next block, in order: (file, offset, length, exact, blocks). For populate,
        contiguous blocks of one file at the head of the queue are taken together, up to
        :data:`POPULATE_WINDOW`: a larger mapping costs far less CPU per byte."""
        with self._cond:
            while True:
                if self._cancel.is_set():
                    while self._queue:  # drop what is left, closing its files
                        entry, _o, _n, _x = self._queue.popleft()
                        self._cond.release()
                        try:
                            self._block_finished(entry)
                        finally:
                            self._cond.acquire()
                    return None
                if self._queue:
                    entry, offset, length, exact = self._queue.popleft()
                    count = 1
                    if self._method == "populate" and not exact:
                        q = self._queue
                        while (q and q[0][0] is entry and q[0][1] == offset + length
                               and not q[0][3] and length + q[0][2] <= POPULATE_WINDOW):
                            length += q.popleft()[2]
                            count += 1
                    self._cond.notify_all()
                    return entry, offset, length, exact, count
                if not self._planning:
                    return None
                self._cond.wait()

    def _work(self) -> None:
        buf: memoryview | None = None
        method = self._method
        while True:
            item = self._next()
            if item is None:
                return
            entry, offset, length, exact, count = item
            try:
                if entry.failed:
                    with self._lock:
                        self._stats.bytes_failed += length
                    continue
                if entry.t0 is None:
                    from headstart.trace import tracer

                    entry.t0 = tracer.now()
                if method == "populate" and not exact:
                    got = self._populate(entry, offset, length)
                else:
                    if buf is None:  # one buffer per worker, reused for every block
                        buf = memoryview(bytearray(self._block_size))
                    got = self._pread(entry, offset, length, buf)
                with self._lock:
                    self._stats.bytes_read += got
                    self._stats.bytes_failed += length - got
                    entry.read += got
            finally:
                for _ in range(count):
                    self._block_finished(entry)
            self._report()

    def _pread(self, entry: _File, offset: int, length: int, buf: memoryview) -> int:
        pos, end = offset, offset + length
        while pos < end:
            try:
                n = os.preadv(entry.fd, [buf[:end - pos]], pos)
            except InterruptedError:
                continue
            except OSError as exc:
                entry.failed = True
                self._error(entry.path, f"read failed at offset {pos}: {_reason(exc)}")
                break
            if n == 0:
                entry.failed = True
                self._error(entry.path, f"truncated while reading: end of file at {pos}")
                break
            pos += n
        return pos - offset

    def _populate(self, entry: _File, offset: int, length: int) -> int:
        try:
            syscalls.populate_read(entry.fd, offset, length)
            return length
        except OSError as exc:
            entry.failed = True
            if exc.errno == errno.EFAULT:
                self._error(entry.path, "truncated while reading (mapping past end of file)")
            else:
                self._error(entry.path, f"read failed at offset {offset}: {_reason(exc)}")
            return 0


class _Skip(Exception):
    """A path that is not a readable regular file, with the reason as its message."""


def _pick_method(method: str) -> str:
    if method == "auto":
        method = DEFAULT_METHOD
    if method not in PREFETCH_METHODS:  # "auto" is DEFAULT_METHOD by now
        raise ValueError(f"unknown prefetch method {method!r} ({', '.join(PREFETCH_METHODS)})")
    if method == "populate" and not syscalls.populate_read_available():
        return "pread"
    return method


def prefetch(
    what: Readable,
    *,
    workers: int = PREFETCH_DEFAULTS["workers"],
    block_size: int = PREFETCH_DEFAULTS["block_size"],
    budget: int | float | str | None = PREFETCH_DEFAULTS["budget"],
    skip_resident: bool = True,
    progress: Callable[[PrefetchStats], Any] | None = None,
    method: str = PREFETCH_DEFAULTS["method"],
) -> Prefetch:
    """Start reading ``what`` into the page cache in the background; returns at once.

    ``what``: a Snapshot, a path (a folder means every file below it), paths, or ordered
    ``(path, offset, length)`` ranges (``length`` None: to the end of the file).
    ``budget``: ``"auto"`` (0.8 of available memory, cgroup aware), an ``int`` of bytes,
    a ``float`` fraction of available memory, a string (``"2GiB"``, ``"25%"``), or ``None``.
    ``progress(stats)`` is called from a worker thread at most ~10 times a second and once
    at the end; its exceptions are ignored.

    Raises only for invalid arguments (``ValueError``/``TypeError``, including
    :class:`~headstart.errors.InvalidSizeError` for a bad budget string); everything the
    file system does is recorded in ``stats.errors``.
    """
    if isinstance(budget, str) and budget.strip().lower() not in ("auto", "none", "unlimited"):
        from headstart.sizes import parse_size_or_percent

        parse_size_or_percent(budget)  # validate now, in the caller's thread
    handle = Prefetch(to_ranges(what), workers=workers, block_size=block_size, budget=budget,
                      skip_resident=skip_resident, progress=progress, method=method)
    handle._start()
    return handle
