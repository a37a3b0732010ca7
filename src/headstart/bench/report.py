"""Bench reports: a Markdown table like the seed's, and a JSON file with every sample.

Table, one row per (mode, variant): successful runs, median, spread (max - min),
min / median / max, and the median's delta (seconds and percent) against ``baseline`` in
the same mode. A cell whose runs all failed says so; failed runs are listed under the table
with their reason and the folder holding their output.
"""

from __future__ import annotations

import json
import os
import statistics
import time

from headstart.bench.harness import BenchResult
from headstart.bench.runner import RunResult

__all__ = ["compare_answers", "markdown", "phase_medians", "summarize", "to_json",
           "write_reports"]


def summarize(result: BenchResult, baseline: str = "baseline") -> list[dict]:
    """One dict per (mode, variant) in run order, with the statistics the table shows."""
    cfg = result.config
    rows = []
    medians: dict[tuple[str, str], float] = {}
    for mode in cfg.modes:
        for v in cfg.variants:
            runs = [r for r in result.runs if r.mode == mode and r.variant == v.name]
            times = sorted(r.seconds for r in runs if r.ok and r.seconds is not None)
            row = {"mode": mode, "variant": v.name, "planned": cfg.runs, "done": len(runs),
                   "ok": len(times), "failed": len(runs) - len(times), "samples": times}
            if times:
                med = statistics.median(times)
                medians[(mode, v.name)] = med
                row.update(median=med, min=times[0], max=times[-1], spread=times[-1] - times[0])
            rows.append(row)
    for row in rows:
        base = medians.get((row["mode"], baseline))
        if base is not None and "median" in row and row["variant"] != baseline:
            row["delta"] = row["median"] - base
            row["delta_percent"] = 100.0 * row["delta"] / base if base else None
    return rows


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def phase_medians(result: BenchResult) -> tuple[list[str], dict[tuple[str, str], dict]]:
    """(phase names in order of first appearance, {(mode, variant): {phase: median s}})
    over the successful runs, from the server's own log lines."""
    names: list[str] = []
    cells: dict[tuple[str, str], dict[str, float]] = {}
    samples: dict[tuple[str, str, str], list[float]] = {}
    for r in result.runs:
        if not r.ok:
            continue
        for p in r.phases:
            if p["name"] not in names:
                names.append(p["name"])
            samples.setdefault((r.mode, r.variant, p["name"]), []).append(p["seconds"])
    for (mode, variant, name), xs in samples.items():
        cells.setdefault((mode, variant), {})[name] = statistics.median(xs)
    return names, cells


def _phase_table(result: BenchResult) -> list[str]:
    names, cells = phase_medians(result)
    if not names:
        return []
    cfg = result.config
    keys = [(m, v.name) for m in cfg.modes for v in cfg.variants if (m, v.name) in cells]
    medians = {(row["mode"], row["variant"]): row.get("median") for row in summarize(result)}
    lines = ["", "Phases (median seconds over the successful runs; from the server's own log "
             "lines: a phase runs from its line to the next one, a reported one is the "
             "duration the line states):", "",
             "| phase | " + " | ".join(f"{m} {v}" for m, v in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            _s(cells[k].get(name)) for k in keys) + " |")
    lines.append("| **launch -> ready** | " + " | ".join(_s(medians.get(k)) for k in keys)
                 + " |")
    return lines


def _coverage_table(result: BenchResult) -> list[str]:
    """Medians of what each replayed start measured (headstart.profiles.coverage)."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in result.runs:
        if r.ok and r.coverage:
            cells.setdefault((r.mode, r.variant), []).append(r.coverage)
    if not cells:
        return []
    lines = ["", "Replay coverage (medians over the runs that replayed a profile; the target's "
             "own reads are what it still fetched from storage itself):", "",
             "| mode | variant | runs | coverage | replayed | target read itself | late "
             "| late in weights | reclaimed | stood back |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (mode, variant), covs in cells.items():
        def med(key: str, covs: list[dict] = covs) -> float:
            return statistics.median(float(c.get(key) or 0) for c in covs)

        lines.append(f"| {mode} | {variant} | {len(covs)} | {100 * med('fraction'):.0f} % "
                     f"| {med('replayed_bytes') / 1e6:.0f} MB "
                     f"| {med('target_read_bytes') / 1e6:.0f} MB "
                     f"| {med('late_bytes') / 1e6:.0f} MB "
                     f"| {med('late_weight_bytes') / 1e6:.0f} MB "
                     f"| {med('reclaimed_bytes') / 1e6:.0f} MB "
                     f"| {med('held_seconds'):.2f} s |")
    return lines


def _signed(x: float, unit: str) -> str:
    sign = "\u2212" if x < 0 else "+"  # a real minus sign, as the seed's table has
    return f"{sign}{abs(x):.2f} s" if unit == "s" else f"{sign}{abs(x):.1f} %"


def _rel(path: str | None, out_dir: str) -> str:
    if not path:
        return ""
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:
        return path


def markdown(result: BenchResult, baseline: str = "baseline") -> str:
    cfg = result.config
    lines = []
    what = {"url": "GET {url} answers 2xx", "request": "POST {url} answers 2xx",
            "log": "output matches /{regex}/", "exit": "the command exits with status 0"}
    desc = cfg.probe.describe()
    ready = what.get(desc["kind"], desc["kind"]).format(**desc)
    lines.append("# headstart bench")
    lines.append("")
    if result.interrupted:
        done = len(result.runs)
        lines.append(f"**Interrupted** (Ctrl-C or SIGTERM) after {done} of {result.planned} "
                     "runs: partial results.")
        lines.append("")
    throttle = (f", disk reads throttled to {cfg.disk_bps / 1e6:.0f} MB/s"
                if cfg.disk_bps else "")
    lines.append(f"Time from launch until {ready}; {cfg.runs} run(s) per variant and mode, "
                 f"interleaved and rotated{throttle}.")
    lines.append("")
    lines.append("| mode | variant | runs ok | median | spread | min / median / max "
                 f"| Δ vs {baseline} | Δ % |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for row in summarize(result, baseline):
        ok = f"{row['ok']}/{row['planned']}"
        if "median" in row:
            mmm = f"{row['min']:.2f} / {row['median']:.2f} / {row['max']:.2f} s"
            med, spread = _s(row["median"]), _s(row["spread"])
        else:
            mmm = med = spread = "failed" if row["done"] else "not run"
        if "delta" in row:
            delta = _signed(row["delta"], "s")
            pct = _signed(row["delta_percent"], "%") if row["delta_percent"] is not None else "—"
        else:
            delta = pct = "—"
        lines.append(f"| {row['mode']} | {row['variant']} | {ok} | {med} | {spread} | {mmm} "
                     f"| {delta} | {pct} |")
    lines += _phase_table(result)
    lines += _coverage_table(result)
    failed = [r for r in [*result.warmups, *result.runs] if not r.ok]
    if failed:
        lines.append("")
        lines.append("Failed runs:")
        lines.append("")
        for r in failed:
            which = "warm-up" if r.warmup else f"run {r.index + 1}"
            lines.append(f"- {r.mode} / {r.variant} / {which}: {r.outcome}: {r.reason} "
                         f"(output in `{_rel(r.run_dir, cfg.out_dir)}`)")
    answers = compare_answers(result)
    if answers:
        lines.append("")
        lines.append(answers)
    residual = [r.eviction["residual_percent"] for r in result.runs
                if r.eviction and "residual_percent" in r.eviction]
    if residual:
        lines.append("")
        lines.append(f"Cold runs: evicted {len(cfg.evict_paths)} path(s) before each run; "
                     f"resident afterwards: max {max(residual):.2f} % of their bytes.")
    if result.warnings:
        lines.append("")
        lines.append("Warnings:")
        lines.append("")
        lines += [f"- {w}" for w in result.warnings]
    lines.append("")
    return "\n".join(lines)


def _answer_text(path: str) -> str | None:
    """The generated text of a kept answer (OpenAI chat or completion shape), else the body.

    Ids and timestamps differ between runs; the text is what must not."""
    try:
        with open(path, "rb") as f:
            body = f.read()
    except OSError:
        return None
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice.get("message", {}).get("content") if "message" in choice else None
        if text is None:
            text = str(choice.get("text", body.decode("utf-8", "replace")))
        return text
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return body.decode("utf-8", "replace")


def compare_answers(result: BenchResult) -> str | None:
    """A sentence saying whether every kept answer (``--ready-request``) had the same text."""
    if result.config.probe.kind != "request":
        return None
    texts: dict[str, list[str]] = {}
    for r in result.runs:
        if r.ok and r.response:
            text = _answer_text(r.response)
            if text is not None:
                texts.setdefault(text, []).append(f"{r.mode}/{r.variant}/run-{r.index + 1}")
    if not texts:
        return None
    if len(texts) == 1:
        n = len(next(iter(texts.values())))
        return f"Answers: all {n} kept answers have the same text."
    groups = "; ".join(f"{', '.join(runs)}: {text[:60]!r}" for text, runs in texts.items())
    return f"Answers: **the kept answers differ** ({groups})."


def to_json(result: BenchResult, machine: dict | None = None, extra: dict | None = None,
            baseline: str = "baseline") -> dict:
    cfg = result.config

    def run_dict(r: RunResult) -> dict:
        d = r.to_dict()
        for key in ("run_dir", "stdout", "stderr", "response", "trace"):
            if d.get(key):
                d[key] = _rel(d[key], cfg.out_dir)
        return d

    from headstart._version import __version__

    return {
        "headstart_version": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.finished)),
        "interrupted": result.interrupted,
        "planned_runs": result.planned,
        "modes": list(cfg.modes),
        "runs_per_variant": cfg.runs,
        "timeout_s": cfg.timeout,
        "readiness": cfg.probe.describe(),
        "disk_bps": cfg.disk_bps,
        "throttle": result.throttle,
        "variants": {v.name: v.argv for v in cfg.variants},
        "evict_paths": cfg.evict_paths,
        "summary": summarize(result, baseline),
        "samples": [run_dict(r) for r in result.runs],
        "warmups": [run_dict(r) for r in result.warmups],
        "warnings": result.warnings,
        "machine": machine or {},
        **(extra or {}),
    }


def write_reports(result: BenchResult, machine: dict | None = None, extra: dict | None = None,
                  baseline: str = "baseline", plots: bool = True) -> dict[str, str]:
    """Write report.md, results.json and (matplotlib permitting) runs.png / timeline.png.

    Returns name -> path of what was written. JSON is written atomically (temp + replace).
    """
    out = result.config.out_dir
    os.makedirs(out, exist_ok=True)
    written = {}
    md = markdown(result, baseline)
    path = os.path.join(out, "report.md")
    _atomic_write(path, md)
    written["report"] = path
    path = os.path.join(out, "results.json")
    _atomic_write(path, json.dumps(to_json(result, machine, extra, baseline), indent=2,
                                   default=str))
    written["results"] = path
    if plots:
        from headstart.bench.plot import plot_runs, plot_timeline

        path = os.path.join(out, "runs.png")
        if plot_runs(result, path):
            written["runs_png"] = path
        traces = [r for r in result.runs if r.trace]
        path = os.path.join(out, "timeline.png")
        if traces and plot_timeline(traces, path):
            written["timeline_png"] = path
    return written


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
