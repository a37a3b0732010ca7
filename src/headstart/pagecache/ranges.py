"""The engine's unit of work: a byte range of a file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple, Union

__all__ = ["Range", "Readable", "expand_paths", "to_ranges"]


class Range(NamedTuple):
    """``length`` of ``None`` means "to the end of the file"."""

    path: str
    offset: int = 0
    length: int | None = None


# What prefetch/residency/evict accept: a Snapshot, one path, paths, or ranges.
Readable = Union["object", str, os.PathLike, Iterable[str | os.PathLike | Range | tuple]]


def to_ranges(what: Readable) -> list[Range]:
    """Normalise anything ``prefetch`` accepts to an ordered list of ranges.

    A Snapshot gives one whole-file range per file, in its order, reading ``real_path``.
    """
    files = getattr(what, "files", None)
    if files is not None and hasattr(what, "root"):
        return [Range(f.real_path, 0, None) for f in files]
    if isinstance(what, (str, os.PathLike)):
        return [Range(os.fspath(what), 0, None)]
    out: list[Range] = []
    for item in what:  # type: ignore[union-attr]
        if isinstance(item, Range):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            out.append(Range(os.fspath(item), 0, None))
        elif isinstance(item, tuple) and 1 <= len(item) <= 3:
            out.append(Range(os.fspath(item[0]), *item[1:]))
        else:
            raise TypeError(f"cannot prefetch {item!r}: expected a path or (path, offset, length)")
    return out


def expand_paths(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[str]:
    """Folders become every non-folder entry below them, recursively, in sorted order.

    Symlinked folders below a folder are skipped (never followed, so symlink loops cannot
    recurse); symlinks to files are kept (a Hugging Face snapshot is all symlinks). Other
    paths (files, missing paths, FIFOs) are kept as given, so the caller can say why each
    one was skipped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):  # a symlink to a folder given explicitly is followed once
            found: list[tuple[tuple[str, ...], str]] = []
            for folder, dirs, files in os.walk(path, followlinks=False):
                rel = os.path.relpath(folder, path)
                parts = () if rel == "." else tuple(rel.split(os.sep))
                found.extend(((*parts, name), os.path.join(folder, name)) for name in files)
                dirs.sort()
            out.extend(p for _, p in sorted(found))
        else:
            out.append(path)
    return out
