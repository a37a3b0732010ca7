"""``headstart record [READY-OPTIONS] -- CMD ARGS...``: record what a cold start reads.

Evicts the model's files and the target's Python installation from the page cache, runs
CMD until it is ready (the same readiness options as ``headstart bench``), records which
files its whole process tree opened first (fanotify as root, /proc/PID/maps sampling
otherwise) and which of their pages were resident at readiness, then stops CMD.
The profile is stored under headstart's cache folder; ``headstart run`` with the same
command (same adapter, model, revision and interpreter) replays it. Exit status: 0 when a
profile was written, 1 when the target never got ready.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from headstart.commands._readiness import (
    READY_USAGE,
    add_command_args,
    add_ready_options,
    probe_from,
    target_command,
    target_environ,
)
from headstart.settings import HUB_CHOICES

__all__ = ["add_parser", "run"]


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage=f"headstart record [OPTIONS] {READY_USAGE} -- CMD [ARGS...]")
    add_ready_options(p, "readiness (exactly one, as in headstart bench)",
                      exit_help="record the whole command; exit status 0 is success")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    p.add_argument("--model", help="model the command loads (default: read from CMD)")
    p.add_argument("--revision", help="revision of the model")
    p.add_argument("--cache-dir", help="Hugging Face cache folder")
    p.add_argument("--hub", choices=HUB_CHOICES)
    p.add_argument("--evict", action="append", default=[], metavar="PATH",
                   help="also evict this file or folder before recording (repeatable)")
    p.add_argument("--no-evict-env", action="store_true",
                   help="do not evict the target's Python installation before recording")
    p.add_argument("--no-trim-mapped", action="store_true",
                   help="keep every resident page of mapped libraries, not only those the "
                        "target touched")
    p.add_argument("--mechanism", choices=["auto", "fanotify", "maps"], default="auto",
                   help="how the file order is recorded (default: fanotify as root)")
    p.add_argument("--out", metavar="DIR",
                   help="keep the run's stdout/stderr here (default: a temporary folder, "
                   "removed when a profile was written, kept and named when not)")
    p.add_argument("--json", action="store_true", help="print the profile's summary as JSON")
    add_command_args(p, "the command, after --")
    p.set_defaults(func=run)
    return p


def _say(msg: str) -> None:
    print(f"headstart record: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import json

    from headstart.errors import HeadstartError
    from headstart.profiles.record import record_startup
    from headstart.sizes import format_size

    cmd = target_command(args, "record")
    for p in args.evict:
        if not os.path.exists(p):
            raise HeadstartError(f"--evict {p}: no such file or folder")
    probe = probe_from(args)
    env = target_environ(args, unbuffered=bool(args.ready_log))
    run_dir = args.out or tempfile.mkdtemp(prefix="headstart-record-")
    rec = record_startup(cmd, probe, os.path.abspath(run_dir), model=args.model,
                         revision=args.revision, cache_dir=args.cache_dir, hub=args.hub,
                         extra_evict=args.evict, evict_env=not args.no_evict_env,
                         trim_mapped=not args.no_trim_mapped,
                         timeout=args.timeout, env=env,
                         mechanism=args.mechanism, say=_say if args.verbose else (lambda m: None))
    for note in rec.notes:
        if args.verbose:
            _say(note)
    if rec.profile is not None and args.out is None:  # the logs of a good start: litter
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    if rec.profile is None:
        r = rec.run
        _say(f"the target was not ready ({getattr(r, 'reason', '')}); no profile written; "
             f"its output is in {run_dir}")
        return 1
    prof = rec.profile
    s = prof.stats
    if s.get("doubt"):  # said with or without -v: the profile is kept, but not trusted
        _say(f"warning: {s['doubt']}; the next `headstart run` of this command records a "
             "new profile during its start (unless HEADSTART_AUTO_RECORD=0)")
    if args.json:
        print(json.dumps({"key": prof.key, "path": rec.path, "mechanism": prof.mechanism,
                          **s}, indent=2))
    else:
        print(f"profile {prof.key}")
        print(f"  path        {rec.path}")
        print(f"  mechanism   {prof.mechanism}")
        print(f"  ready after {s['ready_seconds']:.2f} s (cold, recording)")
        print(f"  files       {s['files']} ({s['ranges']} ranges)")
        print(f"  bytes       {format_size(s['bytes'])} (libraries "
              f"{format_size(s['library_bytes'])}, weights {format_size(s['weight_bytes'])})")
    return 0
