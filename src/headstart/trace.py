"""Timestamped events of everything headstart does, exportable as Chrome trace JSON.

Tracing is always on and cheap (a lock and a list append per event): the CLI writes the
file only when ``--trace FILE`` asks. Open the file in https://ui.perfetto.dev or
chrome://tracing.

One file for the whole start: several processes (``headstart run`` and its replay helper)
may write the same trace. :meth:`Tracer.write` takes an ``flock`` on the file's folder, keeps
the other processes' events already in the file (when the file was written after this
process started: older ones are a previous run's), folds in a ``FILE.helper.json`` written
by a helper, and puts every event on the writer's clock: each file carries ``mono_t0``, its
writer's ``CLOCK_MONOTONIC`` origin (``time.perf_counter`` on Linux), which every process
on the host shares.
"""

from __future__ import annotations

import os
import threading
import time

TYPE_CHECKING = False  # `typing` costs milliseconds on the hot path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Tracer", "load_events", "tracer"]


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
                "otherData": {"wall_t0": self.wall_t0, "mono_t0": self._t0}}

    def write(self, path: str) -> None:
        """Write Chrome trace JSON atomically (temp file + rename), merged with what other
        processes of this start wrote to ``path`` (and ``path.helper.json``)."""
        import fcntl
        import json

        doc = self.to_chrome()
        mine = os.getpid()
        # One temp name per thread: `headstart run` writes from a background thread when the
        # work ends and from atexit, possibly at once; a shared name would interleave them.
        tmp = f"{path}.{mine}.{threading.get_ident()}.tmp"
        # the folder, not a FILE.lock that would stay behind
        lock_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            since = _process_start_wall() - 0.05
            sidecar = path + ".helper.json"
            found = load_events(path, self._t0, since) + load_events(sidecar, self._t0, since)
            doc["traceEvents"] = _merge(doc["traceEvents"], found, mine)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
            os.replace(tmp, path)
            if os.path.exists(sidecar):
                os.unlink(sidecar)  # its events are in `path` now
        except BaseException:
            import contextlib

            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(lock_fd)  # releases the flock


def _merge(own: list[dict[str, Any]], found: list[dict[str, Any]], mine: int
           ) -> list[dict[str, Any]]:
    """Ours, plus the other processes' events from the files. A forked helper's tracer
    holds a copy of its parent's events up to the fork: per pid, the longer list wins."""
    by_pid: dict[Any, list[dict[str, Any]]] = {}
    for e in found:
        by_pid.setdefault(e.get("pid"), []).append(e)
    ours: dict[Any, list[dict[str, Any]]] = {}
    for e in own:
        ours.setdefault(e.get("pid"), []).append(e)
    out = list(ours.pop(mine, []))
    for pid in set(by_pid) | set(ours):
        if pid == mine:
            continue
        a, b = ours.get(pid, []), by_pid.get(pid, [])
        out += a if len(a) >= len(b) else b
    return out


def _process_start_wall() -> float:
    """When this process started (wall clock), from /proc/self/stat; 0 when unknown."""
    from headstart.watch.procfs import read_stat

    st = read_stat(os.getpid())
    if st is None:
        return 0.0
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - st.start_s)


def load_events(path: str, mono_t0: float, written_after: float = 0.0) -> list[dict[str, Any]]:
    """The events of a trace file, their ``ts`` moved to a clock whose origin is the
    monotonic time ``mono_t0``; [] when the file is missing, unreadable or older than
    ``written_after`` (wall clock)."""
    import json

    try:
        if os.stat(path).st_mtime < written_after:
            return []
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        events = list(doc.get("traceEvents", []))
        other = doc.get("otherData") or {}
    except (OSError, ValueError, AttributeError):
        return []
    if "mono_t0" in other:
        shift = (float(other["mono_t0"]) - mono_t0) * 1e6
    else:  # an older file: wall clocks only
        wall_of_origin = time.time() - time.monotonic() + mono_t0
        shift = (float(other.get("wall_t0", 0.0)) - wall_of_origin) * 1e6
    for e in events:
        if "ts" in e:
            e["ts"] = e["ts"] + shift
    return events


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
