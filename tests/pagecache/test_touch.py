"""headstart.pagecache.touch on real files and the real page cache: what it reads, that a
page gone from the cache costs its own read only, and that it only runs on idle CPU."""

from __future__ import annotations

import os
import time

import pytest

from _pagecache_util import MiB, drop, make_file, require_disk, resident
from headstart.pagecache.touch import PageToucher
from headstart.profiles.record import resident_runs


@pytest.fixture
def big(tmp_path):
    require_disk(tmp_path)
    path = make_file(tmp_path / "weights.bin", 32 * MiB)
    drop(path)
    assert resident(path) == 0
    yield path
    drop(path)


def test_reads_each_range_once_to_its_files_end(big):
    toucher = PageToucher()
    toucher.put(big, 0, 4 * MiB)
    toucher.put(big, 30 * MiB, 8 * MiB)  # past the end: what the file has
    toucher.close()
    assert toucher.bytes == 4 * MiB + 2 * MiB and toucher.errors == 0
    assert resident_runs(big) == [(0, 4 * MiB), (30 * MiB, 2 * MiB)]


def test_a_page_gone_from_the_cache_is_read_alone_not_with_a_read_around(big):
    # a buffered read at the start of a cold file starts the kernel's readahead (this VM's
    # disk: up to 8 MiB); the toucher reads what it was given and not a page more
    toucher = PageToucher()
    toucher.put(big, 0, 64 * 1024)
    toucher.put(big, 8 * MiB, 64 * 1024)
    toucher.close()
    assert resident_runs(big) == [(0, 64 * 1024), (8 * MiB, 64 * 1024)]


def test_a_missing_file_is_counted_and_the_rest_is_read(big, tmp_path):
    toucher = PageToucher()
    toucher.put(str(tmp_path / "gone.bin"), 0, MiB)
    toucher.put(big, 0, MiB)
    toucher.close()
    assert toucher.errors == 1 and toucher.bytes == MiB


def test_runs_only_on_idle_cpu(big):
    toucher = PageToucher()
    toucher.put(big, 0, MiB)
    deadline = time.monotonic() + 30
    while toucher.bytes < MiB and time.monotonic() < deadline:  # its first range is done,
        time.sleep(0.01)                                       # so its policy is set
    try:
        assert os.sched_getscheduler(toucher._thread.native_id) == os.SCHED_IDLE
    finally:
        toucher.close()
