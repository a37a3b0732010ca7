"""headstart.pagecache.readahead on real files and the real page cache (DONTNEED to evict,
cachestat/mincore to check)."""

from __future__ import annotations

import time

import pytest

from _pagecache_util import (
    MiB,
    assert_resident_runs,
    damon_paged_out,
    drop,
    make_file,
    require_disk,
    resident,
)
from headstart.pagecache.ranges import Range
from headstart.pagecache.readahead import readahead
from headstart.profiles.record import resident_runs


@pytest.fixture
def files(tmp_path):
    require_disk(tmp_path)
    a = make_file(tmp_path / "a.bin", 32 * MiB)
    b = make_file(tmp_path / "b.bin", 4 * MiB)
    small = make_file(tmp_path / "small.py", 20_000, chunk=b"x = 1\n" * 4000)
    drop(a, b, small)
    assert resident(a) == resident(b) == resident(small) == 0
    yield a, b, small
    drop(a, b, small)


def test_exactly_the_ranges_asked_for_become_resident(files):
    a, b, small = files
    # 20 MiB spans more than one readahead window (one WILLNEED call reads at most that)
    ranges = [Range(small, 0, None), Range(a, 1 * MiB, 20 * MiB), Range(a, 28 * MiB, 64 * 1024),
              Range(b, 0, None)]
    paged_out = damon_paged_out()
    st = readahead(ranges)
    assert st.errors == []
    assert st.bytes_read == 20_000 + 20 * MiB + 64 * 1024 + 4 * MiB
    assert st.files == 3 and st.done and st.method == "willneed"
    # this host's DAMON pageout may take a just-read page: allowed for what it reports
    assert_resident_runs(a, [(1 * MiB, 20 * MiB), (28 * MiB, 64 * 1024)], paged_out)
    assert resident(b) == 4 * MiB
    assert resident(small) == 20_000 or resident(small) == 20_480  # the last page is whole

    again = readahead(ranges)  # everything resident: nothing is asked for but what was reclaimed
    assert again.bytes_read + again.bytes_skipped_resident == st.bytes_read
    assert again.bytes_read <= damon_paged_out() - paged_out, again


def test_budget_caps_what_is_asked_for(files):
    a, b, _small = files
    st = readahead([Range(a, 0, None), Range(b, 0, None)], budget=8 * MiB)
    assert st.truncated_by_budget
    assert st.bytes_read <= 8 * MiB
    assert resident(a) + resident(b) <= 8 * MiB
    assert resident(b) == 0


def test_missing_file_is_an_error_and_the_rest_is_read(files, tmp_path):
    _a, b, _small = files
    st = readahead([Range(str(tmp_path / "gone.bin"), 0, None), Range(b, 0, None)])
    assert [p for p, _why in st.errors] == [str(tmp_path / "gone.bin")]
    assert resident(b) == 4 * MiB


def test_cancel_stops_before_the_next_range(files):
    a, b, _small = files
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 1  # the first range goes, then stop

    st = readahead([Range(b, 0, None), Range(a, 0, None)], cancelled=cancelled)
    assert st.cancelled
    assert resident(a) == 0


def test_early_pacing_waits_for_release_then_goes_full_speed(files):
    a, b, _small = files
    timeouts: list[float] = []
    asked: list[float] = []

    def released(timeout: float) -> bool:
        timeouts.append(timeout)
        asked.append(time.monotonic())
        return len(timeouts) >= 3  # released at the third chunk

    # 1 MiB/s from range 1 on: the first paced chunk goes at once, the next ones wait
    st = readahead([Range(b, 0, None), Range(a, 0, None)], slow_from=1,
                   slow_rate=float(MiB), released=released, window=4 * MiB)
    assert st.bytes_read == 4 * MiB + 32 * MiB
    assert resident(a) == 32 * MiB
    assert len(timeouts) == 3  # 4 chunks of a; not asked again once released
    assert timeouts[0] == 0.0
    # the second chunk is due only once the first one's 4 MiB fit under 1 MiB/s: 4 s after
    # the first was asked for, less what the first chunk's submission took (this disk's)
    assert 4.0 - (asked[1] - asked[0]) - 0.05 <= timeouts[1] <= 4.0


def test_the_early_window_holds_back_weights_only(files):
    """Until released, chunks from ``slow_from`` on (weights) are at most ``early_window``
    and ask whether the imports are done; the ranges before it (libraries, which the target
    waits for right then) go in full device chunks and never ask."""
    import os

    from headstart.pagecache import syscalls

    a, b, _small = files
    calls: list[float] = []

    def released(timeout: float) -> bool:
        calls.append(timeout)
        return False

    st = readahead([Range(b, 0, None), Range(a, 0, 2 * MiB)], slow_from=1, released=released,
                   early_window=MiB, window=8 * MiB)
    assert st.bytes_read == 4 * MiB + 2 * MiB
    assert resident(b) == 4 * MiB and resident_runs(a) == [(0, 2 * MiB)]
    device_chunk = syscalls.readahead_window(os.stat(a).st_dev, 128 * 1024)
    weight_chunks = 2 * MiB // max(4096, min(device_chunk, MiB))
    assert calls == [0.0] * weight_chunks


def test_touch_reads_again_the_ranges_from_slow_from_only(files):
    a, b, small = files
    st = readahead([Range(small, 0, None), Range(b, 0, None), Range(a, 0, 8 * MiB)],
                   slow_from=1, touch=True)
    assert st.bytes_read == 20_000 + 4 * MiB + 8 * MiB
    assert st.bytes_touched == 4 * MiB + 8 * MiB  # the lead (the libraries) is not touched


def test_after_lead_is_called_once_every_lead_range_was_asked_for(files):
    a, b, small = files
    seen: list[tuple[int, int]] = []
    st = None

    def after_lead() -> None:
        seen.append((st.bytes_planned, resident(a)))

    from headstart.pagecache.engine import PrefetchStats

    st = PrefetchStats()
    readahead([Range(small, 0, None), Range(b, 0, None), Range(a, 0, None)], slow_from=2,
              stats=st, after_lead=after_lead)
    # asked for: the two lead files, not a page of the weights yet
    assert seen == [(20_000 + 4 * MiB, 0)]
    assert resident(a) == 32 * MiB
