"""Charts of a bench: every run by variant and mode, and a timeline of traced phases.

matplotlib is an optional extra (``pip install headstart[plot]``): it is imported inside the
functions, and without it they return False and the bench still writes its table and JSON.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence

from headstart.bench.harness import BenchResult
from headstart.bench.runner import RunResult

__all__ = ["load_trace_spans", "plot_runs", "plot_timeline", "pyplot_or_none"]

log = logging.getLogger(__name__)


def pyplot_or_none():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never open a window or need a display
        import matplotlib.pyplot as plt
    except Exception as exc:  # ImportError, or a broken backend
        log.info("no chart: matplotlib unavailable (%s); pip install 'headstart[plot]'", exc)
        return None
    return plt


def plot_runs(result: BenchResult, path: str) -> bool:
    """A dot per run (seconds to ready) for each (mode, variant), a bar at the median,
    and a red cross at the bottom for each failed run. False when matplotlib is missing."""
    plt = pyplot_or_none()
    if plt is None:
        return False
    cfg = result.config
    cells = [(m, v.name) for m in cfg.modes for v in cfg.variants]
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(cells) + 2), 4.5))
    for x, (mode, name) in enumerate(cells):
        runs = [r for r in result.runs if r.mode == mode and r.variant == name]
        ok = [r.seconds for r in runs if r.ok and r.seconds is not None]
        color = colors[[v.name for v in cfg.variants].index(name) % len(colors)]
        n = max(1, len(runs))
        for j, r in enumerate(runs):
            dx = (j - (n - 1) / 2) * 0.08
            if r.ok and r.seconds is not None:
                ax.plot(x + dx, r.seconds, "o", color=color, alpha=0.8)
            else:
                ax.plot(x + dx, 0, "x", color="red", markersize=9)
        if ok:
            med = statistics.median(ok)
            ax.hlines(med, x - 0.3, x + 0.3, color=color, linewidth=2)
            ax.annotate(f"{med:.2f} s", (x + 0.32, med), va="center", fontsize=8)
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([f"{m}\n{v}" for m, v in cells])
    ax.set_ylabel("seconds from launch to ready")
    ax.set_ylim(bottom=0)
    title = "headstart bench: every run (line = median, x = failed)"
    if result.interrupted:
        title += " [interrupted]"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def load_trace_spans(path: str, launch_wall: float | None = None) -> list[tuple[str, float, float]]:
    """(name, start s, duration s) of the complete and begin/end events of a Chrome trace;
    instants have duration 0. Unreadable files give an empty list.

    With ``launch_wall`` (wall clock of the launch) and the trace's ``otherData.wall_t0``,
    starts are seconds since the launch, on the same axis as the time to ready.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    events = data.get("traceEvents", []) if isinstance(data, dict) else data
    shift = 0.0
    wall_t0 = data.get("otherData", {}).get("wall_t0") if isinstance(data, dict) else None
    if launch_wall is not None and isinstance(wall_t0, (int, float)):
        shift = wall_t0 - launch_wall
    spans: list[tuple[str, float, float]] = []
    open_: dict[tuple, list[float]] = {}
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, dict):
            continue
        ph, name, ts = e.get("ph"), str(e.get("name", "?")), e.get("ts")
        if not isinstance(ts, (int, float)):
            continue
        if ph == "X":
            spans.append((name, shift + ts / 1e6, float(e.get("dur", 0)) / 1e6))
        elif ph == "B":
            open_.setdefault((e.get("pid"), e.get("tid"), name), []).append(ts)
        elif ph == "E":
            stack = open_.get((e.get("pid"), e.get("tid"), name))
            if stack:
                start = stack.pop()
                spans.append((name, shift + start / 1e6, (ts - start) / 1e6))
        elif ph in ("i", "I"):
            spans.append((name, shift + ts / 1e6, 0.0))
    return spans


def plot_timeline(runs: Sequence[RunResult], path: str, max_names: int = 14) -> bool:
    """One panel per traced run: a bar per phase, and the run's time to ready as a line."""
    plt = pyplot_or_none()
    if plt is None:
        return False
    loaded = [(r, load_trace_spans(r.trace, r.started_at)) for r in runs if r.trace]
    loaded = [(r, s) for r, s in loaded if s]
    if not loaded:
        return False
    totals: dict[str, float] = {}
    for _, spans in loaded:
        for name, _start, dur in spans:
            totals[name] = totals.get(name, 0.0) + dur
    names = sorted(totals, key=lambda n: -totals[n])[:max_names]
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    fig, axes = plt.subplots(len(loaded), 1, sharex=True, squeeze=False,
                             figsize=(10, 0.35 * len(names) * len(loaded) + 1.5))
    for ax, (r, spans) in zip(axes[:, 0], loaded, strict=True):
        for name, start, dur in spans:
            if name not in names:
                continue
            y = names.index(name)
            color = colors[y % len(colors)]
            if dur > 0:
                ax.barh(y, dur, left=start, height=0.6, color=color)
            else:
                ax.plot(start, y, "|", color=color, markersize=10)
        if r.seconds is not None:
            ax.axvline(r.seconds, color="black", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{r.mode} / {r.variant} / run {r.index + 1}"
                     + (f" (ready {r.seconds:.2f} s)" if r.seconds is not None else ""),
                     fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlim(left=0)
    axes[-1, 0].set_xlabel("seconds since launch (dashed: ready)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
