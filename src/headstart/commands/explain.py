"""``headstart explain [OPTIONS] READINESS -- CMD ARGS...``: where a start's time goes.

Runs CMD cold (its model, its Python environment and ``--evict`` paths dropped from the
page cache first), then warm, and follows its whole process tree from outside: one row per
process (start, exec, exit, parent; CPU, disk wait, sleep; bytes read from disk), the
phases the server's own log lines name (vLLM, SGLang, ``transformers serve``), the import
time of the heavy packages (``-X importtime``), bytes read per class of file, and, with
``--with-headstart``, the same start under ``headstart run`` side by side, with what
headstart itself did (preload, replay, forkserver).

Writes into ``--out``: report.txt (the tables), explain.json, per start a folder with its
logs and trace.json (Chrome/Perfetto: every process on one clock, headstart's helper
included), and waterfall.png (with matplotlib). Exit status 0 when every start got ready,
1 when one did not (its measured part is still written), 130 when interrupted. Nothing
of the target's tree is left running: a process that left its session is killed too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time

from headstart.commands._readiness import (
    READY_USAGE,
    add_cold_options,
    add_command_args,
    add_ready_options,
    probe_from,
    target_command,
)

__all__ = ["add_parser", "run"]

LIBS, WEIGHTS = "interpreter and libraries", "weights"


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str
               ) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage=f"headstart explain [OPTIONS] {READY_USAGE} -- CMD [ARGS...]")
    add_ready_options(p, "readiness (exactly one)", exit_help="explain the whole command")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cold-only", action="store_true", help="only the cold start")
    which.add_argument("--warm-only", action="store_true",
                       help="only a warm start (after one untimed start that fills the cache)")
    p.add_argument("--with-headstart", action="store_true",
                   help="also run each start under `headstart run`, side by side")
    p.add_argument("--run-args", default="", metavar="ARGS",
                   help="options for `headstart run` with --with-headstart")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="a start not ready by then is reported as such (default 300)")
    add_cold_options(p, model_help="the model whose files are 'weights' (default: read from CMD)",
                     when="the cold start")
    p.add_argument("--interval", type=float, default=0.02, metavar="SECONDS",
                   help="sampling interval (default 0.02)")
    p.add_argument("--delayacct", action="store_true",
                   help="turn the kernel's task_delayacct on for the starts (root), then "
                        "back to what it was: exact disk wait instead of sampled")
    p.add_argument("--no-classes", action="store_true",
                   help="skip bytes per class of file (a residency scan of the model and the "
                        "Python environment before and after each start: seconds for a "
                        "large environment)")
    p.add_argument("--no-import-times", action="store_true",
                   help="do not set PYTHONPROFILEIMPORTTIME=1 for the target")
    p.add_argument("--out", metavar="DIR", help="output folder (default ./explain-out/TIMESTAMP)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="SIGTERM to SIGKILL delay when stopping a start (default 10)")
    p.add_argument("--port-wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the ready URL's port to be free (default 30)")
    add_command_args(p, "the command, after --")
    p.set_defaults(func=run)
    return p


def _say(msg: str) -> None:
    print(f"headstart explain: {msg}", file=sys.stderr, flush=True)


def _check_command(cmd: list[str]) -> None:
    from headstart.errors import HeadstartError

    exe = cmd[0]
    if os.sep in exe:
        if not os.path.exists(exe):
            raise HeadstartError(f"{exe}: no such file")
        if not os.access(exe, os.X_OK):
            raise HeadstartError(f"{exe}: not executable")
    elif shutil.which(exe) is None:
        raise HeadstartError(f"{exe}: command not found")


def _classes(args: argparse.Namespace, cmd: list[str]) -> tuple[dict[str, list[str]], tuple,
                                                                 str | None]:
    """({class: paths}, the adapter's log phases, the target's interpreter)."""
    from headstart.adapters.registry import detect
    from headstart.bench.environment import find_interpreter, python_environment

    facts = detect(cmd, os.environ)
    classes: dict[str, list[str]] = {}
    interp = find_interpreter(cmd)
    if interp:
        env = python_environment(interp)
        if env is not None:
            classes[LIBS] = env.evict_paths()
    ref = args.model or facts.model
    if ref:
        from headstart.models.resolve import resolve_model

        try:
            snap = resolve_model(ref, revision=args.revision or facts.revision,
                                 cache_dir=args.cache_dir or facts.cache_dir, hub=args.hub)
            classes[WEIGHTS] = [f.real_path for f in snap.files]
        except Exception as exc:  # the start is still explained, without a weights class
            _say(f"model {ref}: not resolved ({exc}); no 'weights' class")
    return classes, facts.log_phases, interp


def _variants(args, cmd: list[str], interp: str | None) -> list[tuple[str, list[str], bool]]:
    import shlex

    out = [("", list(cmd), False)]
    if args.with_headstart:
        python = interp if interp and _has_headstart(interp) else sys.executable
        out.append(("+headstart", [python, "-m", "headstart", "run", *shlex.split(args.run_args),
                                   "--trace", "@TRACE", "--", *cmd], True))
    return out


def _has_headstart(interp: str) -> bool:
    import subprocess

    try:
        return subprocess.run([interp, "-c", "import headstart"], capture_output=True,
                              timeout=30, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def _delayacct(on: bool):
    """Turn task_delayacct on for the block, then restore the previous value."""
    path = "/proc/sys/kernel/task_delayacct"
    if not on:
        yield
        return
    from headstart.errors import HeadstartError

    try:
        with open(path) as fh:
            old = fh.read().strip()
        with open(path, "w") as fh:
            fh.write("1")
    except OSError as exc:
        raise HeadstartError(f"--delayacct: cannot set {path}: {exc.strerror}") from None
    try:
        yield
    finally:
        with open(path, "w") as fh:
            fh.write(old)


def run(args: argparse.Namespace) -> int:
    from headstart.errors import HeadstartError

    cmd = target_command(args, "explain")
    _check_command(cmd)
    if args.interval <= 0 or args.interval > 1:
        raise HeadstartError("--interval must be in (0, 1] seconds")
    if args.disk_bps:
        from headstart.sizes import parse_size

        try:
            parse_size(args.disk_bps)
        except ValueError as exc:
            raise HeadstartError(f"--disk-bps {args.disk_bps!r}: {exc}") from None
    probe = probe_from(args)
    modes = ["cold"] if args.cold_only else ["warm"] if args.warm_only else ["cold", "warm"]
    out = os.path.abspath(args.out or os.path.join("explain-out", time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(out, exist_ok=True)
    classes, log_phases, interp = _classes(args, cmd)
    evict = [p for name, paths in classes.items() for p in paths
             if not (args.no_evict_env and name == LIBS)]
    evict += [os.path.abspath(p) for p in args.evict]
    if args.no_classes:
        classes = {}
    env = {**os.environ, **args.target_env, "PYTHONUNBUFFERED": "1"}
    if not args.no_import_times:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    _say(f"{' and '.join(modes)} start(s) of {cmd[0]}; output in {out}")
    from headstart.explain.run import ExplainPlan, explain_all

    plan = ExplainPlan(cmd=cmd, probe=probe, out=out, modes=modes,
                       variants=_variants(args, cmd, interp), classes=classes, evict=evict,
                       log_phases=log_phases, env=env, interval=args.interval,
                       timeout=args.timeout, grace=args.grace, port_wait=args.port_wait,
                       disk_bps=args.disk_bps, plot=not args.no_plot, say=_say)
    with _delayacct(args.delayacct):
        return explain_all(plan)
