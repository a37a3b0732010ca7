"""One watched start: launch, follow the tree and its logs, ready, tear down, account.

The launch, readiness and teardown are :func:`headstart.bench.runner.run_once` (own session
and process group, SIGTERM then SIGKILL, port checks); this module attaches a
:class:`~headstart.watch.sampler.TreeSampler` and a log tail right after the launch, and
afterwards kills whatever of the tree is still alive (a daemon that left the session),
reaps it, and measures which files the start made resident (by class).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from headstart.bench.probes import Probe
from headstart.bench.runner import RunResult, run_once
from headstart.watch.phases import LogTail, Phase, import_spans, phases_from_lines
from headstart.watch.sampler import TrackedProcess, TreeSampler, become_subreaper

__all__ = ["Timeline", "watch_start"]


@dataclass
class Timeline:
    """Everything one start did, on the monotonic clock (``launch`` is its origin)."""

    label: str
    argv: list[str]
    run_dir: str
    result: RunResult
    launch: float = 0.0
    ready: float | None = None
    end: float = 0.0
    root: int | None = None
    procs: dict[int, TrackedProcess] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    imports: list[Phase] = field(default_factory=list)
    headstart_events: list[dict] = field(default_factory=list)  # ts: µs since launch
    class_bytes: dict[str, int] = field(default_factory=dict)
    source: str = ""
    interval: float = 0.02
    ticks: int = 0
    sampler_cpu_s: float = 0.0
    left_behind: list[int] = field(default_factory=list)
    interrupted: bool = False

    @property
    def stop(self) -> float:
        """Where accounting ends: ready, or the end of the run."""
        return self.ready if self.ready is not None else self.end


def _residency(paths: list[str]) -> int:
    if not paths:
        return 0
    from headstart.pagecache.residency import residency

    try:
        return residency(paths).resident
    except (OSError, ValueError):
        return 0


def _kill_left(sampler: TreeSampler) -> list[int]:
    """SIGKILL what of the tree outlived the teardown (it left the session), then reap."""
    left = sampler.live()
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while left and time.monotonic() < deadline:
        sampler.sample()  # samples, marks exits, reaps our inherited zombies
        if not sampler.live():
            break
        time.sleep(0.02)
    return left


def watch_start(label: str, argv: list[str], probe: Probe, run_dir: str, *,
                log_phases: tuple = (), classes: dict[str, list[str]] | None = None,
                interval: float = 0.02, timeout: float = 300.0, env: dict | None = None,
                grace: float = 10.0, port_wait: float = 30.0, preexec_fn=None,
                headstart_trace: str | None = None, sample: bool = True) -> Timeline:
    """Run ``argv`` once under watch; never leaves a process of its tree behind."""
    become_subreaper()
    classes = classes or {}
    before = {name: _residency(paths) for name, paths in classes.items()}
    out, err = os.path.join(run_dir, "stdout.log"), os.path.join(run_dir, "stderr.log")
    tail = LogTail({"stdout": out, "stderr": err})
    state: dict = {}

    def attach(proc: subprocess.Popen, t0: float) -> None:
        state["t0"] = t0
        if sample:
            state["sampler"] = TreeSampler(proc.pid, interval, adopt=True,
                                           on_tick=tail.poll).start()

    timeline = Timeline(label, list(argv), run_dir, RunResult(argv=list(argv), run_dir=run_dir))
    try:
        timeline.result = run_once(argv, probe, run_dir, timeout=timeout, env=env,
                                   grace=grace, port_wait=port_wait, preexec_fn=preexec_fn,
                                   on_start=attach)
    except KeyboardInterrupt as exc:  # torn down already; keep what was measured
        timeline.interrupted = True
        timeline.result = getattr(exc, "run_result", timeline.result)
    finally:
        sampler = state.get("sampler")
        if sampler is not None:
            sampler.stop()
            timeline.left_behind = _kill_left(sampler)
    timeline.end = time.monotonic()
    _fill(timeline, state, sampler, tail, log_phases)
    timeline.class_bytes = {name: max(0, _residency(paths) - before[name])
                            for name, paths in classes.items()}
    if headstart_trace:
        timeline.headstart_events = _headstart_events(headstart_trace, timeline.launch)
    return timeline


def _fill(tl: Timeline, state: dict, sampler: TreeSampler | None, tail: LogTail,
          log_phases: tuple) -> None:
    r = tl.result
    tl.launch = state.get("t0", tl.end)
    if r.ok and r.seconds is not None:
        tl.ready = tl.launch + r.seconds
    if sampler is not None:
        tl.procs, tl.root = sampler.procs, sampler.root
        for rec in tl.procs.values():  # kernel start times are in 10 ms ticks, rounded down
            rec.start = max(rec.start, tl.launch)
        tl.source, tl.interval = sampler.source, sampler.interval
        tl.ticks, tl.sampler_cpu_s = sampler.ticks, sampler.cost_s
    tail.flush(tl.end)
    tl.phases = phases_from_lines(tail.lines, log_phases, tl.launch, tl.ready, tl.end)
    tl.imports = import_spans(tail.lines)


def _headstart_events(path: str, launch: float) -> list[dict]:
    """headstart's own trace (``headstart run --trace``, its helper merged in) on our clock."""
    from headstart.trace import load_events

    events = load_events(path, launch)
    events += load_events(path + ".helper.json", launch)  # a helper that wrote after us
    return events
