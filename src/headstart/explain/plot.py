"""A PNG waterfall of watched starts: one panel per start, one bar per process (shaded where
it used CPU, dark where its main thread waited for the disk), the phases from the logs and
headstart's own spans. Needs matplotlib (imported here only); False without it."""

from __future__ import annotations

from collections.abc import Sequence

from headstart.explain.session import Timeline

__all__ = ["plot_waterfall"]


def _rows(tl: Timeline) -> list[tuple[str, float, float, str, list]]:
    """(label, start, end, kind, [(t0, t1, cpu share, disk share)...]) in seconds."""
    from headstart.explain.report import headstart_rows

    rows = []
    for p in [*tl.phases, *tl.imports]:
        rows.append((p.name[:40], p.start - tl.launch, p.end - tl.launch, p.kind, []))
    for h in headstart_rows(tl):
        if h["seconds"] > 0:
            rows.append((f"headstart: {h['name']}"[:40], h["start_s"],
                         h["start_s"] + h["seconds"], "headstart", []))
    for rec in sorted(tl.procs.values(), key=lambda r: (r.start, r.pid)):
        end = (rec.exit_at if rec.exit_at is not None else tl.end) - tl.launch
        segs = []
        for a, b in zip(rec.series, rec.series[1:], strict=False):
            dt = b[0] - a[0]
            if dt > 0:
                segs.append((a[0] - tl.launch, b[0] - tl.launch,
                             min(1.0, (b[1] - a[1]) / dt), min(1.0, (b[3] - a[3]) / dt)))
        label = f"{rec.pid} {rec.comm}"[:40]
        rows.append((label, rec.start - tl.launch, end, "process", segs))
    return rows


_COLORS = {"mark": "tab:blue", "reported": "tab:purple", "import": "tab:olive",
           "headstart": "tab:green", "process": "lightgray"}


def _panel(ax, tl: Timeline) -> None:
    rows = _rows(tl)
    for y, (_label, start, end, kind, segs) in enumerate(rows):
        ax.barh(y, max(end - start, 0.005), left=start, color=_COLORS[kind], height=0.7)
        for t0, t1, cpu, disk in segs:
            if cpu > 0.05:
                ax.barh(y, t1 - t0, left=t0, color="tab:orange", alpha=min(1.0, cpu),
                        height=0.7, linewidth=0)
            if disk > 0.05:
                ax.barh(y, t1 - t0, left=t0, color="tab:red", alpha=min(1.0, disk),
                        height=0.35, linewidth=0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    stop = tl.stop - tl.launch
    if tl.ready is not None:
        ax.axvline(stop, color="black", linestyle="--", linewidth=1)
    status = f"ready {tl.result.seconds:.2f} s" if tl.ready is not None else tl.result.outcome
    ax.set_title(f"{tl.label}: {status}", fontsize=9, loc="left")
    ax.grid(axis="x", alpha=0.3)


def plot_waterfall(timelines: Sequence[Timeline], path: str) -> bool:
    from headstart.bench.plot import pyplot_or_none

    plt = pyplot_or_none()
    if plt is None or not timelines:
        return False
    heights = [max(2.0, 0.22 * len(_rows(tl)) + 0.8) for tl in timelines]
    fig, axes = plt.subplots(len(timelines), 1, figsize=(11, sum(heights)), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, tl in zip(axes[:, 0], timelines, strict=True):
        _panel(ax, tl)
    axes[-1, 0].set_xlabel("seconds since launch (orange: CPU, red: waiting for the disk; "
                           "blue: phases from the log, purple: durations the server reported, "
                           "green: headstart)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
