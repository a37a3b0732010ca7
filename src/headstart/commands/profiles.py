"""``headstart profiles list | show KEY | rm KEY|--all``: recorded startup I/O profiles.

``list`` shows every profile (key, bytes, files, command); ``show KEY`` its summary and
whether it is still valid (every recorded file unchanged); ``rm`` removes one or all.
Exit status: 0, or 1 when ``show``/``rm`` name a profile that does not exist.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="count", default=0)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.add_parser("list", help="list profiles")
    show = verbs.add_parser("show", help="show one profile")
    show.add_argument("key")
    show.add_argument("--ranges", action="store_true", help="print every range, in order")
    rm = verbs.add_parser("rm", help="remove profiles")
    rm.add_argument("key", nargs="?")
    rm.add_argument("--all", action="store_true", help="remove every profile")
    p.set_defaults(func=run)
    return p


def _say(msg: str) -> None:
    print(f"headstart profiles: {msg}", file=sys.stderr, flush=True)


def _summary(key: str, prof) -> dict:
    if prof is None:
        return {"key": key, "error": "unreadable"}
    return {"key": key, "bytes": prof.total_bytes, "files": len(prof.files),
            "ranges": len(prof.ranges), "tail_bytes": sum(n for _i, _o, n in prof.tail),
            "tail_ranges": len(prof.tail), "mechanism": prof.mechanism,
            "created": prof.created, "command": prof.command,
            "model": prof.identity.get("model"), "adapter": prof.identity.get("adapter")}


def run(args: argparse.Namespace) -> int:
    import json
    import shlex

    from headstart.profiles import store
    from headstart.sizes import format_size

    verb = args.verb or "list"
    if verb == "list":
        rows = [_summary(k, p) for k, p in store.list_profiles()]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no profiles in {store.profiles_dir()}")
        else:
            print(f"{'KEY':<48} {'BYTES':>10} {'FILES':>6}  COMMAND")
            for r in rows:
                if "error" in r:
                    print(f"{r['key']:<48} {'?':>10} {'?':>6}  (unreadable)")
                    continue
                print(f"{r['key']:<48} {format_size(r['bytes']):>10} {r['files']:>6}  "
                      f"{shlex.join(r['command'])[:80]}")
        return 0
    if verb == "show":
        prof = store.load_profile(args.key)
        if prof is None:
            _say(f"no profile {args.key!r} (see `headstart profiles list`)")
            return 1
        checked = store.validate(prof)
        info = _summary(args.key, prof)
        info.update(identity=prof.identity, snapshot=prof.snapshot, stats=prof.stats,
                    valid=checked.usable, invalid_reason=checked.reason,
                    stale_files=checked.stale_files, path=store.profile_path(args.key))
        if args.ranges:
            info["ranges"] = [[prof.files[i].path, o, n] for i, o, n in prof.ranges]
            info["tail"] = [[prof.files[i].path, o, n] for i, o, n in prof.tail]
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"profile {args.key}")
        for k in ("path", "adapter", "model", "mechanism"):
            print(f"  {k:<11} {info[k]}")
        print(f"  command     {shlex.join(prof.command)}")
        print(f"  bytes       {format_size(prof.total_bytes)} in {len(prof.files)} files, "
              f"{len(prof.ranges)} ranges")
        print(f"  tail        {format_size(info['tail_bytes'])} in {info['tail_ranges']} ranges "
              f"(read-around of mapped libraries; read only with HEADSTART_REPLAY_TAIL)")
        state = "yes" if checked.usable else f"no ({checked.reason})"
        print(f"  valid       {state}; {len(checked.stale_files)} changed file(s)")
        recorded = prof.stats.get("recorded_by") or "headstart record"
        print(f"  recorded    by {recorded}, ready after "
              f"{float(prof.stats.get('ready_seconds') or 0):.2f} s"
              + (f" ({prof.stats['recorded_because']})"
                 if prof.stats.get("recorded_because") else ""))
        if prof.stats.get("doubt"):
            print(f"  doubt       {prof.stats['doubt']}")
        for path in checked.stale_files[:10]:
            print(f"    changed   {path}")
        if args.ranges:
            for path, off, n in info["ranges"]:
                print(f"  {path} {off} {n}")
            for path, off, n in info["tail"]:
                print(f"  tail {path} {off} {n}")
        return 0
    if verb == "rm":
        if args.all:
            n = sum(store.remove_profile(k) for k, _p in store.list_profiles())
            print(f"removed {n} profile(s)")
            return 0
        if not args.key:
            _say("rm: give a KEY or --all")
            return 2
        if not store.remove_profile(args.key):
            _say(f"no profile {args.key!r}")
            return 1
        print(f"removed {args.key}")
        return 0
    return 2
