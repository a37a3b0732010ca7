"""What ``headstart bench``, ``explain`` and ``record`` share: the readiness options, the
probe they build, the cold-start options and the target command after ``--``."""

from __future__ import annotations

import argparse

from headstart.settings import HUB_CHOICES

__all__ = ["READY_USAGE", "add_cold_options", "add_command_args", "add_ready_options",
           "command_args", "probe_from", "target_command", "target_environ"]

READY_USAGE = "(--ready-url URL | --ready-request URL JSON | --ready-log REGEX | --until-exit)"


def add_ready_options(p: argparse.ArgumentParser, title: str, *, request_kept: bool = False,
                      log_unbuffered: bool = False, exit_help: str) -> None:
    """Exactly one of the four readiness options, as a required group."""
    ready = p.add_argument_group(title)
    how = ready.add_mutually_exclusive_group(required=True)
    how.add_argument("--ready-url", metavar="URL", help="ready when GET URL answers 2xx")
    how.add_argument("--ready-request", nargs=2, metavar=("URL", "JSON"),
                     help="ready when POST URL with this JSON body (or @FILE) answers 2xx"
                          + ("; the first answer is kept in the run folder"
                             if request_kept else ""))
    how.add_argument("--ready-log", metavar="REGEX",
                     help="ready when a line of the target's stdout/stderr matches"
                          + (" (sets PYTHONUNBUFFERED=1 for every variant)"
                             if log_unbuffered else ""))
    how.add_argument("--until-exit", action="store_true", help=exit_help)


def add_cold_options(p: argparse.ArgumentParser, *, model_help: str, when: str) -> None:
    """The model (``--model``, ``--revision``, ``--cache-dir``, ``--hub``), what a cold start
    evicts (``--evict``, ``--no-evict-env``) and the throttle (``--disk-bps``); ``when``
    names the cold start in the help ("cold runs", "the cold start")."""
    p.add_argument("--model", metavar="REF", help=model_help)
    p.add_argument("--revision", help="revision of --model")
    p.add_argument("--cache-dir", help="Hugging Face cache folder for --model")
    p.add_argument("--hub", choices=HUB_CHOICES, default="auto")
    p.add_argument("--evict", action="append", default=[], metavar="PATH",
                   help=f"also evict this file or folder before {when} (repeatable)")
    p.add_argument("--no-evict-env", action="store_true",
                   help=f"do not evict the target's Python installation before {when}")
    p.add_argument("--disk-bps", metavar="SIZE",
                   help="throttle the target's disk reads, e.g. 300MB (root; cgroup blkio/io)")


def add_command_args(p: argparse.ArgumentParser, cmd_help: str) -> None:
    """``-v`` and the target command after ``--`` (``args.cmd``, see :func:`target_command`):
    the last arguments of each of these subcommands. ``args.target_env`` (no option; ``{}``)
    holds variables a caller sets for the target only (see :func:`target_environ`)."""
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help=cmd_help)
    p.set_defaults(target_env={})


def command_args(add_parser, **values: object) -> argparse.Namespace:
    """The ``args`` of one of these subcommands from values, not from a command line (for
    ``headstart demo``): the parser of ``add_parser`` answers its shortest valid command
    line (``--until-exit``), which leaves every other option at its default, and ``values``
    replace what they name (each an attribute of the parsed arguments, or TypeError)."""
    sub = argparse.ArgumentParser(prog="headstart").add_subparsers()
    args = add_parser(sub, "command", "").parse_args(["--until-exit"])
    args.until_exit = False
    unknown = sorted(set(values) - set(vars(args)))
    if unknown:
        raise TypeError(f"not arguments of this command: {', '.join(unknown)}")
    vars(args).update(values)
    return args


def target_environ(args: argparse.Namespace, *, unbuffered: bool) -> dict[str, str] | None:
    """The target's environment: this process's, plus ``args.target_env`` and, when
    ``unbuffered`` (a ``--ready-log`` reads its output from files, where Python buffers
    stdout), ``PYTHONUNBUFFERED=1`` unless set; None when that is this process's own."""
    import os

    extra = dict(args.target_env)
    if unbuffered and "PYTHONUNBUFFERED" not in os.environ:
        extra.setdefault("PYTHONUNBUFFERED", "1")
    return dict(os.environ, **extra) if extra else None


def probe_from(args: argparse.Namespace):
    """The readiness probe the options ask for; bad input is a HeadstartError."""
    from headstart.bench import probes
    from headstart.errors import HeadstartError

    if args.ready_url:
        return probes.UrlProbe(args.ready_url)
    if args.ready_request:
        try:
            return probes.RequestProbe(*args.ready_request)
        except (OSError, ValueError) as exc:
            raise HeadstartError(f"--ready-request: bad JSON body: {exc}") from None
    if args.ready_log:
        import re

        try:
            return probes.LogProbe(args.ready_log)
        except re.error as exc:
            raise HeadstartError(f"--ready-log: bad regular expression: {exc}") from None
    return probes.ExitProbe()


def target_command(args: argparse.Namespace, command: str) -> list[str]:
    """CMD after ``--``; a HeadstartError when there is none."""
    from headstart.errors import HeadstartError

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise HeadstartError(f"no command given (usage: headstart {command} [OPTIONS] -- CMD ...)")
    return cmd
