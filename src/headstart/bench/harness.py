"""The cold/warm A/B loop: variants x modes x runs, interleaved and rotated.

Order: for each mode, run ``i`` of every variant
back to back, and the variant that goes first rotates with ``i``, so drift (a noisy
neighbour, a warming disk, thermal limits) hits every variant alike.

``cold``: before each run the target's files (model, Python environment, ``--evict``
paths) are dropped from the page cache and the drop is checked by residency; the residual
percent is kept per run. ``warm``: one untimed warm-up run per variant, then timed runs with
everything resident.

A Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the command) stops the loop after the
current run has been torn down; the result says it was interrupted and keeps every sample.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from headstart.bench.probes import Probe
from headstart.bench.runner import INTERRUPTED, RunResult, run_once
from headstart.settings import COVERAGE_FILE_ENV

__all__ = ["MODES", "BenchConfig", "BenchResult", "Variant", "evict_checked", "run_bench",
           "schedule"]

log = logging.getLogger(__name__)

MODES = ("cold", "warm")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
RESIDUAL_WARN_PERCENT = 1.0
ESCAPE_GRACE = 3.0  # seconds a process that left the run's session has to exit by itself


@dataclass
class Variant:
    """One way of starting the target. ``trace_at``: where ``--trace FILE`` goes in argv."""

    name: str
    argv: list[str]
    trace_at: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"variant name {self.name!r}: use letters, digits, . _ + -")
        if not self.argv:
            raise ValueError(f"variant {self.name!r} has an empty command")

    def argv_for(self, run_dir: str, trace: bool) -> tuple[list[str], str | None]:
        if not trace or self.trace_at is None:
            return list(self.argv), None
        path = os.path.join(run_dir, "trace.json")
        return [*self.argv[: self.trace_at], "--trace", path, *self.argv[self.trace_at :]], path


@dataclass
class BenchConfig:
    variants: list[Variant]
    probe: Probe
    out_dir: str
    modes: Sequence[str] = MODES
    runs: int = 3
    timeout: float = 300.0
    evict_paths: list[str] = field(default_factory=list)
    disk_bps: int | None = None
    throttle_paths: list[str] = field(default_factory=list)  # files whose disks to throttle
    trace: bool = False
    warmup: bool = True
    grace: float = 10.0
    port_wait: float = 30.0
    poll_interval: float = 0.05
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] | None = None
    cwd: str | None = None
    log_phases: tuple = ()  # the adapter's (name, regex) milestones: phases per run


@dataclass
class BenchResult:
    config: BenchConfig
    runs: list[RunResult] = field(default_factory=list)
    warmups: list[RunResult] = field(default_factory=list)
    interrupted: bool = False
    started: float = 0.0
    finished: float = 0.0
    planned: int = 0
    warnings: list[str] = field(default_factory=list)
    throttle: dict | None = None


def schedule(
    variants: Sequence[str], modes: Sequence[str], runs: int
) -> list[tuple[str, int, str]]:
    """(mode, run index, variant) in the order they run: interleaved and rotated."""
    order = []
    n = len(variants)
    for mode in modes:
        for i in range(runs):
            k = i % n if n else 0
            for name in [*variants[k:], *variants[:k]]:
                order.append((mode, i, name))
    return order


def evict_checked(paths: Sequence[str]) -> dict:
    """Drop ``paths`` from the page cache; say how much stayed resident, and why.

    ``headstart.pagecache.evict`` measures each file before and after DONTNEED (cachestat,
    else mincore), so the residual is checked by residency, not assumed.
    """
    from headstart.pagecache.evict import evict

    t0 = time.monotonic()
    ev = evict(list(paths))
    seconds = time.monotonic() - t0
    ok = [f for f in ev.files if f.error is None]
    total = sum(f.size for f in ok)
    after = sum(f.after for f in ok)
    reasons: dict[str, int] = {}
    stayed = sorted((f for f in ok if f.after > 0), key=lambda f: -f.after)
    for f in stayed[:20]:
        for reason in f.reasons or ("no reason found",):
            reasons[reason] = reasons.get(reason, 0) + f.after
    info = {
        "paths": len(paths),
        "files": len(ok),
        "seconds": round(seconds, 3),
        "total_bytes": total,
        "resident_before_bytes": sum(f.before for f in ok),
        "resident_bytes": after,
        "residual_percent": round(100.0 * after / total, 3) if total else 0.0,
        # the largest files that stayed, and why (mapped by a running process, dirty...)
        "stayed": [{"path": f.path, "resident_bytes": f.after, "reasons": list(f.reasons)}
                   for f in stayed[:5]],
    }
    if ev.errors:
        info["errors"] = len(ev.errors)
        info["first_error"] = f"{ev.errors[0][0]}: {ev.errors[0][1]}"
    return info


def run_bench(config: BenchConfig, say: Callable[[str], None] = lambda _m: None) -> BenchResult:
    """Run every (mode, run, variant) of ``config``; never raises KeyboardInterrupt."""
    result = BenchResult(config=config, started=time.time())
    names = [v.name for v in config.variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    by_name = {v.name: v for v in config.variants}
    plan = schedule(names, config.modes, config.runs)
    result.planned = len(plan)
    os.makedirs(config.out_dir, exist_ok=True)

    preexec = None
    throttles: list = []
    current: list[tuple[Variant, str, int, bool]] = []
    with ExitStack() as stack:
        try:
            if config.disk_bps:
                from headstart.bench.throttle import throttle_for_paths

                throttle = stack.enter_context(
                    throttle_for_paths(config.disk_bps, config.throttle_paths or [config.out_dir])
                )
                preexec = throttle.preexec_fn
                throttles.append(throttle)
                result.throttle = throttle.describe()
            warmed: set[str] = set()
            for n, (mode, index, name) in enumerate(plan, 1):
                variant = by_name[name]
                if mode == "warm" and config.warmup and not warmed:
                    # All warm-ups before the first timed warm run, so that no timed run
                    # follows another variant's first (cache-filling) start.
                    for w in config.variants:
                        current[:] = [(w, mode, 0, True)]
                        r = _one_run(config, result, w, mode, 0, True, preexec, throttles)
                        result.warmups.append(r)
                        say(f"[warm-up] {w.name}: {_line(r)}")
                        warmed.add(w.name)
                current[:] = [(variant, mode, index, False)]
                r = _one_run(config, result, variant, mode, index, False, preexec,
                             throttles)
                result.runs.append(r)
                say(f"[{n}/{len(plan)}] {mode} {name} run {index + 1}: {_line(r)}")
            current.clear()
        except KeyboardInterrupt as exc:
            result.interrupted = True
            if current:
                variant, mode, index, warmup = current[0]
                folder = "warmup" if warmup else f"run-{index + 1}"
                r = getattr(exc, "run_result", None) or RunResult(
                    argv=list(variant.argv), run_dir=os.path.join(
                        config.out_dir, mode, variant.name, folder))
                r.outcome, r.ok, r.seconds = INTERRUPTED, False, None
                r.reason = "interrupted (Ctrl-C or SIGTERM) during this run"
                r.variant, r.mode, r.index, r.warmup = variant.name, mode, index, warmup
                (result.warmups if warmup else result.runs).append(r)
            say("interrupted: the current run was torn down; writing a partial report")
    result.finished = time.time()
    return result


def _one_run(config: BenchConfig, result: BenchResult, variant: Variant, mode: str,
             index: int, warmup: bool, preexec: Callable[[], None] | None,
             throttles: list) -> RunResult:
    """One start of ``variant``: evict (cold), run, kill what escaped the session, and
    collect its coverage and trace; warnings go to ``result``."""
    folder = "warmup" if warmup else f"run-{index + 1}"
    label = f"{mode}/{variant.name}/{folder}"
    run_dir = os.path.join(config.out_dir, mode, variant.name, folder)
    os.makedirs(run_dir, exist_ok=True)
    argv, trace_path = variant.argv_for(run_dir, config.trace)
    eviction = _evict_cold(config, result, label) if mode == "cold" else None
    r = _run(config, argv, run_dir, preexec)
    r.variant, r.mode, r.index, r.warmup = variant.name, mode, index, warmup
    r.eviction = eviction
    if throttles:
        # Anything still in the throttle cgroup escaped the session (setsid + fork):
        # kill it so it cannot hold the port or the disk during the next run. A
        # replay helper notices its target is gone by itself and writes its report
        # first: it is given ESCAPE_GRACE seconds for that.
        escaped = _wait_gone(throttles[0].procs, ESCAPE_GRACE)
        for pid in escaped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if escaped:
            r.killed += escaped
            result.warnings.append(f"{label}: killed {len(escaped)} "
                                   "process(es) that had left the run's session")
    r.coverage = _coverage_of(run_dir, wait=0.0 if throttles or variant.name == "baseline"
                              else 1.0)
    if trace_path and os.path.exists(trace_path):
        r.trace = trace_path
    if r.port_free_after is False:
        result.warnings.append(f"{label}: port still in use after "
                               f"{config.port_wait:g} s")
    return r


def _evict_cold(config: BenchConfig, result: BenchResult, label: str) -> dict | None:
    """Evict the cold run's paths and check it; a residual over RESIDUAL_WARN_PERCENT is a
    warning in ``result``. None when there is nothing to evict."""
    if not config.evict_paths:
        return None
    try:
        eviction = evict_checked(config.evict_paths)
    except (ImportError, OSError, ValueError) as exc:
        # the run still happens; the report says its cold start was not checked
        eviction = {"error": f"{type(exc).__name__}: {exc}", "residual_percent": 100.0}
    if eviction["residual_percent"] > RESIDUAL_WARN_PERCENT:
        why = ""
        if eviction.get("stayed"):
            top = eviction["stayed"][0]
            why = f"; largest: {top['path']} ({'; '.join(top['reasons'])[:120]})"
        msg = (f"{label}: {eviction['residual_percent']:.1f} % "
               f"of the evicted bytes stayed resident{why}")
        result.warnings.append(msg)
        log.warning("%s", msg)
    return eviction


def _coverage_of(run_dir: str, wait: float) -> dict | None:
    """The replay coverage a run's helper wrote (waiting up to ``wait`` s for it)."""
    import json

    path = os.path.join(run_dir, "coverage.json")
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


def _wait_gone(procs: Callable[[], list[int]], grace: float) -> list[int]:
    """The pids ``procs()`` still lists after up to ``grace`` seconds."""
    deadline = time.monotonic() + grace
    left = procs()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = procs()
    return left


def _run(config: BenchConfig, argv: list[str], run_dir: str, preexec) -> RunResult:
    """run_once, and the run's phases when the adapter names milestones in its logs; a
    replayed start's coverage report goes to ``coverage.json`` in the run's folder."""
    watch: dict = {}
    env = dict(config.env if config.env is not None else os.environ)
    env[COVERAGE_FILE_ENV] = os.path.join(run_dir, "coverage.json")
    r = run_once(argv, config.probe, run_dir, timeout=config.timeout, env=env,
                 cwd=config.cwd, poll_interval=config.poll_interval, grace=config.grace,
                 port_wait=config.port_wait, preexec_fn=preexec, stop_signal=config.stop_signal,
                 on_start=_phase_watch(config, run_dir, watch) if config.log_phases else None)
    if watch:
        ready = watch["t0"] + r.seconds if r.ok and r.seconds is not None else None
        r.phases = [p.to_dict(watch["t0"]) for p in watch["watcher"].phases(watch["t0"], ready)]
    return r


def _phase_watch(config: BenchConfig, run_dir: str, into: dict) -> Callable:
    """An ``on_start`` hook that follows the run's logs for the adapter's phases."""
    from headstart.watch.phases import PhaseWatcher

    def start(_proc, t0: float) -> None:
        into["t0"] = t0
        into["watcher"] = PhaseWatcher(os.path.join(run_dir, "stdout.log"),
                                       os.path.join(run_dir, "stderr.log"),
                                       config.log_phases).start()
    return start


def _line(r: RunResult) -> str:
    if r.ok and r.seconds is not None:
        return f"ready in {r.seconds:.2f} s"
    return f"FAILED ({r.outcome}): {r.reason}"
