"""The ``headstart`` command line: parse, call, print.

Each subcommand lives in ``headstart.commands.NAME`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Only the module of the subcommand being run is imported, so
``headstart run`` pays for argparse and one small module, nothing else.

A :class:`~headstart.errors.HeadstartError` becomes one line on stderr and exit status 2;
a traceback is shown only with ``HEADSTART_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import sys

from headstart import settings
from headstart._version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> one-line help; module headstart.commands.<name with - as _>
COMMANDS: dict[str, str] = {
    "run": "run a command with headstart's acceleration (zero code)",
    "prefetch": "read a model's files into the page cache",
    "status": "show how much of a model or of paths is in the page cache",
    "evict": "drop a model's or paths' pages from the page cache",
    "bench": "cold/warm A/B benchmark of a server with and without headstart",
    "demo": "benchmark `transformers serve` on a generated model, with and without headstart",
    "demo-model": "generate a synthetic model (safetensors, tokenizer, config)",
    "record": "record what a cold start reads, for replay by `headstart run`",
    "explain": "show where a start's time goes: per process, per phase, cold and warm",
    "profiles": "list, show or remove recorded startup I/O profiles",
}


def _module(name: str):
    return importlib.import_module("headstart.commands." + name.replace("-", "_"))


def _available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec("headstart.commands." + name.replace("-", "_")) is not None


def build_parser(only: str | None = None):
    """The full parser, or (``only``) a parser with just one subcommand, for speed."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="headstart",
        description="Make Python ML servers start fast.",
    )
    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if (only is None or only == name) and _available(name):
            _module(name).add_parser(sub, name, help_text)
    return parser


def _setup_logging(verbose: int) -> None:
    import logging

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("headstart: %(message)s"))
    log = logging.getLogger("headstart")
    log.addHandler(handler)
    log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    from headstart.errors import HeadstartError

    argv = sys.argv[1:] if argv is None else argv
    first = argv[0] if argv else None
    if first == "run":  # the hot path: no argparse unless it must answer (help, errors)
        from headstart.commands import run as run_command

        fast = run_command.parse_fast(argv[1:])
        if fast is not None:
            if fast.verbose:
                _setup_logging(fast.verbose)
            # The target runs inside this call: see the comment on `run` below.
            return int(run_command.run(fast) or 0)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", 0) or 0
    if verbose or args.command != "run":  # `run` stays off `logging` unless asked: hot path
        _setup_logging(verbose)
    if args.command == "run":
        # The target runs inside this call: its exceptions, SystemExit and KeyboardInterrupt
        # must reach the interpreter exactly as if it had been started directly.
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except HeadstartError as exc:
        if settings.debug():
            raise
        print(f"headstart {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
