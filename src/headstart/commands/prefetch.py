"""``headstart prefetch MODEL|PATH...``: read a model's files into the page cache, in order.

A MODEL is a local folder (the files a server loads from it: sidecars, then weight shards;
a folder without model files is read whole), a single file, or a repo id in the Hugging
Face / ModelScope cache. Files already resident are skipped, so a second run costs ~nothing.
The budget (default: 0.8 of available memory, cgroup-aware) caps what becomes resident:
the first part is read, in order, and the rest is reported as over budget.

Output: a progress bar on stderr (tqdm if installed, else one updating line; only on a
terminal unless --progress), then one summary line on stdout. Skipped files are listed on
stderr with their reason. Exit status: 0 when the prefetch ran (skipped files included),
2 on bad input (unknown model or revision, bad size), 130 when interrupted.

--json prints one object instead of the summary line (keys are stable)::

    {"targets": [{"arg", "kind": "model|folder|file", "root", "files", "notes": [...]}],
     "stats": {"bytes_planned", "bytes_read", "bytes_skipped_resident",
               "bytes_over_budget", "bytes_failed", "budget_bytes", "truncated_by_budget",
               "files", "files_done", "errors": [{"path", "reason"}], "elapsed" (s),
               "throughput" (bytes/s read), "method", "workers", "block_size",
               "cancelled", "done"}}
"""

from __future__ import annotations

import argparse
import json
import sys

from headstart.settings import PREFETCH_DEFAULTS, PREFETCH_METHODS

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str
               ) -> argparse.ArgumentParser:
    from headstart.commands._pagecache_common import add_targets_parser

    p = add_targets_parser(sub, name, help_text, __doc__, run)
    workers, block = PREFETCH_DEFAULTS["workers"], PREFETCH_DEFAULTS["block_size"]
    p.add_argument("--workers", type=int, default=workers,
                   help=f"reader threads (default {workers})")
    p.add_argument("--block-size", default=f"{block >> 20}MiB",
                   help=f"bytes per read (default {block >> 20}MiB)")
    p.add_argument("--budget", default=PREFETCH_DEFAULTS["budget"],
                   help="most bytes to make resident: SIZE (2GiB), PCT of available memory "
                        "(25%%), 'auto' (80%% of available, the default) or 'none'")
    p.add_argument("--method", choices=PREFETCH_METHODS, default=PREFETCH_DEFAULTS["method"],
                   help="how to read (default auto: see headstart.pagecache.engine)")
    p.add_argument("--no-skip-resident", dest="skip_resident", action="store_false",
                   help="read even what is already in the page cache")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress (default: only when stderr is a terminal)")
    return p


def _summary(stats) -> str:
    from headstart.sizes import format_size

    gbs = stats.bytes_read / stats.elapsed / 1e9 if stats.elapsed > 0 else 0.0
    text = (f"read {format_size(stats.bytes_read)} in {stats.elapsed:.2f} s ({gbs:.2f} GB/s), "
            f"skipped {format_size(stats.bytes_skipped_resident)} as resident, "
            f"{stats.files_done}/{stats.files} files, {len(stats.errors)} errors")
    if stats.truncated_by_budget:
        text += (f"; budget {format_size(stats.budget_bytes or 0)} reached: "
                 f"{format_size(stats.bytes_over_budget)} not read")
    if stats.cancelled:
        text += "; cancelled"
    return text


def run(args: argparse.Namespace) -> int:
    from headstart.commands._pagecache_common import progress_display, resolve_files
    from headstart.errors import HeadstartError
    from headstart.pagecache.engine import prefetch
    from headstart.sizes import parse_size, parse_size_or_percent

    block_size = parse_size(args.block_size)
    if block_size <= 0 or block_size % 4096:
        raise HeadstartError(f"--block-size must be a positive multiple of 4096: {block_size}")
    if args.workers < 1:
        raise HeadstartError("--workers must be at least 1")
    budget: int | float | str | None = args.budget
    if args.budget.strip().lower() == "none":
        budget = None
    elif args.budget.strip().lower() != "auto":
        budget = parse_size_or_percent(args.budget)
    targets, paths, _names = resolve_files(args, model_folders=True)
    if args.verbose:
        for t in targets:
            print(f"headstart prefetch: {t.arg}: {len(t.files)} files"
                  + (f" in {t.root}" if t.root else ""), file=sys.stderr)
    for t in targets:
        for note in t.notes:
            print(f"headstart prefetch: {t.arg}: {note}", file=sys.stderr)
    callback, close = progress_display(args.progress, "prefetch")
    handle = prefetch(paths, workers=args.workers, block_size=block_size, budget=budget,
                      skip_resident=args.skip_resident, progress=callback, method=args.method)
    try:
        while not handle.wait(0.2):
            pass
    except KeyboardInterrupt:
        handle.cancel()
        handle.wait(5)
        close()
        print(_summary(handle.stats), file=sys.stderr)
        return 130
    close()
    stats = handle.stats
    if args.json:
        print(json.dumps({"targets": [t.to_dict() for t in targets],
                          "stats": stats.to_dict()}, indent=2))
    else:
        shown = stats.errors if args.verbose else stats.errors[:20]
        for path, reason in shown:
            print(f"headstart prefetch: skipped {path}: {reason}", file=sys.stderr)
        if len(stats.errors) > len(shown):
            print(f"headstart prefetch: ... and {len(stats.errors) - len(shown)} more "
                  "(-v lists all)", file=sys.stderr)
        print(_summary(stats))
    return 0
