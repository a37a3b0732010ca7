"""The pure parts of a recording: range layout (profiles.layout) and mincore vector runs.

No files, no processes: every input is a literal, every expected value worked out by hand.
"""

from __future__ import annotations

import pytest

from headstart.pagecache.residency import page_runs
from headstart.profiles.layout import (
    HEAD_BYTES,
    RECLAIM_GAP,
    ChunkTimes,
    bridge_gaps,
    merge_duplicates,
    order_by_chunk,
    reads_backwards,
    split_by_touch,
    startup_ranges,
    trim_to_touched,
)
from headstart.profiles.store import FileEntry

P = 4096


def _touched(*pages: int, n: int = 400) -> bytearray:
    out = bytearray(n)
    for p in pages:
        out[p] = 1
    return out


def _entry(path: str, role: str = "library", t: float = 0.0) -> FileEntry:
    return FileEntry(path=path, size=1 << 30, mtime_ns=1, inode=1, role=role, t=t)


# bridge_gaps -------------------------------------------------------------------------------

def test_bridge_fills_a_reclaimed_page_and_keeps_a_wider_hole():
    assert bridge_gaps([]) == []
    # the CI case: one page of a 64 KiB read reclaimed between the read and the scan
    assert bridge_gaps([(1 << 20, 14 * P), ((1 << 20) + 15 * P, P)]) == [(1 << 20, 16 * P)]
    assert bridge_gaps([(0, P), (P + RECLAIM_GAP, P)]) == [(0, 2 * P + RECLAIM_GAP)]
    assert bridge_gaps([(0, P), (P + RECLAIM_GAP + 1, P)]) == [(0, P), (P + RECLAIM_GAP + 1, P)]
    assert bridge_gaps([(0, P), (P, P), (10 * P, P)], max_gap=0) == [(0, 2 * P), (10 * P, P)]


def test_bridge_chains_and_keeps_an_unaligned_end():
    runs = [(0, P), (2 * P, P), (4 * P, 100)]
    assert bridge_gaps(runs, max_gap=P) == [(0, 4 * P + 100)]
    assert bridge_gaps(runs, max_gap=P - 1) == runs


# trim_to_touched ---------------------------------------------------------------------------

def test_trim_empty_inputs():
    assert trim_to_touched([], _touched(5), page=P) == []
    # nothing touched: only the header pages survive
    assert trim_to_touched([(0, 2**20)], bytearray(), page=P) == [(0, HEAD_BYTES)]


def test_trim_header_reaches_into_a_run_and_a_touched_page_after_it():
    # header pages 0-15 cover the run's first half; page 20 is touched
    assert trim_to_touched([(8 * P, 16 * P)], _touched(20), page=P) == [(8 * P, 8 * P),
                                                                        (20 * P, P)]


def test_trim_keeps_adjacent_runs_apart():
    # touched pages 22-25 span the boundary between two adjacent runs: two pieces, not one
    runs = [(20 * P, 4 * P), (24 * P, 4 * P)]
    assert trim_to_touched(runs, _touched(22, 23, 24, 25), page=P) == [(22 * P, 2 * P),
                                                                       (24 * P, 2 * P)]


def test_trim_keeps_an_unaligned_end_and_ignores_pages_past_the_bitmap():
    # the file's last run ends 100 bytes into a page: the kept piece ends there too
    assert trim_to_touched([(100 * P, 2 * P + 100)], _touched(100, 101, 102), page=P) == [
        (100 * P, 2 * P + 100)]
    # pages beyond the bitmap's length count as untouched
    assert trim_to_touched([(500 * P, 4 * P)], _touched(1, n=10), page=P) == []


def test_trim_header_is_bytes_not_pages():
    # with 16 KiB pages the first 64 KiB are 4 pages
    assert trim_to_touched([(0, 10 * 16384)], _touched(7), page=16384) == [
        (0, 4 * 16384), (7 * 16384, 16384)]


# order_by_chunk ----------------------------------------------------------------------------

def test_order_empty():
    assert order_by_chunk([], ChunkTimes(10, {}, 0), {}) == []


def test_order_cuts_at_chunk_boundaries_of_unaligned_ranges():
    # chunk 1 was resident before chunk 0: the range is split where chunk 1 begins
    times = ChunkTimes(10, {("a", 0): 1, ("a", 1): 0}, 2)
    assert order_by_chunk([("a", 5, 12)], times, {"a": 0}) == [("a", 10, 7), ("a", 5, 5)]


def test_order_unseen_chunks_come_last_and_merge_again():
    times = ChunkTimes(10, {("a", 2): 0}, 3)
    assert order_by_chunk([("a", 0, 30)], times, {"a": 0}) == [("a", 20, 10), ("a", 0, 20)]


def test_order_ties_break_by_file_rank_then_offset():
    times = ChunkTimes(100, {}, 0)
    ranges = [("a", 50, 10), ("b", 0, 10), ("a", 0, 10), ("c", 0, 5)]
    # same sample for everything: rank b=0 (c has none: 0 too, then path order), a=1
    assert order_by_chunk(ranges, times, {"a": 1, "b": 0}) == [
        ("b", 0, 10), ("c", 0, 5), ("a", 0, 10), ("a", 50, 10)]


def test_order_merges_only_touching_pieces_of_one_path():
    times = ChunkTimes(100, {}, 0)
    # reversed input, same chunk: sorted by offset and joined
    assert order_by_chunk([("a", 10, 10), ("a", 0, 10)], times, {}) == [("a", 0, 20)]
    # a gap of one byte keeps them apart
    assert order_by_chunk([("a", 0, 10), ("a", 11, 5)], times, {}) == [("a", 0, 10),
                                                                     ("a", 11, 5)]


def test_order_chunk_boundary_exactly_at_range_end():
    # [0, 20) with chunk 10: two pieces, no empty third one, rejoined when equally early
    times = ChunkTimes(10, {("a", 0): 0, ("a", 1): 0}, 1)
    assert order_by_chunk([("a", 0, 20)], times, {}) == [("a", 0, 20)]
    later = ChunkTimes(10, {("a", 0): 1, ("a", 1): 0}, 2)
    assert order_by_chunk([("a", 0, 20)], later, {}) == [("a", 10, 10), ("a", 0, 10)]


def test_order_follows_a_loader_that_reads_a_file_backwards_inside_one_sample():
    # chunks 8-9 seen in sample 0, 4-7 in sample 1, 0-3 in sample 2: a loader walking the
    # file from its end. Inside a sample it wants the last chunk first too.
    first = {("a", c): 0 if c >= 8 else (1 if c >= 4 else 2) for c in range(10)}
    times = ChunkTimes(10, first, 3)
    assert reads_backwards(times, "a") and not reads_backwards(times, "b")
    assert order_by_chunk([("a", 0, 100)], times, {}) == [
        ("a", 90, 10), ("a", 80, 10), ("a", 70, 10), ("a", 60, 10), ("a", 50, 10),
        ("a", 40, 10), ("a", 30, 10), ("a", 20, 10), ("a", 10, 10), ("a", 0, 10)]
    # the same chunks read forwards: ascending inside each sample, merged again
    forwards = ChunkTimes(10, {("a", c): 9 - first[("a", c)] for c in range(10)}, 10)
    assert not reads_backwards(forwards, "a")
    assert order_by_chunk([("a", 0, 100)], forwards, {}) == [("a", 0, 100)]
    # one sample only, or no samples: no direction, offset order
    assert not reads_backwards(ChunkTimes(10, {("a", 0): 0, ("a", 5): 0}, 1), "a")
    # up and down equally often: not backwards
    zigzag = ChunkTimes(10, {("a", 0): 0, ("a", 5): 1, ("a", 1): 2}, 3)
    assert not reads_backwards(zigzag, "a")


# startup_ranges ----------------------------------------------------------------------------

def test_startup_ranges_libraries_in_file_order_weights_last_in_loader_order():
    files = [_entry("/lib/a.so"), _entry("/m/w1", "weights"), _entry("/lib/b.py"),
             _entry("/m/w2", "weights")]
    runs = [[(0, 100)], [(0, 20)], [(4096, 50), (0, 10)], [(0, 10)]]
    # w2 became resident first; w1's second chunk before its first
    times = ChunkTimes(10, {("/m/w2", 0): 0, ("/m/w1", 1): 1, ("/m/w1", 0): 2}, 3)
    assert startup_ranges(files, runs, times) == [
        (0, 0, 100), (2, 4096, 50), (2, 0, 10),  # libraries: file order, runs as given
        (3, 0, 10), (1, 10, 10), (1, 0, 10),      # weights: loader order
    ]


def test_startup_ranges_empty_and_length_mismatch():
    assert startup_ranges([], [], ChunkTimes(10, {}, 0)) == []
    with pytest.raises(ValueError):
        startup_ranges([_entry("/a")], [], ChunkTimes(10, {}, 0))


def test_startup_ranges_a_weight_path_listed_twice_uses_its_last_index():
    files = [_entry("/m/w", "weights"), _entry("/lib/a"), _entry("/m/w", "weights")]
    runs = [[(0, 10)], [(0, 5)], [(0, 10)]]
    out = startup_ranges(files, runs, ChunkTimes(100, {}, 0))
    assert out[0] == (1, 0, 5)
    assert {i for i, _o, _n in out[1:]} == {2}


# merge_duplicates --------------------------------------------------------------------------

def test_merge_keeps_first_entry_and_reindexes():
    a, b, a2 = _entry("/x/a", t=0.1), _entry("/x/b"), _entry("/x/a", t=0.9)
    files, ranges = merge_duplicates(
        [a, b, a2], [(0, 0, 10), (1, 0, 5), (2, 0, 10), (2, 10, 10)])
    assert files == [a, b] and files[0].t == 0.1
    # (2, 0, 10) repeats (0, 0, 10) once re-indexed: dropped; (2, 10, 10) is new
    assert ranges == [(0, 0, 10), (1, 0, 5), (0, 10, 10)]


def test_merge_keeps_overlapping_and_adjacent_ranges_in_order():
    f = [_entry("/x/a"), _entry("/x/a")]
    assert merge_duplicates(f, [(0, 0, 10), (1, 5, 10), (0, 10, 10)])[1] == [
        (0, 0, 10), (0, 5, 10), (0, 10, 10)]


def test_merge_empty_and_no_duplicates():
    assert merge_duplicates([], []) == ([], [])
    files = [_entry("/a"), _entry("/b")]
    assert merge_duplicates(files, [(1, 0, 1), (0, 0, 1), (1, 0, 1)]) == (
        files, [(1, 0, 1), (0, 0, 1)])


# page_runs (mincore vector -> runs) ---------------------------------------------------------

def test_page_runs():
    assert page_runs(b"", 0, P) == []
    assert page_runs(b"\x00\x00", 2 * P, P) == []
    assert page_runs(b"\x01\x01\x01", 3 * P - 100, P) == [(0, 3 * P - 100)]
    assert page_runs(b"\x01\x01\x00\x01", 4 * P - 100, P) == [(0, 2 * P), (3 * P, P - 100)]
    assert page_runs(b"\x00\x01\x00\x00\x01\x01", 6 * P, P) == [(P, P), (4 * P, 2 * P)]


def test_touched_pages_sees_exactly_the_faulted_regions_of_two_mappings(tmp_path):
    """A real mapping of a real file: the pages touched (and the kernel's 64 KiB
    fault-around) are set, pages MiBs away are not; two mappings of one file are or-ed."""
    import mmap
    import os

    from headstart.profiles.pagemap import touched_pages

    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(16 * 2**20))
    page = mmap.PAGESIZE
    with open(path, "rb") as fh:
        a = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        b = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        _ = a[0] + a[2048 * page]
        _ = b[1024 * page]
        bitmap = touched_pages([os.getpid()])[os.path.realpath(path)]
        a.close()
        b.close()
    assert bitmap[0] == bitmap[2048] == bitmap[1024] == 1
    assert bitmap[512] == 0 and bitmap[1536] == 0
    assert len(bitmap) < 4096 or not any(bitmap[3000:])


def test_split_by_touch_is_an_exact_partition():
    """kept is what trim_to_touched keeps; dropped is the rest, to the byte, in order."""
    touched = _touched(20, 21, 30, 40, n=64)
    runs = [(0, 25 * P + 100), (29 * P + 5, 3 * P), (39 * P, 10 * P)]
    kept, dropped = split_by_touch(runs, touched, page=P)
    assert kept == trim_to_touched(runs, touched, page=P)
    assert kept == [(0, HEAD_BYTES), (20 * P, 2 * P), (30 * P, P), (40 * P, P)]
    assert dropped == [(HEAD_BYTES, 20 * P - HEAD_BYTES), (22 * P, 3 * P + 100),
                       (29 * P + 5, P - 5), (31 * P, P + 5), (39 * P, P), (41 * P, 8 * P)]
    assert sum(n for _o, n in kept + dropped) == sum(n for _o, n in runs)
    assert split_by_touch([(500 * P, 4 * P)], touched, page=P) == ([], [(500 * P, 4 * P)])
