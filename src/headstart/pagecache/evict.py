"""Drop files' pages from the page cache, then say what stayed and why.

``posix_fadvise(POSIX_FADV_DONTNEED)`` drops clean pages that no process maps. What stays:

* pages of tmpfs/ramfs files (they *are* the file; DONTNEED is a no-op there),
* dirty or under-writeback pages (headstart never writes, so it never syncs either),
* pages mapped by a process (found by scanning ``/proc/*/maps`` for the file's inode),
* otherwise pages busy at that instant (locked for I/O, or read again by someone).

Never raises for what the file system does; each file's problem is in its ``error``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from headstart.pagecache import syscalls
from headstart.pagecache.ranges import Readable, to_ranges
from headstart.pagecache.residency import _expanded, file_residency
from headstart.watch import procfs

__all__ = ["Eviction", "FileEviction", "evict"]



@dataclass(frozen=True)
class FileEviction:
    """Resident bytes of one file before and after DONTNEED, and why some stayed."""

    path: str
    size: int
    before: int
    after: int
    reasons: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "resident_before": self.before,
                "resident_after": self.after, "evicted": max(0, self.before - self.after),
                "reasons": list(self.reasons), "error": self.error}


@dataclass(frozen=True)
class Eviction:
    files: tuple[FileEviction, ...] = field(default=())

    @property
    def before(self) -> int:
        return sum(f.before for f in self.files)

    @property
    def after(self) -> int:
        return sum(f.after for f in self.files)

    @property
    def evicted(self) -> int:
        return max(0, self.before - self.after)

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(f.path, f.error) for f in self.files if f.error is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"files": [f.to_dict() for f in self.files],
                "total": {"files": sum(1 for f in self.files if f.error is None),
                          "size": sum(f.size for f in self.files),
                          "resident_before": self.before, "resident_after": self.after,
                          "evicted": self.evicted, "errors": len(self.errors)}}


def _mappers(dev: int, ino: int, limit: int = 5) -> list[str]:
    """``"pid 123 (python)"`` for processes that map the file (those we may inspect)."""
    dev_field = f"{os.major(dev):02x}:{os.minor(dev):02x}".encode()
    ino_field = str(ino).encode()
    found: list[str] = []
    for pid in procfs.pids():
        if any(len(parts) >= 5 and parts[3] == dev_field and parts[4] == ino_field
               for parts in procfs.read_maps(pid)):
            name = "?"
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as fh:
                name = fh.read().strip()
            found.append(f"pid {pid} ({name})")
            if len(found) >= limit:
                break
    return found


def _why(path: str, st: os.stat_result, dirty: int | None, writeback: int | None) -> list[str]:
    reasons: list[str] = []
    fstype = syscalls.fs_type(path)
    if fstype in syscalls.TMPFS_LIKE:
        reasons.append(f"on {syscalls.TMPFS_LIKE[fstype]}: the page cache is the file itself")
        return reasons
    if dirty:
        reasons.append(f"{dirty} bytes dirty (not yet written back; headstart never syncs)")
    if writeback:
        reasons.append(f"{writeback} bytes under writeback")
    mappers = _mappers(st.st_dev, st.st_ino)
    if mappers:
        reasons.append("mapped by " + ", ".join(mappers))
    if not reasons:
        reasons.append("pages busy or read again by another process")
    return reasons


def evict(what: Readable) -> Eviction:
    """Drop the pages of a Snapshot, paths (folders: every file below) or ranges."""
    out: list[FileEviction] = []
    for r in _expanded(to_ranges(what)):
        before = file_residency(r.path, r.offset, r.length)
        if before.error is not None:
            out.append(FileEviction(r.path, 0, 0, 0, (), before.error))
            continue
        error = None
        try:
            fd = os.open(r.path, syscalls.OPEN_READ_FLAGS)
            try:
                os.posix_fadvise(fd, before.offset, before.size if r.length is not None else 0,
                                 os.POSIX_FADV_DONTNEED)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            from headstart.pagecache.pathcheck import os_reason

            out.append(FileEviction(r.path, before.size, before.resident, before.resident, (),
                                    os_reason(exc, r.path)))
            continue
        after = file_residency(r.path, r.offset, r.length)
        reasons: tuple[str, ...] = ()
        if after.error is None and after.resident > 0:
            reasons = tuple(_why(r.path, st, after.dirty, after.writeback))
            if not after.trusted:
                reasons += ("mincore cannot see this file's pages (no write access); "
                            "the figure is not trustworthy",)
        out.append(FileEviction(r.path, before.size, before.resident, after.resident, reasons,
                                error or after.error))
    return Eviction(tuple(out))
