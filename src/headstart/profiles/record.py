"""Record what a cold start reads: ``headstart record [READY-OPTIONS] -- CMD``.

How, and why this combination (measured on ``transformers serve``, see README):

1. The model's files and the target's Python installation are evicted from the page cache
   (the same eviction and environment discovery as ``headstart bench`` cold runs).
2. **Order** -- :class:`~headstart.profiles.fanotify.OpenRecorder` (root): the first open of
   every regular file by the target's process tree, including exec, dlopen and
   mmap-only files. Without root, :class:`~headstart.profiles.fanotify.MapsSampler` sees
   only mapped files (shared libraries, mmap-ed weights); the other resident files of the
   Python installation follow in path order, which replays them, but late.
3. **Ranges** -- a residency diff: when the target is ready, the page-granular ``mincore``
   map of every file in step 2 (and, without root, every file of the Python installation
   and the model) gives the byte ranges that are resident. The files started cold, so
   these are the pages the startup read (its reads plus the kernel's readahead, which is
   what a cold start pays for anyway).
4. **Touched pages** -- for files the tree still maps at readiness (shared libraries, and
   weights a loader keeps mapped), only the pages its page tables show as present (plus the
   first 64 KiB, read with ``read()``) are kept: residency there is inflated by read-around
   (:mod:`headstart.profiles.pagemap`); files no longer mapped keep their residency.
5. **Loader order** -- the weight files' page maps are sampled every 50 ms while the
   target starts; each 4 MiB chunk is replayed in the order it first became resident.

What each part misses:

* fanotify: byte ranges (notification events carry none); files opened by a process that
  exited before its event was read, or that left the tree (double fork); it needs root.
* ``/proc/PID/maps`` sampling (no root): every file that is read and closed without being
  mapped (``.py``, ``.pyc``, JSON, tokenizers) -- those come from the residency scan of
  the Python installation and the model, in path order, not first-touch order -- and
  mappings shorter than the 10 ms sampling period.
* Python audit hooks (considered, not used): they see ``open`` of Python code only, not
  ``dlopen``/``mmap`` or child processes that are not Python, and need code injected
  into the target (sitecustomize), which changes what it imports.
* Residency diff: pages read and evicted again before readiness (memory pressure); pages
  another process on the host read into the same files meanwhile (record on a quiet host);
  for files outside the evicted set (``/usr/lib`` libraries the system keeps resident) it
  cannot tell startup's pages from earlier ones, so their resident pages are recorded whole
  (a replay skips resident pages: a ``cachestat`` call, no I/O).
* Pagemap trimming: pages of processes that exited before readiness, pages unmapped again.
* Loader order: order inside a 4 MiB chunk, and reads faster than the 50 ms sampling.

Files the tree *wrote* during startup (mtime or ctime changed) are left out: they are
outputs, not inputs (on a first run that includes freshly written ``__pycache__``).
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from headstart.profiles.store import FileEntry, Profile, dist_names

__all__ = ["Recording", "record_startup", "resident_runs"]

log = logging.getLogger(__name__)

_PAGE = mmap.PAGESIZE
_libc = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_long]
        lib.mmap.restype = ctypes.c_void_p
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        _libc = lib
    return _libc


_CHUNK = 65536  # cachestat granularity where mincore cannot be trusted


def _cachestat_runs(fd: int, size: int) -> list[tuple[int, int]]:
    """Resident runs at 64 KiB granularity (a chunk counts when any page of it is cached)."""
    from headstart.pagecache import syscalls

    runs: list[tuple[int, int]] = []
    for off in range(0, size, _CHUNK):
        cs = syscalls.cachestat(fd, off, min(_CHUNK, size - off))
        if cs is None:
            raise OSError(38, "cachestat unavailable")
        if cs.nr_cache:
            n = min(_CHUNK, size - off)
            if runs and runs[-1][0] + runs[-1][1] == off:
                runs[-1] = (runs[-1][0], runs[-1][1] + n)
            else:
                runs.append((off, n))
    return runs


def resident_runs(path: str) -> list[tuple[int, int]]:
    """Resident ``(offset, length)`` runs of a file, page granular, clipped to its size.

    ``mincore`` on a read-only shared mapping where it is trusted (root, or a file we may
    write: Linux >= 5.2 reports every page resident otherwise, facts.md section 4); else
    ``cachestat`` per 64 KiB chunk. Raises OSError when the file cannot be read.
    """
    from headstart.pagecache import syscalls

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        size = st.st_size
        if size <= 0:
            return []
        if not syscalls.mincore_trusted(st):
            return _cachestat_runs(fd, size)
        lib = _lib()
        addr = lib.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap {path}: {os.strerror(err)}")
        try:
            pages = (size + _PAGE - 1) // _PAGE
            vec = ctypes.create_string_buffer(pages)
            if lib.mincore(addr, size, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore {path}: {os.strerror(err)}")
            raw = vec.raw[:pages]
        finally:
            lib.munmap(addr, size)
    finally:
        os.close(fd)
    runs: list[tuple[int, int]] = []
    i = 0
    # bytes.find on b"\x00"/non-zero boundaries: fast for the long runs weights have
    while i < pages:
        if not raw[i] & 1:
            j = raw.find(b"\x01", i)
            if j < 0:
                break
            i = j
            continue
        j = raw.find(b"\x00", i)
        j = pages if j < 0 else j
        runs.append((i * _PAGE, min(size, j * _PAGE) - i * _PAGE))
        i = j
    return runs


@dataclass
class Recording:
    """The outcome of :func:`record_startup`."""

    profile: Profile | None
    run: object  # headstart.bench.runner.RunResult
    path: str | None = None
    notes: list[str] = field(default_factory=list)


class _WeightSampler:
    """Loader order inside the weight files: every ``interval`` seconds, the resident page
    map of each weight file; each ``chunk`` gets the time it was first seen resident.

    fanotify says when a file was opened, not which part of it was read when; a loader
    that maps a shard and reads tensors in its own order would otherwise be replayed in
    offset order. Costs one mincore per weight file per sample (~1 ms for 0.5 GB).
    """

    def __init__(self, paths: list[str], chunk: int = 4 * 2**20,
                 interval: float = 0.05) -> None:
        import threading

        self.paths = paths
        self.chunk = chunk
        self.interval = interval
        self.first: dict[tuple[str, int], int] = {}  # (path, chunk index) -> sample number
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="headstart-weights",
                                        daemon=True)

    def start(self) -> None:
        if self.paths:
            self._thread.start()

    def sample(self) -> None:
        n = self.samples
        for path in self.paths:
            try:
                runs = resident_runs(path)
            except OSError:
                continue
            for off, length in runs:
                for c in range(off // self.chunk, (off + length - 1) // self.chunk + 1):
                    self.first.setdefault((path, c), n)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:
                log.debug("weight sampling: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def order(self, ranges: list[tuple[str, int, int]], file_rank: dict[str, int]
              ) -> list[tuple[str, int, int]]:
        """``ranges`` (path, offset, length) cut at chunk boundaries and sorted by when
        each chunk became resident (then file order, offset); adjacent pieces merged."""
        pieces = []
        for path, off, length in ranges:
            end = off + length
            while off < end:
                c = off // self.chunk
                stop = min(end, (c + 1) * self.chunk)
                when = self.first.get((path, c), self.samples)
                pieces.append((when, file_rank.get(path, 0), off, path, stop - off))
                off = stop
        pieces.sort()
        out: list[list] = []
        for _when, _rank, off, path, length in pieces:
            if out and out[-1][0] == path and out[-1][1] + out[-1][2] == off:
                out[-1][2] += length
            else:
                out.append([path, off, length])
        return [(p, o, n) for p, o, n in out]


class _ReadyHook:
    """Wraps a readiness probe: captures the recording the moment the target is ready,
    before the bench runner tears the process tree down (shutdown reads are not startup)."""

    def __init__(self, probe, on_ready: Callable[[], None]) -> None:
        self._probe = probe
        self._on_ready = on_ready
        self.waits_for_exit = probe.waits_for_exit
        self.kind = probe.kind

    def start(self, stdout_path: str, stderr_path: str) -> None:
        self._probe.start(stdout_path, stderr_path)

    def check(self, deadline: float):
        hit = self._probe.check(deadline)
        if hit is not None:
            self._on_ready()
        return hit

    def port(self):
        return self._probe.port()

    def describe(self) -> dict:
        return self._probe.describe()


_HEAD_PAGES = 65536 // _PAGE  # ELF headers are read with read(), not through the mapping


def _trim(runs: list[tuple[int, int]], touched: bytearray) -> list[tuple[int, int]]:
    """The parts of resident ``runs`` whose pages the tree has mapped (or file headers)."""
    out: list[tuple[int, int]] = []
    for off, length in runs:
        end = off + length
        page = off // _PAGE
        start = None
        while page * _PAGE < end:
            keep = page < _HEAD_PAGES or (page < len(touched) and touched[page])
            if keep and start is None:
                start = page
            elif not keep and start is not None:
                out.append((start * _PAGE, page * _PAGE - start * _PAGE))
                start = None
            page += 1
        if start is not None:
            out.append((start * _PAGE, end - start * _PAGE))
    return out


def _tree_pids() -> list[int]:
    from headstart.profiles.fanotify import _Tree

    tree = _Tree(os.getpid())
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) in tree]


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _walk_files(roots: list[str]) -> list[str]:
    from headstart.pagecache.ranges import expand_paths

    return [p for p in expand_paths(roots) if os.path.isfile(p)]


def record_startup(
    cmd: list[str],
    probe,
    run_dir: str,
    *,
    model: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    hub: str | None = None,
    extra_evict: list[str] | None = None,
    evict_env: bool = True,
    trim_mapped: bool = True,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    mechanism: str = "auto",
    save: bool = True,
    say: Callable[[str], None] = lambda _m: None,
) -> Recording:
    """Run ``cmd`` cold until ``probe`` says ready and store what it read as a profile.

    ``mechanism``: ``"fanotify"`` (root), ``"maps"`` (fallback) or ``"auto"``.
    ``trim_mapped``: keep only the pages of mapped files that the tree touched
    (:mod:`headstart.profiles.pagemap`). ``evict_env=False`` keeps the target's Python
    installation cached (its files are then recorded with every resident page, see the
    module docstring).
    Returns the profile (None when the run never got ready) and the bench RunResult.
    """
    from headstart.bench.environment import find_interpreter, python_environment
    from headstart.bench.runner import run_once
    from headstart.pagecache.evict import evict
    from headstart.plan import RunOptions, build_plan
    from headstart.profiles import fanotify
    from headstart.profiles.key import profile_key

    notes: list[str] = []
    plan = build_plan(RunOptions(model=model, revision=revision, cache_dir=cache_dir, hub=hub),
                      cmd)
    key, identity = profile_key(plan)

    snapshot = None
    if plan.model:
        try:
            from headstart.models.resolve import resolve_model

            snapshot = resolve_model(plan.model, revision=plan.revision,
                                     cache_dir=plan.cache_dir, hub=plan.hub)
        except Exception as exc:
            notes.append(f"model {plan.model} not resolved ({exc}); recording without it")
    weights = {f.real_path for f in snapshot.weight_files} if snapshot else set()

    interp = find_interpreter(cmd)
    pyenv = python_environment(interp) if interp else None
    env_roots = pyenv.evict_paths() if pyenv else []
    site_dirs = [p for p in (pyenv.site_packages if pyenv else []) if os.path.isdir(p)]
    extra = [os.path.abspath(p) for p in (extra_evict or [])]
    evict_roots = list(env_roots) if evict_env else []
    if snapshot:
        evict_roots += [f.real_path for f in snapshot.files]
    evict_roots += extra

    eviction = evict(evict_roots) if evict_roots else None
    if eviction is not None:
        total = sum(f.size for f in eviction.files if f.error is None)
        left = sum(f.after for f in eviction.files if f.error is None)
        notes.append(f"evicted {len(eviction.files)} files, {left} of {total} bytes stayed "
                     "resident")

    if mechanism == "auto":
        mechanism = "fanotify" if fanotify.fanotify_available()[0] else "maps"
    mark_paths = ["/", *evict_roots[:1], *env_roots, os.getcwd()]
    if snapshot:
        mark_paths += [snapshot.root, *sorted(weights)[:1]]
    if mechanism == "fanotify":
        recorder = fanotify.OpenRecorder(mark_paths)
    elif mechanism == "maps":
        recorder = fanotify.MapsSampler()
        notes.append("no fanotify (needs root): file order from /proc/PID/maps sampling, "
                     "unmapped files in path order")
    else:
        raise ValueError(f"unknown mechanism {mechanism!r} (fanotify, maps, auto)")

    captured: dict = {}
    t_start = time.time_ns()
    sampler = _WeightSampler(sorted(weights))

    def capture() -> None:
        if captured:
            return
        t_ready = time.monotonic()
        # First, while the tree still runs: which pages of its mapped files it touched.
        touched = {}
        if trim_mapped:
            from headstart.profiles.pagemap import touched_pages

            touched = touched_pages(_tree_pids())
        recorder.stop()
        sampler.stop()
        seen = recorder.ordered()
        paths = [s.path for s in seen]
        first_open = {s.path: s.t for s in seen}
        if mechanism == "maps":
            candidates = _walk_files(env_roots + extra)
            if snapshot:
                candidates += [f.real_path for f in snapshot.files]
            known = set(paths)
            paths += sorted(p for p in candidates if p not in known)
        files: list[FileEntry] = []
        ranges: list[tuple[int, int, int]] = []
        weight_ranges: list[tuple[str, int, int]] = []
        skipped_written = 0
        trimmed = 0
        for path in paths:
            try:
                st = os.stat(path)
                if st.st_mtime_ns >= t_start or st.st_ctime_ns >= t_start:
                    skipped_written += 1  # written during startup: an output, not an input
                    continue
                runs = resident_runs(path)
            except OSError:
                continue
            if not runs:
                continue
            real = os.path.realpath(path)
            if real in touched:
                before = sum(n for _o, n in runs)
                runs = _trim(runs, touched[real])
                trimmed += before - sum(n for _o, n in runs)
                if not runs:
                    continue
            idx = len(files)
            files.append(FileEntry(path=real, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                   inode=st.st_ino,
                                   role="weights" if real in weights else "library",
                                   t=round(first_open.get(path, 0.0), 4)))
            if real in weights:
                weight_ranges += [(real, off, n) for off, n in runs]
            else:
                ranges += [(idx, off, n) for off, n in runs]
        # weights last, in the order the loader made them resident
        index = {f.path: i for i, f in enumerate(files)}
        ranges += [(index[p], off, n) for p, off, n in sampler.order(weight_ranges, index)]
        captured.update(files=files, ranges=ranges, seen=len(seen), trimmed=trimmed,
                        skipped_written=skipped_written, ready_after=t_ready,
                        scan_seconds=time.monotonic() - t_ready,
                        events=recorder.events, overflow=recorder.overflow,
                        evicted=[f.path for f in files if _under(f.path, evict_roots)])

    recorder.start()
    sampler.start()
    try:
        say(f"recording {' '.join(cmd)} (cold, {mechanism})")
        result = run_once(list(cmd), _ReadyHook(probe, capture), run_dir, timeout=timeout,
                          env=env)
        if result.ok:
            capture()
    finally:
        if not captured:
            recorder.stop()
            sampler.stop()
    if not result.ok:
        return Recording(None, result, notes=[*notes, f"not ready: {result.reason}"])

    files, ranges = captured["files"], captured["ranges"]
    # Merge duplicate entries of one real path (a symlink and its target both opened).
    merged_files: list[FileEntry] = []
    index_of: dict[str, int] = {}
    remap: dict[int, int] = {}
    for i, f in enumerate(files):
        if f.path in index_of:
            remap[i] = index_of[f.path]
        else:
            index_of[f.path] = remap[i] = len(merged_files)
            merged_files.append(f)
    seen_ranges: set[tuple[int, int, int]] = set()
    final: list[tuple[int, int, int]] = []
    for i, off, n in ranges:
        r = (remap[i], off, n)
        if r not in seen_ranges:
            seen_ranges.add(r)
            final.append(r)
    lib_bytes = sum(n for i, _o, n in final if merged_files[i].role != "weights")
    profile = Profile(
        key=key, identity=identity, files=merged_files, ranges=final, command=list(cmd),
        snapshot={"root": snapshot.root, "commit": snapshot.commit, "source": snapshot.source}
        if snapshot else None,
        dists=dist_names(site_dirs), mechanism=recorder.mechanism,
        stats={
            "ready_seconds": round(result.seconds or 0.0, 3),
            "files": len(merged_files),
            "ranges": len(final),
            "bytes": sum(n for _i, _o, n in final),
            "library_bytes": lib_bytes,
            "weight_bytes": sum(n for _i, _o, n in final) - lib_bytes,
            "files_opened": captured["seen"],
            "files_written_skipped": captured["skipped_written"],
            "files_not_evicted": len(merged_files) - len(set(captured["evicted"])),
            "events": captured["events"],
            "queue_overflow": captured["overflow"],
            "scan_seconds": round(captured["scan_seconds"], 3),
            "weight_samples": sampler.samples,
            "mapped_bytes_trimmed": captured["trimmed"],
            "python": pyenv.version if pyenv else None,
            "interpreter": interp,
            "recorder_python": sys.version.split()[0],
        },
    )
    path = None
    if save:
        from headstart.profiles.store import save_profile

        path = save_profile(profile)
    return Recording(profile, result, path=path, notes=notes)
