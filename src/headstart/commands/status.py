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

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str
               ) -> argparse.ArgumentParser:
    from headstart.commands._pagecache_common import add_targets_parser

    return add_targets_parser(sub, name, help_text, __doc__, run)


def run(args: argparse.Namespace) -> int:
    from headstart.commands._pagecache_common import per_file_json, resolve_files, table
    from headstart.pagecache.residency import Residency, file_residency
    from headstart.sizes import format_size

    targets, paths, names = resolve_files(args, model_folders=False)
    res = Residency(tuple(file_residency(path) for path in paths))
    if args.json:
        print(per_file_json(targets, res.to_dict()))
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
