"""``headstart evict MODEL|PATH...``: drop files' pages from the page cache.

Uses ``posix_fadvise(POSIX_FADV_DONTNEED)``, then checks again and says why pages stayed
(tmpfs, dirty pages, mapped by a process). Paths and model references as for ``status``.
Exit status 0 (also when some pages stayed: see the reasons); 2 on bad input.

--json prints (keys are stable; sizes in bytes)::

    {"targets": [{"arg", "kind", "root", "files", "notes"}],
     "files": [{"path", "name", "size", "resident_before", "resident_after", "evicted",
                "reasons": [...], "error"}],
     "total": {"files", "size", "resident_before", "resident_after", "evicted", "errors"}}
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
    from headstart.pagecache.evict import evict
    from headstart.sizes import format_size

    targets, paths, names = resolve_files(args, model_folders=False)
    result = evict(paths)
    if args.json:
        print(per_file_json(targets, result.to_dict()))
        return 0
    rows = [["FILE", "SIZE", "BEFORE", "AFTER", "NOTE"]]
    for f, name in zip(result.files, names, strict=True):
        if f.error:
            rows.append([name, "-", "-", "-", f"error: {f.error}"])
        else:
            rows.append([name, format_size(f.size), format_size(f.before),
                         format_size(f.after), "; ".join(f.reasons)])
    total = result.to_dict()["total"]
    rows.append([f"TOTAL ({total['files']} files)", format_size(total["size"]),
                 format_size(result.before), format_size(result.after),
                 f"evicted {format_size(result.evicted)}"])
    print(table(rows, right={1, 2, 3}))
    return 0
