"""How much of each file is in the page cache right now.

``cachestat(2)`` answers exactly and cheaply (Linux 6.5+). Without it, ``mincore(2)`` on a
temporary read-only mapping answers too, but since Linux 5.2 it claims every page resident
for a file the caller could not write: such answers are marked ``trusted=False``.
:func:`residency` never raises for what the file system does; a file that cannot be checked
has ``error``. :func:`resident_runs` says *which* pages are resident (``headstart record``).
"""

from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass, field
from typing import Any

from headstart.pagecache import syscalls
from headstart.pagecache.pathcheck import file_kind, os_reason
from headstart.pagecache.ranges import Range, Readable, expand_paths, to_ranges

__all__ = [
    "FileResidency",
    "Residency",
    "cachestat_runs",
    "page_runs",
    "residency",
    "resident_runs",
]

CHUNK = 65536  # cachestat granularity of resident_runs where mincore cannot be trusted

@dataclass(frozen=True)
class FileResidency:
    """One file (or range of one): ``size`` bytes, of which ``resident`` are cached.

    ``dirty`` and ``writeback`` are byte counts from cachestat (``None`` from mincore).
    """

    path: str
    size: int
    resident: int
    exact: bool
    trusted: bool
    offset: int = 0
    dirty: int | None = None
    writeback: int | None = None
    error: str | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.resident / self.size if self.size else 100.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "size": self.size,
                "resident": self.resident, "percent": round(self.percent, 2),
                "exact": self.exact, "trusted": self.trusted, "dirty": self.dirty,
                "writeback": self.writeback, "error": self.error}


@dataclass(frozen=True)
class Residency:
    """Per-file answers in the order asked, and totals over the files without errors."""

    files: tuple[FileResidency, ...] = field(default=())

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files if f.error is None)

    @property
    def resident(self) -> int:
        return sum(f.resident for f in self.files if f.error is None)

    @property
    def percent(self) -> float:
        return 100.0 * self.resident / self.size if self.size else 100.0

    @property
    def exact(self) -> bool:
        return all(f.exact for f in self.files if f.error is None)

    @property
    def trusted(self) -> bool:
        return all(f.trusted for f in self.files if f.error is None)

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(f.path, f.error) for f in self.files if f.error is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "total": {"files": sum(1 for f in self.files if f.error is None),
                      "size": self.size, "resident": self.resident,
                      "percent": round(self.percent, 2), "exact": self.exact,
                      "trusted": self.trusted, "errors": len(self.errors)},
        }


def file_residency(path: str, offset: int = 0, length: int | None = None) -> FileResidency:
    """Residency of one file, or of ``[offset, offset+length)`` of it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return FileResidency(path, 0, 0, False, False, offset, error=os_reason(exc, path))
    except ValueError as exc:
        return FileResidency(path, 0, 0, False, False, offset, error=f"invalid path: {exc}")
    if not stat_mod.S_ISREG(st.st_mode):
        return FileResidency(path, 0, 0, False, False, offset, error=file_kind(st.st_mode))
    try:
        fd = os.open(path, syscalls.OPEN_READ_FLAGS)
    except OSError as exc:
        return FileResidency(path, st.st_size, 0, False, False, offset,
                             error=os_reason(exc, path))
    try:
        size = os.fstat(fd).st_size
        start = min(max(0, offset), size)
        end = size if length is None else min(size, start + max(0, length))
        span = end - start
        if span == 0:
            return FileResidency(path, 0, 0, True, True, start)
        try:
            cs = syscalls.cachestat(fd, start, span)
        except OSError:
            cs = None
        if cs is not None:
            page = syscalls.PAGE_SIZE
            return FileResidency(path, span, min(span, cs.nr_cache * page), True, True, start,
                                 dirty=cs.nr_dirty * page, writeback=cs.nr_writeback * page)
        trusted = syscalls.mincore_trusted(st)
        resident = syscalls.mincore_resident(fd, start, span)
        return FileResidency(path, span, resident, False, trusted, start)
    except OSError as exc:
        return FileResidency(path, st.st_size, 0, False, False, offset,
                             error=os_reason(exc, path))
    finally:
        os.close(fd)


def residency(what: Readable) -> Residency:
    """Page-cache residency of a Snapshot, paths (folders: every file below) or ranges."""
    answers = []
    for r in _expanded(to_ranges(what)):
        answers.append(file_residency(r.path, r.offset, r.length))
    return Residency(tuple(answers))


def _expanded(ranges: list[Range]) -> list[Range]:
    out: list[Range] = []
    for r in ranges:
        if r.offset == 0 and r.length is None and os.path.isdir(r.path):
            out.extend(Range(p, 0, None) for p in expand_paths([r.path]))
        else:
            out.append(r)
    return out


def page_runs(vec: bytes, size: int, page: int = syscalls.PAGE_SIZE) -> list[tuple[int, int]]:
    """``(offset, length)`` runs of the pages whose byte in a mincore ``vec`` has bit 0 set
    (page 0 = offset 0), the last one clipped to ``size``."""
    runs: list[tuple[int, int]] = []
    pages = len(vec)
    i = 0
    # bytes.find on b"\x00"/b"\x01" boundaries: fast for the long runs weights have
    while i < pages:
        if not vec[i] & 1:
            j = vec.find(b"\x01", i)
            if j < 0:
                break
            i = j
            continue
        j = vec.find(b"\x00", i)
        j = pages if j < 0 else j
        runs.append((i * page, min(size, j * page) - i * page))
        i = j
    return runs


def cachestat_runs(fd: int, size: int) -> list[tuple[int, int]]:
    """Resident runs at :data:`CHUNK` granularity (a chunk counts when any page of it is
    cached). Raises OSError when cachestat is unavailable."""
    runs: list[tuple[int, int]] = []
    for off in range(0, size, CHUNK):
        cs = syscalls.cachestat(fd, off, min(CHUNK, size - off))
        if cs is None:
            raise OSError(38, "cachestat unavailable")
        if cs.nr_cache:
            n = min(CHUNK, size - off)
            if runs and runs[-1][0] + runs[-1][1] == off:
                runs[-1] = (runs[-1][0], runs[-1][1] + n)
            else:
                runs.append((off, n))
    return runs


def resident_runs(path: str) -> list[tuple[int, int]]:
    """Resident ``(offset, length)`` runs of a file, page granular, clipped to its size.

    ``mincore`` on a read-only shared mapping where it is trusted (root, or a file we may
    write: Linux >= 5.2 reports every page resident otherwise, see
    :func:`~headstart.pagecache.syscalls.mincore_trusted`); else :func:`cachestat_runs`.
    Raises OSError when the file cannot be read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if st.st_size <= 0:
            return []
        if not syscalls.mincore_trusted(st):
            return cachestat_runs(fd, st.st_size)
        vec = syscalls.mincore_vector(fd, 0, st.st_size)
    finally:
        os.close(fd)
    return page_runs(vec, st.st_size)
