"""Whole-file prefetch of a target's model references, one leader per host and snapshot.

Shared by ``headstart run``'s prefetch thread (in-process targets) and the detached helper
process (exec'd targets). Best-effort: a reference that fails is reported to ``on_error``
and the next one is tried; nothing is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from headstart.models.resolve import resolve_model
from headstart.pagecache.engine import Prefetch, prefetch
from headstart.procs.leader import lead
from headstart.settings import run_prefetch_options
from headstart.trace import tracer

__all__ = ["prefetch_refs"]


def _log(msg: str, *args: object) -> None:
    import logging

    logging.getLogger(__name__).info(msg, *args)


def prefetch_refs(refs: Iterable[tuple[str, str | None]], *, cache_dir: str | None, hub: str,
                  on_handle: Callable[[Prefetch], object] | None = None,
                  keep_going: Callable[[], bool] = lambda: True,
                  on_error: Callable[[str, BaseException], object] | None = None) -> None:
    """Resolve each ``(ref, revision)``, take the host lead for its snapshot, read it with
    ``run_prefetch_options()``. Stops (cancelling the read) once ``keep_going()`` is false."""
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
