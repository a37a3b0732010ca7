"""The capture step of a recording: at readiness, what the process tree read, as a profile.

:func:`capture` runs the moment the target is ready, while its tree still runs: the pages
of still-mapped files its page tables show (:mod:`headstart.profiles.pagemap`), then the
recorder's file order, then each file's resident runs (a residency diff: the files
started cold), laid out by :mod:`headstart.profiles.layout`. :func:`build_profile` turns
the result into a :class:`~headstart.profiles.store.Profile`. Neither starts the target,
so a recorder watching an already running tree (by pid) can use them too.

Files the tree *wrote* during startup (mtime or ctime at or after the recording's start)
are left out: they are outputs, not inputs (on a first run that includes freshly written
``__pycache__``).

What the residency diff misses: pages read and evicted again before readiness (memory
pressure, a reclaim daemon; holes of up to :data:`~headstart.profiles.layout.RECLAIM_GAP`
between resident runs are recorded as read); pages another process on the host read into
the same files meanwhile (record on a quiet host); for files outside the evicted set
(``/usr/lib`` libraries the system keeps resident) it cannot tell startup's pages from
earlier ones, so their resident pages are recorded whole (a replay skips resident pages:
a ``cachestat`` call, no I/O).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from headstart.pagecache.residency import resident_runs
from headstart.profiles.layout import (
    ChunkTimes,
    Run,
    bridge_gaps,
    merge_duplicates,
    split_by_touch,
    startup_ranges,
)
from headstart.profiles.recorders import Recorder, tree_pids
from headstart.profiles.store import FileEntry, Profile
from headstart.profiles.weights import WeightSampler

__all__ = ["Captured", "build_profile", "capture"]

_UNSAMPLED = ChunkTimes(1 << 62, {}, 0)  # no weight sampler: weights in file order, offset


@dataclass
class Captured:
    """What :func:`capture` found: ``ranges`` index ``files`` (one entry per real path)."""

    files: list[FileEntry]
    ranges: list[tuple[int, int, int]]
    tail: list[tuple[int, int, int]]  # the trimmed-off read-around (replay.stream places it)
    mechanism: str
    files_opened: int  # distinct paths the recorder saw
    skipped_written: int
    trimmed: int  # resident bytes of mapped files dropped as untouched
    mapped_before_recorder: int  # files added from the tree's mappings, not seen opened
    events: int
    overflow: bool
    weight_samples: int
    ready_at: float  # time.monotonic() when capture began
    scan_seconds: float


def capture(root_pid: int, recorder: Recorder, weight_sampler: WeightSampler | None, *,
            weights: Collection[str] = (), t_start_ns: int,
            extra_paths: Sequence[str] = (), trim_mapped: bool = True,
            include_root: bool | None = None, whole_weights: bool = False,
            touched: dict[str, bytearray] | None = None,
            before_scan: Callable[[], object] | None = None) -> Captured:
    """Stop ``recorder`` and ``weight_sampler`` (both started by the caller) and capture
    what the tree rooted at ``root_pid`` read since ``t_start_ns`` (``time.time_ns()``).

    ``weights``: real paths of the model's weight files (role ``"weights"``, replayed last
    in loader order). ``extra_paths``: files or folders, walked now, whose resident files
    follow the recorder's in path order (the maps recorder misses unmapped files).
    ``trim_mapped``: keep only the touched pages of files the tree still maps; the tree's
    pids are counted as :class:`~headstart.profiles.recorders.ProcessTree` does, with
    ``include_root``. ``whole_weights``: every weight file the tree opened is recorded
    whole instead of by residency (a start that read the model's files ahead of the loader
    itself: residency then says what was read ahead, not what the loader needs).
    ``touched``: the tree's touched pages, taken by the caller earlier (a tree that has
    exited has none to read now). ``before_scan()`` runs after the recorder has stopped and
    before the residency scan (the expensive part), e.g. to wait until the target is idle.
    """
    t_ready = time.monotonic()
    if not trim_mapped:
        touched = {}
    elif touched is None:  # first, while the tree still runs
        from headstart.profiles.pagemap import touched_pages

        touched = touched_pages(tree_pids(root_pid, include_root))
    recorder.stop()
    if weight_sampler is not None:
        weight_sampler.stop()
    if before_scan is not None:
        before_scan()
    seen = recorder.ordered()
    paths = [s.path for s in seen]
    first_open = {s.path: s.t for s in seen}
    known = set(paths)
    # Mapped at readiness but never seen opened: opened before the recorder listened (a
    # recorder armed by a helper while the target already imports), first in the order.
    early = [p for p in touched if p not in known]
    paths = early + paths
    known.update(early)
    if extra_paths:
        paths += sorted(p for p in _walk_files(list(extra_paths)) if p not in known)
    files, runs, dropped, skipped_written = _scan(paths, weights, t_start_ns, touched,
                                                  first_open, whole_weights)
    times = weight_sampler.times() if weight_sampler is not None else _UNSAMPLED
    merged, ranges = merge_duplicates(files, startup_ranges(files, runs, times))
    tail = _tail(merged, files, dropped)
    trimmed = sum(n for _i, _o, n in tail)
    return Captured(files=merged, ranges=ranges, tail=tail, mechanism=recorder.mechanism,
                    files_opened=len(seen), skipped_written=skipped_written,
                    trimmed=trimmed, events=recorder.events, overflow=recorder.overflow,
                    mapped_before_recorder=len(early),
                    weight_samples=times.samples, ready_at=t_ready,
                    scan_seconds=time.monotonic() - t_ready)


def _scan(paths: list[str], weights: Collection[str], t_start_ns: int,
          touched: dict[str, bytearray], first_open: dict[str, float],
          whole_weights: bool = False
          ) -> tuple[list[FileEntry], list[list[Run]], list[list[Run]], int]:
    """An entry, the (trimmed) resident runs and the runs trimmed off of each path that is
    an input with resident pages; plus how many paths were skipped as written."""
    files: list[FileEntry] = []
    runs_of: list[list[Run]] = []
    dropped_of: list[list[Run]] = []
    skipped_written = 0
    for path in paths:
        try:
            st = os.stat(path)
            if st.st_mtime_ns >= t_start_ns or st.st_ctime_ns >= t_start_ns:
                skipped_written += 1
                continue
            real = os.path.realpath(path)
            if whole_weights and real in weights:
                runs = [(0, st.st_size)] if st.st_size else []
            else:
                runs = bridge_gaps(resident_runs(path))
        except OSError:
            continue
        if not runs:
            continue
        dropped: list[Run] = []
        if real in touched and not (whole_weights and real in weights):
            runs, dropped = split_by_touch(runs, touched[real])
            if not runs:
                continue
        files.append(FileEntry(path=real, size=st.st_size, mtime_ns=st.st_mtime_ns,
                               inode=st.st_ino,
                               role="weights" if real in weights else "library",
                               t=round(first_open.get(path, 0.0), 4)))
        runs_of.append(runs)
        dropped_of.append(dropped)
    return files, runs_of, dropped_of, skipped_written


def _tail(merged: list[FileEntry], files: list[FileEntry],
          dropped: list[list[Run]]) -> list[tuple[int, int, int]]:
    """The runs trimmed off mapped files, as ranges of ``merged`` (one entry per real path),
    files in first-open order. Resident at readiness but not in the tree's page tables:
    the kernel's read-around of its faults, or pages it touched and unmapped again. A start
    that faults outside the touched pages (a code path the recording did not take, the
    first request) would read them again, one synchronous read-around at a time, behind
    whatever the replay has in flight. Kept so that a replay can read them
    (``HEADSTART_REPLAY_TAIL``, :func:`headstart.profiles.replay.stream`)."""
    index = {f.path: i for i, f in enumerate(merged)}
    seen: set[tuple[int, int, int]] = set()
    out: list[tuple[int, int, int]] = []
    for entry, runs in zip(files, dropped, strict=True):
        for off, n in runs:
            r = (index[entry.path], off, n)
            if r not in seen:
                seen.add(r)
                out.append(r)
    return out


def _walk_files(roots: list[str]) -> list[str]:
    from headstart.pagecache.ranges import expand_paths

    return [p for p in expand_paths(roots) if os.path.isfile(p)]


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def build_profile(captured: Captured, *, key: str, identity: dict, command: list[str],
                  snapshot: dict | None = None, dists: dict[str, list[str]] | None = None,
                  ready_seconds: float = 0.0, evicted_roots: Sequence[str] = (),
                  python: str | None = None, interpreter: str | None = None) -> Profile:
    """The profile of ``captured``. ``evicted_roots``: what was evicted before the start
    (files outside it count as ``files_not_evicted``); ``python``/``interpreter``: the
    target's, for the stats."""
    files, ranges = captured.files, captured.ranges
    total = sum(n for _i, _o, n in ranges)
    lib_bytes = sum(n for i, _o, n in ranges if files[i].role != "weights")
    evicted = {f.path for f in files if _under(f.path, evicted_roots)}
    return Profile(
        key=key, identity=identity, files=files, ranges=ranges, tail=list(captured.tail),
        command=list(command),
        snapshot=snapshot, dists=dists or {}, mechanism=captured.mechanism,
        stats={
            "ready_seconds": round(ready_seconds, 3),
            "files": len(files),
            "ranges": len(ranges),
            "bytes": total,
            "library_bytes": lib_bytes,
            "weight_bytes": total - lib_bytes,
            "files_opened": captured.files_opened,
            "files_written_skipped": captured.skipped_written,
            "files_not_evicted": len(files) - len(evicted),
            "events": captured.events,
            "queue_overflow": captured.overflow,
            "scan_seconds": round(captured.scan_seconds, 3),
            "weight_samples": captured.weight_samples,
            "mapped_bytes_trimmed": captured.trimmed,
            "tail_bytes": captured.trimmed,  # the same bytes, under the name the profile uses
            "mapped_before_recorder": captured.mapped_before_recorder,
            "python": python,
            "interpreter": interpreter,
            "recorder_python": sys.version.split()[0],
        },
    )
