"""``headstart run [OPTIONS] -- CMD ARGS...``: run any command with headstart's acceleration.

Python entry points of this interpreter (console scripts such as ``vllm`` or
``transformers``, ``python -m MOD``, ``python -c CODE``, ``python script.py``) run in this
process after the background work has started; anything else is ``exec``-ed after a
detached helper process has started the prefetch. Exit status, signals, ``sys.argv`` and
``__main__`` are the target's own. ``HEADSTART_DISABLE=1`` makes this a pure pass-through.
"""

from __future__ import annotations

import os

from headstart._say import say
from headstart.settings import HUB_CHOICES

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser", "parse_fast", "run"]

# Options of `headstart run`: name -> (attribute, takes a value). Parsed by hand on the hot
# path (argparse pulls in re, shutil, bz2 and lzma: milliseconds); argparse still gives
# --help and every error message.
_VALUE_OPTIONS = {"--model": "model", "--revision": "revision", "--cache-dir": "cache_dir",
                  "--hub": "hub", "--preload": "preload", "--trace": "trace"}
_FLAG_OPTIONS = {"--no-preload": ("no_preload", True), "--no-prefetch": ("no_prefetch", True),
                 "--no-profile": ("no_profile", True), "--forkserver": ("forkserver", True),
                 "--no-forkserver": ("forkserver", False), "--zygote": ("zygote", True),
                 "--no-zygote": ("zygote", False)}


def parse_fast(argv: list[str]):
    """``run``'s options without argparse; None when argparse must answer (help, errors)."""
    import types

    ns = types.SimpleNamespace(model=None, revision=None, cache_dir=None, hub=None,
                               preload=None, no_preload=None, no_prefetch=None,
                               no_profile=None, forkserver=None, trace=None, verbose=0,
                               zygote=None,
                               cmd=[], command="run", func=run)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            ns.cmd = argv[i:]
            return ns
        name, eq, value = arg.partition("=")
        if name in _VALUE_OPTIONS:
            if not eq:
                i += 1
                if i >= len(argv):
                    return None
                value = argv[i]
            if name == "--hub" and value not in HUB_CHOICES:
                return None
            setattr(ns, _VALUE_OPTIONS[name], value)
        elif arg in _FLAG_OPTIONS:
            attr, flag = _FLAG_OPTIONS[arg]
            setattr(ns, attr, flag)
        elif arg == "--verbose" or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"}):
            ns.verbose += 1 if arg == "--verbose" else len(arg) - 1
        else:
            return None  # --help, an unknown or abbreviated option: argparse decides
        i += 1
    return ns


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    import argparse

    p = sub.add_parser(name, help=help_text, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="headstart run [OPTIONS] -- CMD [ARGS...]")
    p.add_argument("--model", help="model to prefetch (default: read from CMD) [HEADSTART_MODEL]")
    p.add_argument("--revision", help="model revision: branch, tag or commit [HEADSTART_REVISION]")
    p.add_argument("--cache-dir", help="Hugging Face cache folder [HEADSTART_CACHE_DIR]")
    p.add_argument("--hub", choices=HUB_CHOICES, help="[HEADSTART_HUB]")
    p.add_argument("--preload", metavar="MOD[,MOD...]",
                   help="packages to import in the background [HEADSTART_PRELOAD]")
    p.add_argument("--no-preload", action="store_true", default=None,
                   help="import nothing in the background [HEADSTART_NO_PRELOAD=1]")
    p.add_argument("--no-prefetch", action="store_true", default=None,
                   help="read nothing ahead [HEADSTART_NO_PREFETCH=1]")
    p.add_argument("--no-profile", action="store_true", default=None,
                   help="ignore a recorded startup profile (`headstart record`) and read the "
                        "model's whole files [HEADSTART_NO_PROFILE=1]")
    p.add_argument("--forkserver", action=argparse.BooleanOptionalAction, default=None,
                   help="prewarm a multiprocessing forkserver [HEADSTART_FORKSERVER]")
    p.add_argument("--zygote", action=argparse.BooleanOptionalAction, default=None,
                   help="children the target spawns fork from a warm zygote (default: on "
                        "where measured faster) [HEADSTART_ZYGOTE]")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace [HEADSTART_TRACE]")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="say what headstart does [HEADSTART_VERBOSE=1]")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command to run, after --")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Prepare, start background work, launch. In-process targets do not return here
    normally: their SystemExit/exception propagates unchanged (cli.main does not catch it)."""
    from headstart.procs.launch import run_in_process

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        say("run: error: no command given (usage: headstart run [OPTIONS] -- CMD [ARGS...])")
        return 2

    from headstart.settings import disabled

    if disabled():
        return _launch_plain(cmd)

    from headstart.trace import tracer

    try:
        plan = _build(args, cmd)
    except Exception as exc:  # acceleration is optional: never block the target on it
        if args.verbose:
            say(f"planning failed, running without acceleration: {exc}")
        tracer.instant("plan failed", error=str(exc))
        return _launch_plain(cmd)

    if plan.verbose:
        say(plan.describe())
        for note in plan.notes:
            say(f"{plan.adapter}: {note}")
    if plan.trace:
        _write_trace_at_exit(plan.trace)
    tracer.instant("plan", cat="run", summary=plan.describe())

    from headstart import startup

    if not plan.launch.in_process:
        if plan.prefetch or (plan.profile_key and startup.profile_exists(plan.profile_key)):
            # the helper replays the profile, or (with a model) records one as it prefetches
            try:
                startup.start_detached_prefetch(plan)
            except Exception as exc:
                if plan.verbose:
                    say(f"detached prefetch failed: {exc}")
        tracer.instant("target exec", cat="run", argv=list(plan.argv))
        if plan.trace:
            _flush_trace(plan.trace)
        return _exec(plan.argv)

    started = startup.start_background(plan)
    if plan.trace:
        _write_trace_when_done(plan.trace, started)
    if plan.verbose and started.errors:
        for err in started.errors:
            say(err)
    tracer.instant("target start", cat="run", argv=list(plan.argv))
    if plan.verbose > 1:
        _report_at_exit(started)
    run_in_process(plan.launch)
    return 0


def _build(args: argparse.Namespace, cmd: list[str]):
    from headstart.plan import RunOptions, build_plan
    from headstart.settings import comma_list

    opts = RunOptions(
        model=args.model, revision=args.revision, cache_dir=args.cache_dir, hub=args.hub,
        preload=comma_list(args.preload) if args.preload is not None else None,
        no_preload=args.no_preload, no_prefetch=args.no_prefetch, forkserver=args.forkserver,
        trace=args.trace, verbose=args.verbose, no_profile=args.no_profile,
        zygote=args.zygote,
    )
    return build_plan(opts, cmd)


def _launch_plain(cmd: list[str]) -> int:
    """No acceleration at all: exec the command as a shell would."""
    return _exec(cmd)


def _exec(argv: list[str]) -> int:
    from headstart.procs.launch import exec_target

    try:
        exec_target(argv)
    except FileNotFoundError:
        say(f"run: {argv[0]}: command not found")
        return 127
    except PermissionError:
        say(f"run: {argv[0]}: permission denied")
        return 126
    except OSError as exc:
        say(f"run: {argv[0]}: {exc.strerror or exc}")
        return 126
    raise AssertionError("exec returned")  # pragma: no cover


def _flush_trace(path: str) -> None:
    from headstart.trace import tracer

    try:
        tracer.write(path)
    except OSError as exc:
        say(f"cannot write trace {path}: {exc}")


def _write_trace_at_exit(path: str) -> None:
    import atexit

    atexit.register(_flush_trace, os.path.abspath(path))


def _write_trace_when_done(path: str, started) -> None:
    """Also write the trace once the background work is over: servers stopped by SIGTERM
    (uvicorn re-raises it) never run atexit handlers."""
    import threading

    path = os.path.abspath(path)

    def wait_then_write() -> None:
        for handle in (started.preload, started.forkserver):
            if handle is not None:
                handle.wait()
        if started.prefetch_thread is not None:
            started.prefetch_thread.join()
        _flush_trace(path)

    threading.Thread(target=wait_then_write, name="headstart-trace", daemon=True).start()


def _report_at_exit(started) -> None:
    import atexit

    def report() -> None:
        for handle in started.prefetches:
            say(f"prefetch: {handle.stats}")
        if started.preload is not None:
            say(f"preload: {started.preload}")
        if started.forkserver is not None:
            say(f"forkserver: {started.forkserver}")
        if started.zygote is not None:
            say(f"zygote: {started.zygote}")

    atexit.register(report)
