"""``python -m headstart.procs.prefetch_helper SPEC``: the detached prefetcher of exec'd targets.

SPEC is JSON: ``{"refs": [[ref, revision], ...], "cache_dir": ..., "hub": ..., "parent": pid}``.
Stops early when ``parent`` (the exec'd target) is gone. Never prints; exit status 0.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["main"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replay_profile(spec: dict, parent: int) -> bool:
    """Replay a matching startup profile (headstart.profiles); False: use the whole files."""
    try:
        from headstart.models.resolve import resolve_model
        from headstart.procs.leader import lead
        from headstart.profiles.replay import replay
        from headstart.profiles.store import load_profile, validate

        profile = load_profile(spec["profile"])
        if profile is None:
            return False
        snap = None
        if spec["refs"]:
            ref, revision = spec["refs"][0]
            snap = resolve_model(ref, revision=revision, cache_dir=spec.get("cache_dir"),
                                 hub=spec.get("hub") or "auto")
        checked = validate(profile, snap)
        if not checked.usable:
            return False
        lock = lead(snap.key if snap is not None else f"profile:{spec['profile']}")
        if lock is None:
            return True
        handles: list = []
        try:
            replay(checked, on_handle=handles.append,
                   cancelled=lambda: not _alive(parent))
        finally:
            lock.release()
        return True
    except Exception:  # best-effort by contract
        return False


def main(argv: list[str]) -> int:
    from headstart.procs.model_prefetch import prefetch_refs

    spec = json.loads(argv[0])
    parent = int(spec["parent"])
    if spec.get("trace"):
        import atexit

        from headstart.trace import tracer

        atexit.register(tracer.write, spec["trace"])
    if spec.get("profile") and _replay_profile(spec, parent):
        return 0
    prefetch_refs(spec["refs"], cache_dir=spec.get("cache_dir"), hub=spec.get("hub") or "auto",
                  keep_going=lambda: _alive(parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
