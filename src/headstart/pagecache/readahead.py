"""Ordered, windowed asynchronous readahead: ``POSIX_FADV_WILLNEED`` with a bounded queue.

For a known list of ranges in the order a start will need them (a startup profile), one
thread asks the kernel to read them (``posix_fadvise(WILLNEED)``) and keeps at most
``window`` bytes asked for and not yet read. The kernel does the reads; the thread only
submits and waits, so thousands of small library files cost almost no CPU: per file it is
open, fstat, fadvise, cachestat, close, where the engine pays Python thread hand-offs and
~8 syscalls (measured: ``benchmarks/design_measurements.md``).

Kernel facts this rests on (Linux ``mm/fadvise.c``, ``mm/readahead.c``):

* ``WILLNEED`` starts the reads and returns without waiting for them; pages already cached
  are skipped. It reads exactly the range asked for -- no speculative readahead around it.
* One call reads at most ``max(io_pages, ra_pages)`` of the file (the device's
  ``read_ahead_kb``; a larger call leaves only that much resident). Ranges are
  therefore submitted in chunks of the device's readahead window; with a window of 0 the
  advice would read nothing, and the caller is told to use the engine instead.
* A read of a page whose I/O is in flight waits for that I/O. Waiting for the last page of
  the oldest chunk (a 1-byte ``pread`` through a descriptor with ``POSIX_FADV_RANDOM``, so a
  page that is *not* in flight costs one 4 KiB read and no readahead) paces submission to
  what the disk completes. Without the window, a throttled or slow disk would queue every
  byte of the profile ahead of the target's own reads of anything the profile lacks.
"""

from __future__ import annotations

import collections
import contextlib
import os
import stat as stat_mod
import time
from collections.abc import Callable, Iterable

from headstart.errors import ReadaheadUnsupported
from headstart.pagecache import syscalls
from headstart.pagecache.engine import PrefetchStats
from headstart.pagecache.ranges import Range
from headstart.settings import REPLAY_DEFAULTS

__all__ = ["DEFAULT_WINDOW", "MAX_HOLD", "ReadaheadUnsupported", "readahead"]

# Bytes asked for and not yet read: what a read the profile lacks (or a page reclaimed
# before use) waits behind; as small as keeps the disk busy (benchmarks/design_measurements.md).
DEFAULT_WINDOW = int(REPLAY_DEFAULTS["window"])
_MAX_OPEN = 256  # in-flight chunks hold their file open (small files: one chunk each)
_PAGE = syscalls.PAGE_SIZE
_FALLBACK_CHUNK = 128 * 1024  # the kernel's default readahead, when sysfs does not say
MAX_HOLD = 0.25  # longest wait for the target's own reads before one more chunk anyway
_HOLD_STEP = 0.003


class _Open:
    __slots__ = ("fd", "path", "refs")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.refs = 1  # the submitter's own reference while it works on this file

    def drop(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _resident_pages(fd: int, offset: int, length: int) -> int | None:
    try:
        cs = syscalls.cachestat(fd, offset, length)
    except OSError:
        return None
    return None if cs is None else cs.nr_cache


def readahead(ranges: Iterable[Range], *, window: int = DEFAULT_WINDOW,
              budget: int | None = None, cancelled: Callable[[], bool] = lambda: False,
              stats: PrefetchStats | None = None, slow_from: int | None = None,
              slow_rate: float = 0.0,
              released: Callable[[float], bool] | None = None,
              early_window: int | None = None,
              yield_to: Callable[[], bool] | None = None,
              touch: bool = False,
              after_lead: Callable[[], object] | None = None) -> PrefetchStats:
    """Make ``ranges`` resident in their order, blocking the calling thread until done.

    Early pacing: from range index ``slow_from`` on, at most ``slow_rate`` bytes/s are asked
    for until ``released(timeout)`` (wait up to ``timeout`` s, True once released) says so;
    then full speed. ``headstart run`` uses it to read weights gently while the target's
    imports run (they need CPU and few reads), and at full speed after.

    ``early_window``: from range ``slow_from`` on, the bytes kept in flight (and the largest
    chunk) until ``released`` says so; a read of the target that the ranges lack waits
    behind at most this much. The ranges before ``slow_from`` (the libraries, which the
    target wants right then, in this order) always get the full ``window``: under a cgroup
    throttle a 2 MiB window read them at 20-40 MB/s of a 300 MB/s limit, and the target
    waited for them.

    ``yield_to()``: True while the target is reading from the disk itself (its own misses);
    from range ``slow_from`` on (the weights: read ahead of need, unlike the libraries,
    which the target wants right then in this order) no new chunk is asked for then (for
    at most ``MAX_HOLD`` seconds per chunk), so its reads queue behind what is in flight
    only, never behind more of ours.

    ``touch``: the pages of the ranges from ``slow_from`` on are read once more right after
    they became resident, by a thread of their own (:mod:`headstart.pagecache.touch`).

    ``after_lead()`` is called once, when every range before ``slow_from`` was asked for.

    ``budget``: at most this many bytes are asked for (resident ones do not count).
    ``cancelled()`` is polled between chunks. ``stats`` is filled in as it goes (pass one to
    watch progress from another thread). Raises :class:`ReadaheadUnsupported` when the
    first file's device has no readahead window, or when the first chunk asked for did not
    become resident (at most ``window`` bytes were asked for by then; the caller reads the
    rest with the engine, which skips what became resident). Anything else the file system
    does is recorded in ``stats.errors``.
    """
    st = stats if stats is not None else PrefetchStats()
    st.method, st.workers, st.block_size = "willneed", 1, 0
    t0 = time.monotonic()
    stream = _Stream(st, window=window, budget=budget, slow_from=slow_from,
                     slow_rate=slow_rate, released=released, early_window=early_window,
                     yield_to=yield_to, cancelled=cancelled, touch=touch)
    try:
        for index, (path, offset, length) in enumerate(ranges):
            if index == (slow_from or 0):
                if index:
                    stream.lead_asked()
                if after_lead is not None:
                    after_lead()
            if cancelled():
                st.cancelled = True
                break
            if not stream.file(index, path, offset, length):
                break
    except ReadaheadUnsupported:
        stream.abandon()  # close without waiting: the caller reads on with the engine
        raise
    finally:
        try:
            stream.drain()  # done, cancelled or over budget: leave nothing in flight
        except ReadaheadUnsupported:
            stream.abandon()
            raise
        finally:
            stream.finish_touching()
        st.elapsed = time.monotonic() - t0
        st.throughput = st.bytes_read / st.elapsed if st.elapsed > 0 else 0.0
        st.files_done = st.files
        st.done = True
    return st


class _Stream:
    """The state of one :func:`readahead` pass: chunks in flight, the imports signal, the
    early pacing and the target's turn."""

    def __init__(self, st: PrefetchStats, *, window: int, budget: int | None,
                 slow_from: int | None, slow_rate: float,
                 released: Callable[[float], bool] | None, early_window: int | None,
                 yield_to: Callable[[], bool] | None, cancelled: Callable[[], bool],
                 touch: bool = False) -> None:
        self.st = st
        self.window = window
        self.budget = budget
        self.slow_from = slow_from
        self.slow_rate = slow_rate
        self.released = released
        self.early_window = early_window
        self.yield_to = yield_to
        self.cancelled = cancelled
        # (file, end, bytes, touch once read) of each chunk asked for and not yet read
        self.inflight: collections.deque[tuple[_Open, int, int, bool]] = collections.deque()
        self.inflight_bytes = 0
        self.verified = False
        self.seen: set[tuple[int, int]] = set()
        self.pacing = slow_from is not None and slow_rate > 0 and released is not None
        self.slow_t0 = 0.0
        self.slow_bytes = 0
        self.early = early_window is not None and released is not None
        self.fired = False
        self.toucher = None
        if touch:
            from headstart.pagecache.touch import PageToucher

            self.toucher = PageToucher()

    def finish_touching(self) -> None:
        """Let the toucher finish the pages read so far; count them."""
        if self.toucher is not None:
            self.toucher.close(wait=not self.st.cancelled)
            self.st.bytes_touched = self.toucher.bytes
            self.toucher = None

    def lead_asked(self) -> None:
        """Every range before ``slow_from`` (the libraries) was asked for: noted in the trace."""
        from headstart.trace import tracer

        tracer.instant("replay lead asked", cat="prefetch", bytes=self.st.bytes_planned,
                       bytes_read=self.st.bytes_read)

    def is_released(self, timeout: float) -> bool:
        """The imports signal, asked until it fires and remembered after."""
        if not self.fired and self.released is not None:
            self.fired = bool(self.released(timeout))
            if self.fired:
                from headstart.trace import tracer

                tracer.instant("replay released", cat="prefetch",
                               bytes_read=self.st.bytes_read)
        return self.fired

    def limit(self, index: int) -> int:
        """The in-flight bound for range ``index``: small for weights until the target's
        imports are done."""
        if not self.early or index < (self.slow_from or 0):
            return self.window
        if self.is_released(0.0):
            self.early = False
            return self.window
        return min(self.window, self.early_window)  # type: ignore[type-var]

    def stand_back(self) -> None:
        """The target is reading from the disk: ask for nothing more until it stops."""
        held = 0.0
        while held < MAX_HOLD and self.yield_to():  # type: ignore[misc]
            time.sleep(_HOLD_STEP)
            held += _HOLD_STEP
        if held:
            self.st.held_seconds += held
            self.st.holds += 1

    def pace(self, n: int) -> None:
        """Sleep (waking at once on release) until n more bytes fit under slow_rate."""
        if not self.slow_bytes:
            self.slow_t0 = time.monotonic()
        delay = self.slow_t0 + self.slow_bytes / self.slow_rate - time.monotonic()
        if self.is_released(max(0.0, delay)):
            self.pacing = False
            return
        self.slow_bytes += n

    def retire(self) -> None:
        """Wait for the oldest chunk (a 1-byte read of its last page), then account it."""
        entry, end, n, touch = self.inflight.popleft()
        self.inflight_bytes -= n
        try:
            os.pread(entry.fd, 1, end - 1)  # waits for the in-flight page
            if not self.verified:
                self.verified = True
                start = end - n
                # the advice ignored leaves only the page our pread faulted in
                got = _resident_pages(entry.fd, start, n)
                want = (end + _PAGE - 1) // _PAGE - start // _PAGE
                if got is not None and want > 1 and got <= 1:
                    raise ReadaheadUnsupported(f"WILLNEED left {got} of {want} pages")
            self.st.bytes_read += n
            if touch:
                self.toucher.put(entry.path, end - n, n)  # type: ignore[union-attr]
        except OSError as exc:
            self.st.bytes_failed += n
            self.st.errors.append((entry.path, f"read: {exc.strerror or exc}"))
        finally:
            entry.drop()

    def drain(self) -> None:
        while self.inflight:
            self.retire()

    def abandon(self) -> None:
        while self.inflight:
            self.inflight.popleft()[0].drop()

    def file(self, index: int, path: str, offset: int, length: int | None) -> bool:
        """Ask for one range of one file; False when the pass must stop (budget reached,
        cancelled)."""
        st = self.st
        try:
            fd = syscalls.open_for_read(path)
        except OSError as exc:
            st.errors.append((path, exc.strerror or str(exc)))
            return True
        entry = _Open(path, fd)
        try:
            fst = os.fstat(fd)
            if not stat_mod.S_ISREG(fst.st_mode):
                st.errors.append((path, "not a regular file"))
                return True
            if (fst.st_dev, fst.st_ino) not in self.seen:
                self.seen.add((fst.st_dev, fst.st_ino))
                st.files += 1
            end = fst.st_size if length is None else min(fst.st_size, offset + length)
            offset = max(0, offset)
            if end <= offset:
                return True
            st.bytes_planned += end - offset
            device_chunk = syscalls.readahead_window(fst.st_dev, _FALLBACK_CHUNK)
            if device_chunk <= 0 and not self.verified:
                raise ReadaheadUnsupported(f"{path}: the device's readahead is 0")
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            return self._chunks(index, entry, offset, end, device_chunk)
        except OSError as exc:
            st.errors.append((path, exc.strerror or str(exc)))
            return True
        finally:
            entry.drop()

    def _chunks(self, index: int, entry: _Open, pos: int, end: int, device_chunk: int) -> bool:
        st = self.st
        # one page per call still works where advice is honoured but the window is 0
        chunk = device_chunk if device_chunk > 0 else _PAGE
        while pos < end:
            bound = self.limit(index)
            if device_chunk > 0:
                chunk = max(_PAGE, min(device_chunk, bound))
            n = min(chunk - pos % chunk, end - pos)  # chunk-aligned in the file
            pages = (pos + n + _PAGE - 1) // _PAGE - pos // _PAGE
            got = _resident_pages(entry.fd, pos, n)
            if got is not None and got >= pages:
                st.count_skipped_resident(entry.path, n)
                pos += n
                continue
            if self.budget is not None and st.bytes_read + self.inflight_bytes + n > self.budget:
                st.truncated_by_budget = True
                st.bytes_over_budget += end - pos
                return False
            if self.pacing and index >= self.slow_from:  # type: ignore[operator]
                self.pace(n)
            if self.yield_to is not None and index >= (self.slow_from or 0):
                self.stand_back()
            os.posix_fadvise(entry.fd, pos, n, os.POSIX_FADV_WILLNEED)
            entry.refs += 1
            self.inflight.append((entry, pos + n, n, self.toucher is not None
                                  and index >= (self.slow_from or 0)))
            self.inflight_bytes += n
            pos += n
            while self.inflight and (self.inflight_bytes > bound
                                     or len(self.inflight) > _MAX_OPEN):
                self.retire()
            if self.cancelled():
                st.cancelled = True
                return False
        return True
