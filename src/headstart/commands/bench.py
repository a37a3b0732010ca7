"""``headstart bench [OPTIONS] -- CMD ARGS...``: cold/warm A/B of a server's startup.

Variants: ``baseline`` runs CMD as given; ``headstart`` runs
``python -m headstart run [--run-args ...] -- CMD``; ``--variant NAME=COMMAND`` adds more
(a peer, another setting). Each run is timed from launch until the target is ready
(``--ready-url``, ``--ready-request``, ``--ready-log`` or ``--until-exit``), then its whole
process group is stopped.

``cold`` runs first drop the model's files (``--model``), the files of the target's Python
(its interpreter, stdlib and site-packages) and ``--evict`` paths from the page cache;
``warm`` runs follow one untimed warm-up run per variant. Runs are interleaved and rotated.

Writes report.md, results.json (every sample and the machine), stdout/stderr of every run,
and runs.png (with matplotlib) into ``--out``. Exit status: 0 when every run got ready,
1 when some failed, 130 when interrupted (a partial report is still written).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time

from headstart.commands._readiness import (
    READY_USAGE,
    add_cold_options,
    add_command_args,
    add_ready_options,
    probe_from,
    target_command,
    target_environ,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str
               ) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage=f"headstart bench [OPTIONS] {READY_USAGE} -- CMD [ARGS...]")
    add_ready_options(p, "readiness (exactly one)", request_kept=True, log_unbuffered=True,
                      exit_help="time the whole command; exit status 0 is success")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="a run not ready by then is a failed run (default 300)")
    p.add_argument("--runs", type=int, default=3, help="runs per variant and mode (default 3)")
    p.add_argument("--modes", default="cold,warm", help="cold, warm or cold,warm (default)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=COMMAND",
                   help="another variant, COMMAND split like a shell would (repeatable)")
    p.add_argument("--no-headstart-variant", action="store_true",
                   help="leave out the `headstart run` variant")
    p.add_argument("--run-args", default="", metavar="ARGS",
                   help="options for `headstart run` in the headstart variant, e.g. "
                        "\"--model Qwen/Qwen2.5-0.5B\"")
    add_cold_options(p, model_help="model whose files cold runs evict (local folder or hub id)",
                     when="cold runs")
    p.add_argument("--out", metavar="DIR", help="output folder (default ./bench-out/TIMESTAMP)")
    p.add_argument("--trace", action="store_true",
                   help="the headstart variant writes a Chrome trace per run; adds timeline.png")
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up before warm runs")
    p.add_argument("--port-wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the ready URL's port to be free (default 30)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="stop signal to SIGKILL delay when stopping a run (default 10)")
    p.add_argument("--stop-signal", metavar="SIG",
                   help="signal that stops a run's process group (default TERM, and INT with "
                        "--trace: uvicorn re-raises the stop signal after its shutdown, and "
                        "only INT lets atexit handlers such as the trace writer run)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG charts")
    add_command_args(p, "the server command, after --")
    p.set_defaults(func=run)
    return p


def _say(msg: str) -> None:
    print(f"headstart bench: {msg}", file=sys.stderr, flush=True)


def _variants(args: argparse.Namespace, cmd: list[str]):
    from headstart.bench.harness import Variant
    from headstart.errors import HeadstartError

    variants = [Variant("baseline", list(cmd))]
    if not args.no_headstart_variant:
        head = [sys.executable, "-m", "headstart", "run"]
        variants.append(Variant("headstart", [*head, *shlex.split(args.run_args), "--", *cmd],
                                trace_at=len(head)))
    for spec in args.variant:
        name, sep, command = spec.partition("=")
        if not sep or not name or not command.strip():
            raise HeadstartError(f"--variant {spec!r}: expected NAME=COMMAND")
        try:
            variants.append(Variant(name.strip(), shlex.split(command)))
        except ValueError as exc:
            raise HeadstartError(f"--variant {spec!r}: {exc}") from None
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise HeadstartError(f"variant names must be unique, got {names}")
    return variants


def _evict_paths(args, variants, environments: dict) -> tuple[list[str], list[str]]:
    """(paths cold runs evict, notes). Resolves --model and every variant's Python."""
    from headstart.bench.environment import find_interpreter, python_environment
    from headstart.errors import HeadstartError

    paths: list[str] = []
    notes: list[str] = []
    if args.model:
        from headstart.models.resolve import resolve_model

        snap = resolve_model(args.model, revision=args.revision, cache_dir=args.cache_dir,
                             hub=args.hub)
        paths += [f.real_path for f in snap.files]
        notes.append(f"model {args.model}: {len(snap.files)} files in {snap.root}")
    for p in args.evict:
        if not os.path.exists(p):
            raise HeadstartError(f"--evict {p}: no such file or folder")
        paths.append(os.path.abspath(p))
    if not args.no_evict_env:
        for v in variants:
            interp = find_interpreter(v.argv)
            if interp is None:
                notes.append(f"variant {v.name}: not a Python command, no environment evicted")
                continue
            env = environments.get(interp) or python_environment(interp)
            if env is None:
                notes.append(f"variant {v.name}: could not query {interp}")
                continue
            environments[interp] = env
            paths += env.evict_paths()
    unique: list[str] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    # a folder in the list covers what lies inside it
    unique = [p for p in unique
              if not any(o != p and p.startswith(o.rstrip("/") + "/") for o in unique)]
    return unique, notes


def run(args: argparse.Namespace) -> int:
    from headstart.bench.harness import MODES, BenchConfig, run_bench
    from headstart.bench.machine import machine_info
    from headstart.bench.report import markdown, write_reports
    from headstart.errors import HeadstartError
    from headstart.sizes import parse_size

    cmd = target_command(args, "bench")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise HeadstartError(f"--modes {args.modes!r}: use cold, warm or cold,warm")
    if args.runs < 1:
        raise HeadstartError("--runs must be at least 1")
    disk_bps = parse_size(args.disk_bps) if args.disk_bps else None
    name = (args.stop_signal or ("INT" if args.trace else "TERM")).upper()
    try:
        stop_signal = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise HeadstartError(f"--stop-signal {args.stop_signal!r}: unknown signal") from None
    probe = probe_from(args)
    variants = _variants(args, cmd)
    out = args.out or os.path.join("bench-out", time.strftime("%Y%m%d-%H%M%S"))
    out = os.path.abspath(out)

    environments: dict = {}
    evict_paths: list[str] = []
    notes: list[str] = []
    if "cold" in modes or disk_bps:
        evict_paths, notes = _evict_paths(args, variants, environments)
        for n in notes:
            if args.verbose:
                _say(n)
        if "cold" in modes and not evict_paths:
            _say("warning: nothing to evict for cold runs (no --model, --evict or Python env)")

    # Output goes to files, where Python buffers stdout: a ready line could sit in a buffer.
    # Same setting for every variant, so the comparison stays fair.
    env = target_environ(args, unbuffered=bool(args.ready_log))

    from headstart.adapters.registry import detect

    config = BenchConfig(
        variants=variants, probe=probe, out_dir=out, modes=modes, runs=args.runs,
        timeout=args.timeout, evict_paths=evict_paths, disk_bps=disk_bps,
        throttle_paths=evict_paths, trace=args.trace, warmup=not args.no_warmup,
        grace=args.grace, port_wait=args.port_wait, env=env, stop_signal=stop_signal,
        log_phases=detect(cmd, os.environ).log_phases,
    )
    _say(f"{len(variants)} variant(s) x {len(modes)} mode(s) x {args.runs} run(s); "
         f"output in {out}")

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = run_bench(config, say=_say)
    finally:
        signal.signal(signal.SIGTERM, old_term)

    machine = machine_info(evict_paths or [out])
    extra = {
        "command": cmd,
        "bench_argv": sys.argv,
        "notes": notes,
        "environments": {k: vars(v) for k, v in environments.items()},
    }
    written = write_reports(result, machine, extra, plots=not args.no_plot)
    print(markdown(result))
    _say("wrote " + ", ".join(written.values()))
    if result.interrupted:
        return 130
    return 0 if all(r.ok for r in result.runs) else 1
