"""How a recording's facts become a profile's ordered ranges: pure functions, no I/O.

A profile replays, in this order: each library file's resident runs, files in first-open
order and offsets ascending within a file; then the weight files' runs cut at chunk
boundaries, in the order the loader made each chunk resident (chunks of one sample in the
direction the loader walked that file). Runs of files the tree still
mapped are first trimmed to the pages it touched; what the trim drops (the kernel's
read-around of its faults) becomes the profile's tail, which a replay reads only where
``HEADSTART_REPLAY_TAIL`` places it. One real path recorded twice (a symlink and its
target both opened) becomes one file entry.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from headstart.profiles.store import FileEntry

__all__ = ["HEAD_BYTES", "PAGE", "RECLAIM_GAP", "ChunkTimes", "bridge_gaps", "chunk_pieces",
           "merge_duplicates",
           "order_by_chunk",
           "reads_backwards", "split_by_touch", "startup_ranges", "trim_to_touched"]

PAGE = os.sysconf("SC_PAGE_SIZE")
HEAD_BYTES = 65536  # ELF headers are read with read(), not through the mapping: always kept
# A hole this small between two resident runs is taken as read: a page reclaim (a DAMON
# "pageout" scheme, memory pressure) can take single pages of a file between the read and
# the residency scan, and a replay that skipped them would leave the start a synchronous
# fault or read of at least this much (the kernel's smallest read-around) each.
RECLAIM_GAP = 65536

Run = tuple[int, int]  # (offset, length)


@dataclass(frozen=True)
class ChunkTimes:
    """When each ``chunk``-byte chunk of the weight files was first seen resident:
    ``first[(path, chunk index)]`` is a sample number; a chunk never seen ranks after every
    sample, as ``samples``."""

    chunk: int
    first: Mapping[tuple[str, int], int]
    samples: int


def trim_to_touched(runs: Sequence[Run], touched: bytes | bytearray,
                    page: int = PAGE) -> list[Run]:
    """The parts of resident ``runs`` on pages the tree touched (``touched[page]`` true) or
    within the first :data:`HEAD_BYTES` of the file. Pages past ``touched`` are untouched."""
    return split_by_touch(runs, touched, page)[0]


def split_by_touch(runs: Sequence[Run], touched: bytes | bytearray,
                   page: int = PAGE) -> tuple[list[Run], list[Run]]:
    """``(kept, dropped)``: the parts of ``runs`` that :func:`trim_to_touched` keeps, and
    the rest, each in offset order; together they are exactly ``runs``."""
    head_pages = HEAD_BYTES // page
    kept: list[Run] = []
    dropped: list[Run] = []
    for off, length in runs:
        end = off + length
        p = off // page
        cut, side = off, None
        while p * page < end:
            keep = p < head_pages or (p < len(touched) and touched[p])
            if side is not None and keep != side:
                at = max(off, p * page)
                (kept if side else dropped).append((cut, at - cut))
                cut = at
            side = keep
            p += 1
        if side is not None and end > cut:
            (kept if side else dropped).append((cut, end - cut))
    return kept, dropped


def bridge_gaps(runs: Sequence[Run], max_gap: int = RECLAIM_GAP) -> list[Run]:
    """``runs`` (in offset order, not overlapping) with each hole of at most ``max_gap``
    bytes between two of them filled: one run from the first's start to the second's end."""
    out: list[list[int]] = []
    for off, length in runs:
        if out and off - (out[-1][0] + out[-1][1]) <= max_gap:
            out[-1][1] = max(out[-1][1], off + length - out[-1][0])
        else:
            out.append([off, length])
    return [(o, n) for o, n in out]


def chunk_pieces(off: int, length: int, chunk: int) -> Iterator[tuple[int, int, int]]:
    """``(chunk index, start, end)`` of the bytes ``[off, off + length)`` cut at multiples of
    ``chunk``."""
    end = off + length
    while off < end:
        c = off // chunk
        stop = min(end, (c + 1) * chunk)
        yield c, off, stop
        off = stop


def order_by_chunk(ranges: Sequence[tuple[str, int, int]], times: ChunkTimes,
                   file_rank: Mapping[str, int]) -> list[tuple[str, int, int]]:
    """``ranges`` (path, offset, length) cut at chunk boundaries and sorted by when each
    chunk became resident, then by ``file_rank`` of the path (0 when absent), then by
    offset: ascending, or descending in a file the loader read from its end to its start
    (:func:`reads_backwards`), where chunks seen in one sample are needed last-first too;
    pieces of one path that end where the next begins are merged again."""
    backwards = {path for path in {r[0] for r in ranges} if reads_backwards(times, path)}
    pieces = []
    for path, off, length in ranges:
        sign = -1 if path in backwards else 1
        for c, lo, hi in chunk_pieces(off, length, times.chunk):
            when = times.first.get((path, c), times.samples)
            pieces.append((when, file_rank.get(path, 0), sign * lo, path, hi - lo))
    pieces.sort()
    out: list[list] = []
    for _when, _rank, signed_off, path, length in pieces:
        off = abs(signed_off)
        if out and out[-1][0] == path and out[-1][1] + out[-1][2] == off:
            out[-1][2] += length
        else:
            out.append([path, off, length])
    return [(p, o, n) for p, o, n in out]


def reads_backwards(times: ChunkTimes, path: str) -> bool:
    """True when, from one sample to the next, the chunks of ``path`` seen first moved
    towards the file's start more often than towards its end (each sample's mean chunk
    against the previous one's): a loader that walks a shard last tensor first."""
    by_sample: dict[int, list[int]] = {}
    for (p, c), when in times.first.items():
        if p == path:
            by_sample.setdefault(when, []).append(c)
    means = [sum(cs) / len(cs) for _when, cs in sorted(by_sample.items())]
    steps = [b - a for a, b in itertools.pairwise(means)]
    return sum(d < 0 for d in steps) > sum(d > 0 for d in steps)


def startup_ranges(files: Sequence[FileEntry], runs: Sequence[Sequence[Run]],
                   times: ChunkTimes) -> list[tuple[int, int, int]]:
    """Profile ranges ``(file index, offset, length)`` of ``files`` (in first-open order;
    ``runs[i]`` are the runs of ``files[i]``): library runs in file order, then the runs of
    files with role ``"weights"`` in loader order (:func:`order_by_chunk`). A path listed
    twice is ranked, and its weight ranges indexed, by its last entry."""
    ranges: list[tuple[int, int, int]] = []
    weight_ranges: list[tuple[str, int, int]] = []
    for idx, (entry, file_runs) in enumerate(zip(files, runs, strict=True)):
        if entry.role == "weights":
            weight_ranges += [(entry.path, off, n) for off, n in file_runs]
        else:
            ranges += [(idx, off, n) for off, n in file_runs]
    index = {f.path: i for i, f in enumerate(files)}
    ranges += [(index[p], off, n) for p, off, n in order_by_chunk(weight_ranges, times, index)]
    return ranges


def merge_duplicates(files: Sequence[FileEntry], ranges: Sequence[tuple[int, int, int]]
                     ) -> tuple[list[FileEntry], list[tuple[int, int, int]]]:
    """One entry per path (the first one kept, in place), ranges re-indexed to it; a range
    that is then an exact repeat of an earlier one is dropped. Overlapping or adjacent
    ranges are kept as they are, in order."""
    merged: list[FileEntry] = []
    index_of: dict[str, int] = {}
    remap: dict[int, int] = {}
    for i, f in enumerate(files):
        if f.path in index_of:
            remap[i] = index_of[f.path]
        else:
            index_of[f.path] = remap[i] = len(merged)
            merged.append(f)
    seen: set[tuple[int, int, int]] = set()
    final: list[tuple[int, int, int]] = []
    for i, off, n in ranges:
        r = (remap[i], off, n)
        if r not in seen:
            seen.add(r)
            final.append(r)
    return merged, final
