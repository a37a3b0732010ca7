"""What ``prefetch``, ``status`` and ``evict`` share: turning MODEL|PATH arguments into files,
their model options, a progress display, and table formatting."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headstart.settings import HUB_CHOICES

__all__ = [
    "Target",
    "add_model_options",
    "add_targets_parser",
    "per_file_json",
    "progress_display",
    "resolve_files",
    "resolve_targets",
    "table",
]


@dataclass
class Target:
    """One command-line argument, resolved: ``files`` are (path to read, name to show)."""

    arg: str
    kind: str  # "model" | "folder" | "file" | "files"
    root: str | None
    files: list[tuple[str, str]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"arg": self.arg, "kind": self.kind, "root": self.root,
                "files": len(self.files), "notes": self.notes}


def add_targets_parser(sub: argparse._SubParsersAction, name: str, help_text: str,
                       description: str | None, func: Callable[[argparse.Namespace], int]
                       ) -> argparse.ArgumentParser:
    """The subcommand parser ``prefetch``, ``status`` and ``evict`` share: ``MODEL|PATH...``
    and the model options, run by ``func`` (the caller adds its own options)."""
    p = sub.add_parser(name, help=help_text, description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="MODEL|PATH")
    add_model_options(p)
    p.set_defaults(func=func)
    return p


def resolve_files(args: argparse.Namespace, *, model_folders: bool
                  ) -> tuple[list[Target], list[str], list[str]]:
    """:func:`resolve_targets`, and the paths to read and names to show of all their files,
    in order."""
    targets = resolve_targets(args, model_folders=model_folders)
    return (targets, [path for t in targets for path, _n in t.files],
            [name for t in targets for _p, name in t.files])


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model resolution (for MODEL arguments that are not paths)")
    g.add_argument("--revision", help="branch, tag or commit (default: main)")
    g.add_argument("--cache-dir", help="Hugging Face cache folder (vLLM's --download-dir)")
    g.add_argument("--hub", choices=HUB_CHOICES, default="auto")
    g.add_argument("--include", action="append", metavar="GLOB",
                   help="only files matching GLOB (repeatable)")
    g.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out files matching GLOB (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON (format in the help text)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="say more")


def _model(arg: str, args: argparse.Namespace, kind: str) -> Target:
    from headstart.models.resolve import resolve_model

    snap = resolve_model(arg, revision=args.revision, cache_dir=args.cache_dir, hub=args.hub,
                         include=args.include, exclude=args.exclude)
    return Target(arg, kind, snap.root, [(f.real_path, f.name) for f in snap.files],
                  list(snap.notes))


def resolve_targets(args: argparse.Namespace, *, model_folders: bool) -> list[Target]:
    """Each argument: an existing path is taken as is (a folder: every file below it, or,
    with ``model_folders``, the files a server would load from it); anything else is a
    model reference. Raises HeadstartError subclasses for what cannot be resolved."""
    from headstart.errors import ModelNotFoundError
    from headstart.pagecache.ranges import expand_paths

    targets = []
    for arg in args.targets:
        if not os.path.lexists(arg):
            targets.append(_model(arg, args, "model"))
            continue
        if os.path.isdir(arg):
            if model_folders:
                try:
                    targets.append(_model(arg, args, "model"))
                    continue
                except ModelNotFoundError:
                    if args.include or args.exclude:
                        raise
                    note = "no model files in this folder; reading every file in it"
            else:
                note = None
            files = [(p, os.path.relpath(p, arg)) for p in expand_paths([arg])]
            targets.append(Target(arg, "folder", arg, files, [note] if note else []))
        else:
            targets.append(Target(arg, "file", None, [(arg, arg)], []))
    return targets


def per_file_json(targets: list[Target], doc: dict[str, Any]) -> str:
    """``doc`` (a ``to_dict()`` whose ``files`` rows follow ``targets``' files in order) with
    each row's display name and the resolved targets, as the ``--json`` text."""
    import json

    names = [name for t in targets for _path, name in t.files]
    for row, name in zip(doc["files"], names, strict=True):
        row["name"] = name
    return json.dumps({"targets": [t.to_dict() for t in targets], **doc}, indent=2)


def progress_display(enabled: bool | None, label: str
                     ) -> tuple[Callable[[Any], None] | None, Callable[[], None]]:
    """A ``progress(stats)`` callback and a ``close()``: tqdm if installed, else a plain
    updating line; only when stderr is a terminal unless ``enabled`` forces it."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    from headstart.sizes import format_size

    if tqdm is not None:
        bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                   file=sys.stderr, dynamic_ncols=True, leave=False)

        def update(stats) -> None:
            if bar.total != stats.bytes_planned:
                bar.total = stats.bytes_planned
            bar.n = stats.bytes_done
            bar.set_postfix_str(f"read {format_size(stats.bytes_read)}", refresh=False)
            bar.refresh()

        return update, bar.close

    t0 = time.perf_counter()

    def line(stats) -> None:
        pct = 100.0 * stats.bytes_done / stats.bytes_planned if stats.bytes_planned else 100.0
        rate = stats.bytes_read / max(1e-9, time.perf_counter() - t0) / 1e9
        sys.stderr.write(f"\r{label}: {format_size(stats.bytes_done)} / "
                         f"{format_size(stats.bytes_planned)} ({pct:5.1f}%) {rate:.2f} GB/s ")
        sys.stderr.flush()

    def close() -> None:
        sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "\n")
        sys.stderr.flush()

    return line, close


def table(rows: list[list[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; ``right`` holds the right-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
