"""Prefetch of a target's model references, one leader per host and snapshot: a recorded
startup profile's ranges (:func:`replay_profile`) or the whole files (:func:`prefetch_refs`).

Shared by ``headstart run``'s prefetch thread (in-process targets) and the detached helper
process (exec'd targets). Best-effort: a reference that fails is reported to ``on_error``
and the next one is tried; nothing is raised.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from headstart.models.resolve import resolve_model
from headstart.pagecache.engine import Prefetch, prefetch
from headstart.procs.leader import lead
from headstart.settings import run_prefetch_options
from headstart.trace import tracer

__all__ = ["prefetch_refs", "replay_profile"]


def _log(msg: str, *args: object) -> None:
    import logging

    logging.getLogger(__name__).info(msg, *args)


def prefetch_refs(refs: Iterable[tuple[str, str | None]], *, cache_dir: str | None, hub: str,
                  on_handle: Callable[[Prefetch], object] | None = None,
                  keep_going: Callable[[], bool] = lambda: True,
                  on_error: Callable[[str, BaseException], object] | None = None,
                  target_reads=None,
                  imports_done: Callable[[float], bool] | None = None) -> None:
    """Resolve each ``(ref, revision)``, take the host lead for its snapshot, read it with
    ``run_prefetch_options()``. Stops (cancelling the read) once ``keep_going()`` is false.

    ``target_reads`` (a :class:`headstart.watch.tree_io.TreeReads` of the target, from a
    helper process): the files are read by ordered readahead that stands back while the
    target reads from the disk itself, with the small window until ``imports_done``, as a
    profile replay does (:func:`read_ahead_of`)."""
    for ref, revision in refs:
        try:
            with tracer.span("resolve", cat="prefetch", model=ref) as info:
                snap = resolve_model(ref, revision=revision, cache_dir=cache_dir, hub=hub)
                info["files"] = len(snap.files)
                info["bytes"] = snap.total_bytes
            lock = lead(snap.key)
            if lock is None:
                tracer.instant("prefetch skipped", cat="prefetch", model=ref,
                               reason="another process on this host prefetches it")
                _log("prefetch of %s skipped: another process does it", ref)
                continue
            try:
                if target_reads is not None:
                    stats = read_ahead_of(snap, target_reads, imports_done, keep_going)
                    _log("prefetch of %s: %s", ref, stats)
                    continue
                handle = prefetch(snap, **run_prefetch_options())
                if on_handle is not None:
                    on_handle(handle)
                while not handle.wait(0.2):
                    if not keep_going():
                        handle.cancel()
                        return
                _log("prefetch of %s: %s", ref, handle.stats)
            finally:
                lock.release()
        except Exception as exc:  # best-effort by contract: the target runs regardless
            if on_error is not None:
                on_error(ref, exc)


def read_ahead_of(snap, target_reads, imports_done: Callable[[float], bool] | None,
                  keep_going: Callable[[], bool]):
    """A snapshot's whole files in order by :func:`headstart.pagecache.readahead.readahead`,
    behind the target's own reads (falls back to the engine where advice reads nothing)."""
    from headstart.errors import ReadaheadUnsupported
    from headstart.pagecache.engine import PrefetchStats
    from headstart.pagecache.ranges import to_ranges
    from headstart.profiles.replay import readahead_by_options, yield_policy
    from headstart.settings import replay_options

    opts = replay_options(whole_files=True)
    stats = PrefetchStats()
    with tracer.span("prefetch readahead", cat="prefetch", files=len(snap.files)) as info:
        try:
            readahead_by_options(to_ranges(snap), opts, slow_from=0,
                                 cancelled=lambda: not keep_going(),
                                 imports_done=imports_done,
                                 yield_to=yield_policy(opts, target_reads, imports_done),
                                 stats=stats, touch=True)
        except ReadaheadUnsupported:
            handle = prefetch(snap, **run_prefetch_options())
            while not handle.wait(0.2):
                if not keep_going():
                    handle.cancel()
            stats = handle.stats
        info.update(bytes_read=stats.bytes_read, holds=stats.holds,
                    held_seconds=round(stats.held_seconds, 3))
    return stats


# this much missing of the ranges checked is still a warm start
NEARLY_WARM_BYTES, NEARLY_WARM_SHARE = 64 * 2**20, 0.02


def replay_profile(key: str, refs: list[tuple[str, str | None]], *, cache_dir: str | None,
                   hub: str, on_handle: Callable[[Prefetch], object] = lambda _h: None,
                   keep_going: Callable[[], bool] = lambda: True,
                   on_error: Callable[[str, BaseException], object] | None = None,
                   imports_done: Callable[[float], bool] | None = None,
                   target: int | None = None,
                   on_coverage: Callable[[object], object] | None = None,
                   profile: Any = None,
                   after_lead: Callable[[], object] | None = None) -> bool:
    """Replay the startup profile ``key`` when it exists and is still valid.

    ``imports_done``: see :func:`headstart.profiles.replay.replay`. ``target``: the pid
    of the target, not this process: the replay stands back while the target's tree reads
    from the disk itself, and afterwards measures the profile's coverage
    (:mod:`headstart.profiles.coverage`), which goes to ``on_coverage``, the trace and the
    profile's sidecar. ``after_lead``: see :func:`headstart.profiles.replay.replay` (only
    a cold replay calls it). ``profile``: the profile ``key`` when the caller already loaded it.

    The first ref (the target's model) is resolved first, so a profile recorded for another
    snapshot is refused. Returns True when the profile was used (or another process on this
    host replays it), False when the caller should fall back to :func:`prefetch_refs`.
    """
    from headstart.profiles.replay import replay
    from headstart.profiles.store import load_profile, validate

    try:
        with tracer.span("profile lookup", cat="prefetch", key=key) as info:
            if profile is None:  # else: the caller loaded it
                profile = load_profile(key)
            info["found"] = profile is not None
            if profile is None:
                return False
            _ensure_probe(profile)
            warmth = _warmth(profile, info)
            if warmth == "warm":
                return True
            nearly_warm = warmth == "nearly warm"
            snap = None
            if refs:
                ref, revision = refs[0]
                snap = resolve_model(ref, revision=revision, cache_dir=cache_dir, hub=hub)
            checked = validate(profile, snap)
            info.update(usable=checked.usable, reason=checked.reason,
                        stale_files=len(checked.stale_files), bytes=checked.bytes)
        if not checked.usable:
            _log("profile %s not used: %s", key, checked.reason)
            return False
        lock = lead(snap.key if snap is not None else f"profile:{key}")
        if lock is None:
            tracer.instant("prefetch skipped", cat="prefetch", key=key,
                           reason="another process on this host prefetches it")
            return True
        try:
            if nearly_warm:
                replay(checked, on_handle=on_handle, cancelled=lambda: not keep_going())
            else:
                _replay_cold(key, checked, on_handle=on_handle, keep_going=keep_going,
                             imports_done=imports_done, target=target,
                             on_coverage=on_coverage, after_lead=after_lead)
        finally:
            lock.release()
        return True
    except Exception as exc:  # best-effort by contract: the caller falls back
        if on_error is not None:
            on_error(f"profile {key}", exc)
        return False


def _replay_cold(key: str, checked: Any, *, on_handle: Callable[[Prefetch], object],
                 keep_going: Callable[[], bool],
                 imports_done: Callable[[float], bool] | None, target: int | None,
                 on_coverage: Callable[[object], object] | None,
                 after_lead: Callable[[], object] | None) -> None:
    """A cold start's replay of the validated profile ``checked``; with the ``target``'s
    pid, standing back for its tree's own reads and measuring the profile's coverage
    after (see :func:`replay_profile`)."""
    from headstart.profiles.replay import replay

    reads = None
    if target is not None:
        from headstart.watch.tree_io import TreeReads

        reads = TreeReads(target)
        reads.start()
    t0 = time.monotonic()
    handles = replay(checked, on_handle=on_handle, cancelled=lambda: not keep_going(),
                     imports_done=imports_done, target_reads=reads, after_lead=after_lead)
    if reads is not None:
        from headstart.profiles.coverage import measure_coverage

        cov = measure_coverage(key, checked, handles, reads, t0, keep_going=keep_going)
        if on_coverage is not None:
            on_coverage(cov)


def _warmth(profile, info: dict) -> str:
    """``warm`` (every checked range resident: nothing to read, no file to check),
    ``nearly warm`` (a warm start whose few pages the kernel reclaimed since, this VM's
    DAMON pageout taking tens of MB: read them back at full speed and watch nothing, since
    a warm start's coverage says nothing of the profile and sampling the target's tree for
    the whole start only takes CPU from it) or ``cold``; noted in ``info`` (the trace)."""
    from headstart.profiles.replay import missing_bytes
    from headstart.profiles.store import unchecked

    gap = missing_bytes(unchecked(profile))
    if gap is None:
        return "cold"
    if gap[0] == 0:
        info["resident"] = True
        tracer.instant("replay skipped", cat="prefetch", reason="profile already resident")
        return "warm"
    if gap[0] <= min(NEARLY_WARM_BYTES, NEARLY_WARM_SHARE * gap[1]):
        info["nearly_warm"] = gap[0]
        return "nearly warm"
    return "cold"


def _ensure_probe(profile) -> None:
    """A profile saved before probes existed gets its ``KEY.probe`` now (see probe.py)."""
    from headstart.profiles.probe import probe_path, write_probe

    if not os.path.exists(probe_path(profile.key)):
        write_probe(profile)
