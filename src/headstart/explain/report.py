"""Rows and the terminal table of ``headstart explain``: phases, imports, processes, headstart.

Every figure is counted up to readiness (or the end of the run when it never got ready):
CPU is user + system time of all threads (``/proc/PID/stat``), disk wait is the main
thread's time blocked on I/O (delay accounting, or ticks seen in state D), sleep is the
main thread's ticks in state S, bytes are what ``/proc/PID/io`` says was fetched from
storage, each byte counted once in the tree (a reaped child's bytes are taken off its
parent, which the kernel credited with them).
"""

from __future__ import annotations

import os

from headstart.explain.session import Timeline
from headstart.watch.sampler import TrackedProcess

__all__ = ["compare_rows", "headstart_rows", "phase_rows", "process_rows", "render",
           "render_compare", "to_dict", "tree_totals"]


def _own(rec: TrackedProcess, tl: Timeline, t: float) -> tuple[float, int, float, float]:
    """(CPU s, own bytes, disk wait s, sleep s) of one process at time ``t``."""
    s = rec.at(t)
    reaped = sum(c.at(t)[2] for c in rec.reaped_children(tl.procs, t))
    disk = s[5] if tl.source == "delayacct" else s[3]
    return s[1], max(0, s[2] - reaped), disk, s[4]


def tree_totals(tl: Timeline, t: float) -> tuple[float, int, float]:
    """(CPU s, bytes, disk wait s) of the whole tree up to ``t``."""
    cpu = disk = 0.0
    nbytes = 0
    for rec in tl.procs.values():
        c, b, d, _ = _own(rec, tl, t)
        cpu, nbytes, disk = cpu + c, nbytes + b, disk + d
    return cpu, nbytes, disk


def _is_forkserver(rec: TrackedProcess | None) -> bool:
    return rec is not None and any("forkserver" in a for a in rec.argv[:4])


def _name(rec: TrackedProcess, tree: dict[int, TrackedProcess] | None = None) -> str:
    argv = rec.argv
    words = [os.path.basename(argv[0]), *argv[1:3]] if argv else []
    name = f"{rec.comm}: {' '.join(words)}" if words else rec.comm
    if tree is not None and _is_forkserver(tree.get(rec.ppid)):
        name = f"{rec.comm}: forked by the forkserver (zygote)"
    return name[:48]


def process_rows(tl: Timeline) -> list[dict]:
    rows = []
    for rec in sorted(tl.procs.values(), key=lambda r: (r.start, r.pid)):
        cpu, nbytes, disk, sleep = _own(rec, tl, tl.stop)
        end = rec.exit_at
        rows.append({
            "pid": rec.pid, "ppid": rec.ppid, "name": _name(rec, tl.procs), "argv": rec.argv,
            "start_s": rec.start - tl.launch,
            "exec_s": None if rec.exec_at is None else rec.exec_at - tl.launch,
            "exit_s": None if end is None else end - tl.launch,
            "seconds": (min(end if end is not None else tl.stop, tl.stop) - rec.start),
            "cpu_s": cpu, "disk_wait_s": disk, "sleep_s": sleep, "read_bytes": nbytes,
            "threads": rec.threads, "exit_status": rec.exit_status,
        })
    return rows


def _span_row(tl: Timeline, name: str, kind: str, start: float, end: float, **extra) -> dict:
    c0, b0, d0 = tree_totals(tl, start)
    c1, b1, d1 = tree_totals(tl, end)
    return {"name": name, "kind": kind, "start_s": start - tl.launch, "seconds": end - start,
            "cpu_s": c1 - c0, "disk_wait_s": d1 - d0, "read_bytes": b1 - b0, **extra}


def phase_rows(tl: Timeline) -> list[dict]:
    rows = [_span_row(tl, p.name, p.kind, p.start, p.end, pid=p.pid, line=p.line[:200])
            for p in tl.phases]
    rows += [_span_row(tl, p.name, "import", p.start, p.end) for p in tl.imports]
    return rows


def headstart_rows(tl: Timeline) -> list[dict]:
    """headstart's own spans (``headstart run --trace``): preload, replay, forkserver."""
    rows = []
    helper_bytes = {p: _own(r, tl, tl.stop)[1] for p, r in tl.procs.items()}
    _, tree_bytes, _ = tree_totals(tl, tl.stop)
    for e in tl.headstart_events:
        if e.get("ph") != "X" or e.get("cat") not in ("prefetch", "import", "forkserver"):
            continue
        args = dict(e.get("args") or {})
        if e["name"].startswith("replay") and tree_bytes:
            args["coverage"] = round(helper_bytes.get(e.get("pid"), 0) / tree_bytes, 3)
        rows.append({"name": e["name"], "kind": e["cat"], "pid": e.get("pid"),
                     "start_s": e["ts"] / 1e6, "seconds": e.get("dur", 0) / 1e6,
                     "args": args})
    for e in tl.headstart_events:
        if e.get("ph") == "i" and e.get("cat") == "forkserver":
            rows.append({"name": e["name"], "kind": "forkserver", "pid": e.get("pid"),
                         "start_s": e["ts"] / 1e6, "seconds": 0.0,
                         "args": dict(e.get("args") or {})})
    return sorted(rows, key=lambda r: r["start_s"])


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f} MB"


def _s(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def _status(tl: Timeline) -> str:
    r = tl.result
    if r.ok and r.seconds is not None:
        return f"ready in {r.seconds:.2f} s ({r.ready_detail})"
    exit_part = f", target exit status {r.exit_code}" if r.exit_code is not None else ""
    return f"NOT READY ({r.outcome}: {r.reason}{exit_part})"


def render(tl: Timeline) -> str:
    """The terminal table of one start."""
    head = ["phase / process", "start", "dur", "CPU", "disk wait", "sleep", "read"]
    rows = [[p["name"][:48], _s(p["start_s"]), _s(p["seconds"]), _s(p["cpu_s"]),
             _s(p["disk_wait_s"]), "", _mb(p["read_bytes"])] for p in phase_rows(tl)]
    procs = process_rows(tl)
    rows += [[f"[{p['pid']}<{p['ppid']}] {p['name']}"[:48], _s(p["start_s"]),
              _s(p["seconds"]), _s(p["cpu_s"]), _s(p["disk_wait_s"]), _s(p["sleep_s"]),
              _mb(p["read_bytes"])] for p in procs]
    cpu, nbytes, disk = tree_totals(tl, tl.stop)
    dur = tl.stop - tl.launch
    rows.append(["total (tree)", "0.00", _s(dur), _s(cpu), _s(disk), "", _mb(nbytes)])
    parts = [f"== {tl.label}: {_status(tl)}", _table(head, rows)]
    if tl.class_bytes:
        other = max(0, nbytes - sum(tl.class_bytes.values()))
        parts.append("read by class (page-cache residency before/after): " + ", ".join(
            f"{k} {_mb(v)}" for k, v in tl.class_bytes.items()) + f", other {_mb(other)}")
    hs = headstart_rows(tl)
    if hs:
        parts.append(_table(["headstart", "start", "dur", "what"], [
            [h["name"][:40], _s(h["start_s"]), _s(h["seconds"]), _args(h["args"])] for h in hs]))
    parts.append(_footer(tl))
    return "\n".join(parts)


def _args(args: dict) -> str:
    keep = ("bytes_read", "bytes_skipped_resident", "coverage", "ok", "error", "pid")
    return ", ".join(f"{k}={_mb(v) if k.startswith('bytes') else v}" for k, v in args.items()
                     if k in keep)[:60]


def _footer(tl: Timeline) -> str:
    notes = [f"disk wait: {tl.source}", f"sampled every {tl.interval * 1e3:.0f} ms "
             f"({tl.ticks} samples, sampler CPU {tl.sampler_cpu_s:.2f} s)"]
    if tl.left_behind:
        notes.append(f"killed {len(tl.left_behind)} process(es) left behind: "
                     f"{', '.join(map(str, tl.left_behind))}")
    return "; ".join(notes)


def compare_rows(base: Timeline, other: Timeline) -> list[dict]:
    """Per phase (by name): seconds without and with headstart, and the difference."""
    def by_name(tl: Timeline) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in [*tl.phases, *tl.imports]:
            out.setdefault(p.name, p.seconds)
        return out

    a, b = by_name(base), by_name(other)
    names = list(a) + [n for n in b if n not in a]
    rows = [{"name": n, "base_s": a.get(n), "other_s": b.get(n)} for n in names]
    rows.append({"name": "launch -> ready",
                 "base_s": base.result.seconds, "other_s": other.result.seconds})
    for r in rows:
        r["delta_s"] = (r["other_s"] - r["base_s"]
                        if r["base_s"] is not None and r["other_s"] is not None else None)
    return rows


def render_compare(base: Timeline, other: Timeline) -> str:
    rows = [[r["name"][:48], _s(r["base_s"]), _s(r["other_s"]),
             "" if r["delta_s"] is None else f"{r['delta_s']:+.2f}"]
            for r in compare_rows(base, other)]
    return f"== {base.label} vs {other.label}\n" + _table(
        ["phase", base.label, other.label, "delta"], rows)


def to_dict(tl: Timeline) -> dict:
    cpu, nbytes, disk = tree_totals(tl, tl.stop)
    return {"label": tl.label, "argv": tl.argv, "run_dir": tl.run_dir,
            "result": tl.result.to_dict(), "ready_s": tl.result.seconds,
            "phases": phase_rows(tl), "processes": process_rows(tl),
            "headstart": headstart_rows(tl), "class_bytes": tl.class_bytes,
            "tree": {"cpu_s": cpu, "read_bytes": nbytes, "disk_wait_s": disk},
            "disk_wait_source": tl.source, "interval_s": tl.interval, "samples": tl.ticks,
            "sampler_cpu_s": tl.sampler_cpu_s, "left_behind": tl.left_behind}
