"""The starts of one ``headstart explain``: cold then warm, each without and (optionally)
with ``headstart run``; tables on stdout, report.txt, explain.json, traces and the PNG."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from headstart.explain.session import Timeline, watch_start

__all__ = ["ExplainPlan", "explain_all"]


@dataclass
class ExplainPlan:
    cmd: list[str]
    probe: object
    out: str
    modes: list[str]
    variants: list[tuple[str, list[str], bool]]  # (suffix, argv, is headstart)
    classes: dict[str, list[str]] = field(default_factory=dict)
    evict: list[str] = field(default_factory=list)
    log_phases: tuple = ()
    env: dict | None = None
    interval: float = 0.02
    timeout: float = 300.0
    grace: float = 10.0
    port_wait: float = 30.0
    disk_bps: str | None = None
    plot: bool = True
    say: Callable[[str], None] = lambda _m: None


def _one(plan: ExplainPlan, mode: str, suffix: str, argv: list[str], headstart: bool,
         preexec, warmup: bool = False) -> Timeline:
    label = f"warm-up{suffix}" if warmup else f"{mode}{suffix}"
    run_dir = os.path.join(plan.out, label)
    os.makedirs(run_dir, exist_ok=True)
    trace = os.path.join(run_dir, "headstart-trace.json") if headstart else None
    argv = [trace if a == "@TRACE" else a for a in argv]
    if mode == "cold" and plan.evict:
        from headstart.bench.harness import evict_checked

        info = evict_checked(plan.evict)
        plan.say(f"{label}: evicted {info['files']} files, {info['residual_percent']:.1f} % "
                 "stayed resident")
    tl = watch_start(label, argv, plan.probe, run_dir, log_phases=plan.log_phases,
                     classes=plan.classes, interval=plan.interval, timeout=plan.timeout,
                     env=plan.env, grace=plan.grace, port_wait=plan.port_wait,
                     preexec_fn=preexec, headstart_trace=trace)
    from headstart.watch.phases import strip_importtime

    strip_importtime(tl.result.stderr or "")
    if not warmup:
        from headstart.explain.chrome import write_trace

        write_trace(tl, os.path.join(run_dir, "trace.json"))
    return tl


def _write(plan: ExplainPlan, timelines: list[Timeline], text: list[str]) -> None:
    from headstart.explain.report import to_dict

    with open(os.path.join(plan.out, "report.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n\n".join(text) + "\n")
    doc = {"cmd": plan.cmd, "modes": plan.modes, "starts": [to_dict(t) for t in timelines]}
    with open(os.path.join(plan.out, "explain.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, default=str)
    if plan.plot and timelines:
        from headstart.explain.plot import plot_waterfall

        png = os.path.join(plan.out, "waterfall.png")
        if plot_waterfall(timelines, png):
            plan.say(f"wrote {png}")


def _loop(plan: ExplainPlan, preexec, timelines: list[Timeline], text: list[str]) -> None:
    from headstart.explain.report import render, render_compare

    if plan.modes == ["warm"]:
        for suffix, argv, hs in plan.variants:
            _one(plan, "warm", suffix, argv, hs, preexec, warmup=True)
    for mode in plan.modes:
        this_mode: list[Timeline] = []
        for suffix, argv, hs in plan.variants:
            tl = _one(plan, mode, suffix, argv, hs, preexec)
            timelines.append(tl)
            this_mode.append(tl)
            text.append(render(tl))
            print(text[-1] + "\n", flush=True)
            if tl.interrupted:
                raise KeyboardInterrupt
        if len(this_mode) == 2:
            text.append(render_compare(*this_mode))
            print(text[-1] + "\n", flush=True)


def explain_all(plan: ExplainPlan) -> int:
    """Every start of the plan; the report is written whatever happens (Ctrl-C too)."""
    timelines: list[Timeline] = []
    text: list[str] = []
    code = 0
    with contextlib.ExitStack() as stack:
        preexec = None
        if plan.disk_bps:
            from headstart.bench.throttle import throttle_for_paths
            from headstart.sizes import parse_size

            throttle = stack.enter_context(throttle_for_paths(
                parse_size(plan.disk_bps), plan.evict or [plan.out]))
            preexec = throttle.preexec_fn
        try:
            _loop(plan, preexec, timelines, text)
        except KeyboardInterrupt:
            plan.say("interrupted: the current start was torn down; writing what was measured")
            code = 130
        finally:
            _write(plan, timelines, text)
    if code == 0 and not all(t.result.ok for t in timelines):
        bad = [t for t in timelines if not t.result.ok]
        for t in bad:
            plan.say(f"{t.label}: {t.result.outcome}: {t.result.reason}")
        code = 1
    plan.say(f"report in {os.path.join(plan.out, 'report.txt')}")
    sys.stdout.flush()
    return code
