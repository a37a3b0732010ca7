"""Timestamped events of everything headstart does, exportable as Chrome trace JSON.

Recording is always on and cheap (a lock and a list append per event): the CLI writes the
file only when ``--trace FILE`` asks. Open the file in https://ui.perfetto.dev or
chrome://tracing.
"""

from __future__ import annotations

import os
import threading
import time

TYPE_CHECKING = False  # `typing` costs milliseconds on the hot path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Tracer", "tracer"]


class Tracer:
    """Collects events; thread-safe. Timestamps are microseconds since the tracer started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()
        self.wall_t0 = time.time()

    def _now_us(self) -> float:
        return (time.perf_counter() - self._t0) * 1e6

    def _append(self, event: dict[str, Any]) -> None:
        event.setdefault("pid", os.getpid())
        event.setdefault("tid", threading.get_native_id())
        with self._lock:
            self._events.append(event)

    def instant(self, name: str, cat: str = "headstart", **args: Any) -> None:
        """A point in time (target started, forkserver ready, ...)."""
        self._append({"name": name, "cat": cat, "ph": "i", "s": "p", "ts": self._now_us(),
                      "args": args})

    def complete(self, name: str, start_us: float, cat: str = "headstart", **args: Any) -> None:
        """A span that began at ``start_us`` (from :meth:`now`) and ends now."""
        end = self._now_us()
        self._append({"name": name, "cat": cat, "ph": "X", "ts": start_us,
                      "dur": max(0.0, end - start_us), "args": args})

    def now(self) -> float:
        return self._now_us()

    def span(self, name: str, cat: str = "headstart", **args: Any) -> _Span:
        """``with tracer.span("resolve", model=ref) as extra: extra["files"] = 3``."""
        return _Span(self, name, cat, args)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def to_chrome(self) -> dict[str, Any]:
        meta = [{"name": "process_name", "ph": "M", "pid": os.getpid(), "tid": 0,
                 "args": {"name": "headstart"}}]
        return {"traceEvents": meta + self.events(), "displayTimeUnit": "ms",
                "otherData": {"wall_t0": self.wall_t0}}

    def write(self, path: str) -> None:
        """Write Chrome trace JSON atomically (temp file + rename)."""
        import json

        # One temp name per thread: `headstart run` writes from a background thread when the
        # work ends and from atexit, possibly at once; a shared name would interleave them.
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.to_chrome(), fh)
            os.replace(tmp, path)
        except BaseException:
            import contextlib

            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class _Span:
    """Context manager of :meth:`Tracer.span` (no contextlib: it is on the hot path)."""

    __slots__ = ("args", "cat", "extra", "name", "start", "tracer")

    def __init__(self, tracer: Tracer, name: str, cat: str, args: dict[str, Any]) -> None:
        self.tracer, self.name, self.cat, self.args = tracer, name, cat, args
        self.extra: dict[str, Any] = {}
        self.start = 0.0

    def __enter__(self) -> dict[str, Any]:
        self.start = self.tracer.now()
        return self.extra

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.extra["error"] = f"{exc_type.__name__}: {exc}"
        self.tracer.complete(self.name, self.start, self.cat, **self.args, **self.extra)


tracer = Tracer()
"""The process-wide tracer every headstart component records into."""
