"""``headstart status MODEL|PATH...``: how much of each file is in the page cache.

An existing path is taken as is (a folder: every file below it, recursively; symlinked
folders are not followed); anything else is a model reference resolved offline. Like
``fincore``/``vmtouch``: one row per file (size, resident bytes, percent) and a total.
Exact (cachestat) where the kernel has it; a ``?`` marks a mincore answer that cannot be
trusted (a file you cannot write, Linux >= 5.2). Exit status 0; 2 on bad input.

--json prints (keys are stable; sizes in bytes)::

    {"targets": [{"arg", "kind", "root", "files", "notes"}],
     "files": [{"path", "name", "offset", "size", "resident", "percent", "exact",
                "trusted", "dirty", "writeback", "error"}],
     "total": {"files", "size", "resident", "percent", "exact", "trusted", "errors"}}
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    from headstart.commands._pagecache_common import add_model_options

    p = sub.add_parser(name, help=help_text, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="MODEL|PATH")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from headstart.commands._pagecache_common import resolve_targets, table
    from headstart.pagecache.residency import Residency, file_residency
    from headstart.sizes import format_size

    targets = resolve_targets(args, model_folders=False)
    names = [name for t in targets for _p, name in t.files]
    res = Residency(tuple(file_residency(path) for t in targets for path, _n in t.files))
    if args.json:
        doc = res.to_dict()
        for row, name in zip(doc["files"], names, strict=True):
            row["name"] = name
        print(json.dumps({"targets": [t.to_dict() for t in targets], **doc}, indent=2))
        return 0
    rows = [["FILE", "SIZE", "RESIDENT", "PERCENT"]]
    for f, name in zip(res.files, names, strict=True):
        if f.error:
            rows.append([name, "-", "-", f"error: {f.error}"])
        else:
            mark = "" if f.trusted else "?"
            rows.append([name, format_size(f.size), format_size(f.resident) + mark,
                         f"{f.percent:.1f}%"])
    total = res.to_dict()["total"]
    rows.append([f"TOTAL ({total['files']} files)", format_size(res.size),
                 format_size(res.resident) + ("" if res.trusted else "?"),
                 f"{res.percent:.1f}%"])
    print(table(rows, right={1, 2, 3}))
    return 0
