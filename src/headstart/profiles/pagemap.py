"""Which pages of its mapped files a process tree actually touched: ``/proc/PID/pagemap``.

Residency over-counts mapped files: a page fault on a cold ``.so`` reads the whole
read-around window (``read_ahead_kb``, 8 MiB on this machine's virtio disk) although the
process may touch a few pages of it. A replay that reads exactly the touched pages is
both smaller and sufficient: the target's faults then hit the cache and never trigger a
read-around of their own. The pagemap's "present" bit (readable without privileges; only
the frame numbers are hidden) says which pages of each file mapping the process has
mapped: the pages it touched, plus the kernel's fault-around neighbours (which were
resident anyway).

What it misses: pages of processes that exited before readiness, pages unmapped again
(``munmap``, a loader that closes a mapped shard), and pages the kernel reclaimed from the
page tables; pages read with ``read()`` from a file that is also mapped (ELF headers).
:func:`headstart.profiles.capture.capture` therefore uses it only to *trim* the
residency of files that are still mapped at readiness, and always keeps each file's first
64 KiB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator

from headstart.watch import procfs

__all__ = ["file_mappings", "or_into", "present_in", "present_pages", "real_path",
           "touched_pages"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TOP_BITS = bytes(1 if b & 0xC0 else 0 for b in range(256))


def file_mappings(pid: int, only: Collection[str] | None = None,
                  skip: Collection[str] = ()) -> list[tuple[int, int, int, str]]:
    """``(start, end, file offset, path)`` of each file mapping of ``pid`` (``only``: just
    those whose realpath is in it, then given as the realpath; ``skip``: not those files);
    [] when it is gone.

    Sampled every 100 ms during a recording, over the thousands of mappings of a process
    that imported torch: with ``only``, a mapping is first matched by its inode against
    the few files asked for, and only a match has its path resolved."""
    inodes = _inodes(only) if only is not None else None
    skipped = _inodes(skip)
    out = []
    for parts in procfs.read_maps(pid):
        if len(parts) < 6 or not parts[5].startswith(b"/") or parts[4] == b"0":
            continue
        inode = int(parts[4])
        if (inodes is not None and inode not in inodes) or inode in skipped:
            continue
        path = os.fsdecode(parts[5])
        if path.endswith(" (deleted)"):
            continue
        if only is not None:
            path = real_path(path)
            if path not in only:
                continue
        lo, _, hi = parts[0].partition(b"-")
        out.append((int(lo, 16), int(hi, 16), int(parts[2], 16), path))
    return out


def _inodes(paths: Collection[str]) -> set[int]:
    out = set()
    for p in paths:
        try:
            out.add(os.stat(p).st_ino)
        except OSError:
            continue
    return out


_REAL: dict[str, str] = {}


def real_path(path: str) -> str:
    """``os.path.realpath``, remembered: the same libraries are mapped many times by every
    process of a tree, and resolving each costs a ``lstat`` per path component. A start's
    paths do not move while it is recorded."""
    real = _REAL.get(path)
    if real is None:
        if len(_REAL) > 65536:
            _REAL.clear()
        real = _REAL[path] = os.path.realpath(path)
    return real


def present_pages(pagemap_fd: int, lo: int, hi: int) -> bytes:
    """One byte per page of ``[lo, hi)`` of a process's address space, 1 where the page is
    present (or swapped) in its page tables; ``pagemap_fd`` is its ``/proc/PID/pagemap``.
    Raises OSError when the range cannot be read."""
    raw = os.pread(pagemap_fd, (hi - lo) // _PAGE * 8, (lo // _PAGE) * 8)
    # bits 63 (present) and 62 (swapped) are the top byte's two high bits: one translate
    # over every 8th byte instead of a Python loop per page
    return raw[7: len(raw) // 8 * 8: 8].translate(_TOP_BITS)


def or_into(bitmap: bytearray, first: int, pages: bytes) -> None:
    """``bitmap[first:first+len(pages)] |= pages`` for 0/1 maps, growing it as needed."""
    end = first + len(pages)
    if end > len(bitmap):
        bitmap.extend(bytes(end - len(bitmap)))
    old = bytes(bitmap[first:end])
    if old.count(0) != len(old):  # another mapping of the file: or the two maps
        pages = (int.from_bytes(old, "big") | int.from_bytes(pages, "big")
                 ).to_bytes(len(pages), "big")
    bitmap[first:end] = pages


def present_in(pids: list[int], only: Collection[str] | None = None,
               skip: Collection[str] = (),
               want: Callable[[str, int, int], Iterable[tuple[int, int]]] | None = None,
               ) -> Iterator[tuple[str, int, bytes]]:
    """``(path, first file page, present map)`` of each file mapping of each of ``pids``
    (:func:`file_mappings`, :func:`present_pages`); what cannot be read is skipped.
    ``want(path, lo, hi)``: the parts ``(lo, hi)`` of the file bytes ``[lo, hi)`` a mapping
    holds whose page tables to read (default: all of them), one map yielded per part."""
    for pid in pids:
        maps = file_mappings(pid, only, skip)
        if not maps:
            continue
        try:
            fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            for lo, hi, offset, path in maps:
                parts = [(offset, offset + hi - lo)] if want is None else \
                    want(path, offset, offset + hi - lo)
                for f_lo, f_hi in parts:
                    try:
                        present = present_pages(fd, lo + f_lo - offset, lo + f_hi - offset)
                    except OSError:
                        break
                    yield path, f_lo // _PAGE, present
        finally:
            os.close(fd)


def touched_pages(pids: list[int], skip: Collection[str] = ()) -> dict[str, bytearray]:
    """For each file mapped by any of ``pids`` (but those in ``skip``): a bitmap (one byte
    per file page, 1 = mapped and present in some process). Files are keyed by realpath."""
    out: dict[str, bytearray] = {}
    for path, first, present in present_in(pids, skip=skip):
        last = present.rfind(1)
        if last >= 0:
            or_into(out.setdefault(real_path(path), bytearray()), first,
                    present[: last + 1])
    return out
