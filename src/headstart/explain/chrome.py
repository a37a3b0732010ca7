"""One Chrome/Perfetto trace of a watched start: every process of the tree on one clock.

Clock: microseconds since the launch (``otherData.launch_mono`` is its monotonic time).
Per process (its real pid): a ``process_name`` and the lifetime span (thread 0, args: ppid,
argv, exec time), an ``exec`` instant, counters of CPU use and disk reads. Phases from the
server's log lines, reported spans and imports are threads of the root process. headstart's
own events (``headstart run --trace``, its replay helper included) keep their pids and
threads. Spans on one thread never overlap partially, so every viewer nests them.
"""

from __future__ import annotations

import json
import os

from headstart.explain.session import Timeline

__all__ = ["PHASE_TIDS", "chrome_trace", "write_trace"]

# synthetic threads of the root process that hold what the logs said
PHASE_TIDS = {"mark": 1_000_001, "reported": 1_000_002, "import": 1_000_003}
_TID_NAMES = {"mark": "phases (log lines)", "reported": "reported by the server",
              "import": "imports (-X importtime)"}
_MAX_COUNTER_POINTS = 400


def _us(tl: Timeline, t: float) -> float:
    return round((t - tl.launch) * 1e6, 1)


def _process_events(tl: Timeline) -> list[dict]:
    events: list[dict] = []
    for rank, rec in enumerate(sorted(tl.procs.values(), key=lambda r: (r.start, r.pid))):
        pid = rec.pid
        name = f"{rec.comm} ({os.path.basename(rec.argv[0]) if rec.argv else '?'})"
        events += [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}},
            {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
             "args": {"sort_index": rank}},
        ]
        end = rec.exit_at if rec.exit_at is not None else tl.end
        start = min(rec.start, rec.first_seen)
        events.append({"name": "process", "cat": "process", "ph": "X", "pid": pid, "tid": pid,
                       "ts": _us(tl, start), "dur": max(0.0, _us(tl, end) - _us(tl, start)),
                       "args": {"ppid": rec.ppid, "argv": rec.argv[:20],
                                "exit_status": rec.exit_status, "comms": rec.comms}})
        if rec.exec_at is not None:
            events.append({"name": "exec", "cat": "process", "ph": "i", "s": "t", "pid": pid,
                           "tid": pid, "ts": _us(tl, rec.exec_at), "args": {"comm": rec.comm}})
        events += _counters(tl, rec)
    return events


def _counters(tl: Timeline, rec) -> list[dict]:
    series = rec.series
    step = max(1, len(series) // _MAX_COUNTER_POINTS)
    out = []
    prev = None
    for s in series[::step]:
        if prev is not None and s[0] > prev[0]:
            dt = s[0] - prev[0]
            out.append({"name": "CPU (cores)", "ph": "C", "pid": rec.pid, "ts": _us(tl, s[0]),
                        "args": {"cores": round((s[1] - prev[1]) / dt, 3)}})
            out.append({"name": "disk read (MB/s)", "ph": "C", "pid": rec.pid,
                        "ts": _us(tl, s[0]),
                        "args": {"MB/s": round((s[2] - prev[2]) / dt / 1e6, 2)}})
        prev = s
    return out


def _phase_events(tl: Timeline) -> list[dict]:
    root = tl.root if tl.root is not None else 0
    events = [{"name": "thread_name", "ph": "M", "pid": root, "tid": tid,
               "args": {"name": _TID_NAMES[kind]}} for kind, tid in PHASE_TIDS.items()]
    for p in [*tl.phases, *tl.imports]:
        events.append({"name": p.name, "cat": "phase", "ph": "X", "pid": root,
                       "tid": PHASE_TIDS[p.kind], "ts": _us(tl, p.start),
                       "dur": max(0.0, _us(tl, p.end) - _us(tl, p.start)),
                       "args": {"line": p.line[:300], "pid": p.pid, **p.args}})
    if tl.ready is not None:
        events.append({"name": "ready", "cat": "phase", "ph": "i", "s": "g", "pid": root,
                       "tid": PHASE_TIDS["mark"], "ts": _us(tl, tl.ready),
                       "args": {"detail": tl.result.ready_detail}})
    return events


def _nest_reported(events: list[dict]) -> list[dict]:
    """Reported spans may overlap each other partially; give each overlap its own thread."""
    tid = PHASE_TIDS["reported"]
    ends: list[float] = []  # end time per lane
    for e in sorted((e for e in events if e.get("tid") == tid and e["ph"] == "X"),
                    key=lambda e: e["ts"]):
        lane = next((i for i, end in enumerate(ends) if end <= e["ts"]), len(ends))
        if lane == len(ends):
            ends.append(0.0)
        ends[lane] = e["ts"] + e["dur"]
        e["tid"] = tid + 10 * lane
    return events


def chrome_trace(tl: Timeline) -> dict:
    events = _process_events(tl) + _nest_reported(_phase_events(tl))
    events += [e for e in tl.headstart_events if e.get("ph") != "M"]
    events += [e for e in tl.headstart_events if e.get("ph") == "M"
               and e.get("pid") not in tl.procs]
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"label": tl.label, "launch_mono": tl.launch,
                          "ready_us": None if tl.ready is None else _us(tl, tl.ready),
                          "root_pid": tl.root, "disk_wait_source": tl.source,
                          "argv": tl.argv, "outcome": tl.result.outcome}}


def write_trace(tl: Timeline, path: str) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(chrome_trace(tl), fh)
    os.replace(tmp, path)
    return path
