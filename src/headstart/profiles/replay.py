"""Replay a startup profile: read its ranges in first-touch order, libraries first.

The library ranges (interpreter, shared libraries, ``.py``/``.pyc``, sidecars) in the
order the process tree first opened them, then the weight ranges in the order the loader
made them resident. With equal worker counts (the default) this is one ordered queue of
:func:`headstart.pagecache.engine.prefetch`; ``HEADSTART_PROFILE_WORKERS=LIB,WEIGHTS``
with different counts runs two phases (libraries, then weights).

Only recorded ranges are read (resident ones are skipped), so nothing that startup does not
read is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from headstart.profiles.store import Validated
from headstart.trace import tracer

__all__ = ["DEFAULT_LIBRARY_WORKERS", "DEFAULT_WEIGHT_WORKERS", "looks_resident", "replay",
           "workers_setting"]

log = logging.getLogger(__name__)

# Measured (transformers serve, 2 GB model, 2 cores, 3 cold runs each, min/median/max s):
#   300 MB/s: 4 library then 8 weight workers 9.95/10.06/10.08; one queue of 8
#   9.91/9.93/10.22 (again: 9.59/9.83/10.03), of 16 10.11/10.48/10.57, of 4
#   9.65/9.98/10.24, of 2 9.77/10.16/10.20. Two phases left the disk idle between them.
#   unthrottled: one queue of 8 6.79/6.83/7.17, of 4 6.45/6.55/6.70, 2 then 8
#   6.76/6.78/6.87: when the disk is fast, CPU is the limit and fewer readers leave
#   more of it to the target. One ordered queue of 4: neutral when disk-bound, better
#   when CPU-bound.
DEFAULT_LIBRARY_WORKERS = 4
DEFAULT_WEIGHT_WORKERS = 4


def workers_setting() -> tuple[int, int]:
    """(library workers, weight workers), from ``HEADSTART_PROFILE_WORKERS=LIB,WEIGHTS``."""
    from headstart.settings import env_str

    value = env_str("HEADSTART_PROFILE_WORKERS")
    lib, weights = DEFAULT_LIBRARY_WORKERS, DEFAULT_WEIGHT_WORKERS
    if value:
        try:
            parts = [int(x) for x in value.split(",")]
            lib = max(1, parts[0])
            weights = max(1, parts[1]) if len(parts) > 1 else weights
        except ValueError:
            log.debug("HEADSTART_PROFILE_WORKERS=%r ignored", value)
    return lib, weights


def looks_resident(validated: Validated, sample: int = 64) -> bool:
    """True when every weight range and ``sample`` library ranges spread over the profile
    are fully cached: a warm start, where walking thousands of files would only take CPU
    from the target. ~70 cachestat calls; False when anything is missing or unknown."""
    import os

    from headstart.pagecache import syscalls

    libs = validated.libraries
    step = max(1, len(libs) // sample)
    for r in [*validated.weights, *libs[::step]]:
        try:
            fd = os.open(r.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            length = r.length if r.length is not None else os.fstat(fd).st_size - r.offset
            if length <= 0:
                continue
            cs = syscalls.cachestat(fd, r.offset, length)
            page = syscalls.PAGE_SIZE
            pages = (r.offset + length + page - 1) // page - r.offset // page
            if cs is None or cs.nr_cache < pages:
                return False
        except OSError:
            return False
        finally:
            os.close(fd)
    return True


def replay(validated: Validated, *, library_workers: int | None = None,
           weight_workers: int | None = None,
           on_handle: Callable[[Any], None] = lambda _h: None,
           cancelled: Callable[[], bool] = lambda: False) -> list[Any]:
    """Read the profile's ranges, blocking the calling (background) thread until done.

    ``cancelled()`` is polled every 0.2 s; when it returns True the reads stop.

    ``on_handle`` gets each Prefetch handle as it starts (for stats and cancellation).
    Never raises for what the file system does (the engine records it in stats).
    """
    from headstart.pagecache.engine import prefetch

    if looks_resident(validated):
        tracer.instant("replay skipped", cat="prefetch", reason="profile already resident")
        log.info("profile replay skipped: already resident")
        return []
    lib_w, weight_w = workers_setting()
    lib_w = library_workers or lib_w
    weight_w = weight_workers or weight_w
    handles = []
    phases = [("libraries", validated.libraries, lib_w), ("weights", validated.weights, weight_w)]
    if lib_w == weight_w:  # one queue: no idle disk between the phases
        phases = [("all", validated.libraries + validated.weights, lib_w)]
    for name, ranges, workers in phases:
        if not ranges or cancelled():
            continue
        with tracer.span(f"replay {name}", cat="prefetch", ranges=len(ranges),
                         workers=workers) as info:
            handle = prefetch(ranges, workers=workers)
            on_handle(handle)
            handles.append(handle)
            while not handle.wait(0.2):
                if cancelled():
                    handle.cancel()
            st = handle.stats
            info["bytes_read"] = st.bytes_read
            info["bytes_skipped_resident"] = st.bytes_skipped_resident
        log.info("profile replay of %s: %s", name, handle.stats)
    return handles
