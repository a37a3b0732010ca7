"""The prefetch engine against the real page cache: real files, evicted with DONTNEED and
checked with cachestat and fincore. No timing assertions."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from _pagecache_util import (
    MiB,
    damon_paged_out,
    drop,
    fincore_bytes,
    make_file,
    require_disk,
    resident,
)
from headstart.pagecache import syscalls
from headstart.pagecache.engine import PrefetchStats, prefetch
from headstart.pagecache.ranges import Range

METHODS = ["populate", "pread"]


@pytest.fixture
def disk(tmp_path):
    require_disk(tmp_path)
    return tmp_path


@pytest.fixture
def four(disk):
    return [make_file(disk / f"shard-{i}.safetensors", 8 * MiB) for i in range(4)]


def _run(what, **kw) -> PrefetchStats:
    handle = prefetch(what, **kw)
    assert handle.wait(60), "prefetch did not finish"
    assert handle.done
    return handle.stats


@pytest.mark.parametrize("method", METHODS)
def test_cold_files_become_resident(four, method):
    stats = _run(four, method=method, block_size=MiB)
    assert stats.errors == []
    assert stats.bytes_read == stats.bytes_planned == 32 * MiB
    assert stats.files == stats.files_done == 4
    # checked after the fact: a reclaim daemon (this VM's DAMON pageout, which sees page-cache
    # pages no process maps as idle) took two pages of them once on CI
    assert 32 * MiB - 64 * 1024 <= sum(resident(p) for p in four) <= 32 * MiB
    assert 32 * MiB - 64 * 1024 <= fincore_bytes(*four) <= 32 * MiB
    assert stats.to_dict()["bytes_read"] == 32 * MiB


def test_warm_prefetch_reads_nothing(four):
    _run(four, block_size=MiB)
    again = _run(four, block_size=MiB)
    assert again.bytes_read == 0
    assert again.bytes_skipped_resident == 32 * MiB
    assert again.files_done == 4


@pytest.mark.parametrize("method", METHODS)
def test_partly_resident_file_reads_only_the_cold_blocks(four, method):
    _run([Range(four[0], 0, 2 * MiB)], block_size=MiB)
    stats = _run([four[0]], block_size=MiB, method=method)
    if method == "pread":
        assert stats.bytes_skipped_resident == 2 * MiB
        assert stats.bytes_read == 6 * MiB
    else:  # mmap faults read ahead, so blocks may turn resident before they are planned
        assert stats.bytes_skipped_resident >= 2 * MiB
        assert stats.bytes_read + stats.bytes_skipped_resident == 8 * MiB
    assert resident(four[0]) == 8 * MiB


def test_skip_resident_false_reads_again(four):
    _run(four[:1], block_size=MiB)
    stats = _run(four[:1], block_size=MiB, skip_resident=False)
    assert stats.bytes_read == 8 * MiB


@pytest.mark.parametrize("method", METHODS)
def test_ranges_are_exact(disk, method):
    big = make_file(disk / "big.bin", 64 * MiB)
    stats = _run([(big, 3 * MiB, 2 * MiB), Range(big, 40 * MiB, 4096)], method=method,
                 block_size=MiB)
    assert stats.bytes_read == 2 * MiB + 4096
    # no readahead beyond what was asked (the budget relies on it)
    assert resident(big) == 2 * MiB + 4096


@pytest.mark.parametrize("method", METHODS)
def test_budget_caps_what_becomes_resident(four, method):
    budget = 32 * MiB // 4  # 25 % of the folder
    stats = _run(os.path.dirname(four[0]), method=method, block_size=MiB, budget=budget)
    assert stats.truncated_by_budget
    assert stats.budget_bytes == budget
    assert stats.bytes_read == budget
    assert stats.bytes_over_budget == 24 * MiB
    assert sum(resident(p) for p in four) <= budget
    assert fincore_bytes(*four) <= budget
    # in order: the first file is the one that became resident. Once in many CI runs 4 of
    # its 2048 pages were gone when measured, with no memory pressure: this VM runs a DAMON
    # "pageout" scheme that reclaims idle physical regions. A misordered read leaves far
    # less, and the other files must stay cold.
    assert resident(four[0]) >= 8 * MiB - 64 * 1024
    assert sum(resident(p) for p in four[1:]) == 0


def test_budget_counts_only_new_pages(four):
    _run(four[:2], block_size=MiB)  # 16 MiB already resident
    stats = _run(four, block_size=MiB, budget="8MiB")
    assert stats.bytes_skipped_resident == 16 * MiB
    assert stats.bytes_read == 8 * MiB
    assert resident(four[2]) == 8 * MiB and resident(four[3]) == 0


def test_budget_fraction_and_auto(four):
    from headstart.pagecache.budget import available_memory

    stats = _run(four[:1], budget=0.5)
    avail = available_memory().available
    assert 0.4 * avail < stats.budget_bytes <= 0.6 * avail
    assert _run(four[1:2]).budget_bytes > 0  # "auto"
    assert _run(four[2:3], budget=None).budget_bytes is None


def test_bad_budget_raises_in_caller(four):
    from headstart.errors import InvalidSizeError

    with pytest.raises(InvalidSizeError):
        prefetch(four, budget="lots")
    with pytest.raises(ValueError):
        prefetch(four, block_size=1000)


def _blocking_first_progress(cancel_or_act):
    """A progress callback that runs ``cancel_or_act(handle)`` on its first call, from the
    worker, before that worker takes another block."""
    box: dict = {}
    ready = threading.Event()
    calls = []

    def progress(stats):
        calls.append(stats)
        if len(calls) == 1:
            ready.wait(10)
            cancel_or_act(box["handle"])

    return box, ready, progress, calls


@pytest.mark.parametrize("method", METHODS)
def test_order_and_cancel_one_worker(four, method):
    box, ready, progress, _ = _blocking_first_progress(lambda h: h.cancel())
    handle = prefetch(four, workers=1, block_size=MiB, progress=progress, method=method)
    box["handle"] = handle
    ready.set()
    assert handle.wait(30)
    stats = handle.stats
    assert stats.cancelled
    if method == "pread":
        assert stats.bytes_read == MiB  # exactly one block, then it stopped
    else:  # populate maps contiguous blocks of one file together: one take, the first file
        assert MiB <= stats.bytes_read <= 8 * MiB
    assert resident(four[0]) >= MiB  # the first block of the first range came first
    assert [resident(p) for p in four[1:]] == [0, 0, 0]


def test_order_with_many_workers_fills_first_files_first(disk):
    files = [make_file(disk / f"f{i}", 4 * MiB) for i in range(8)]
    box, ready, progress, _ = _blocking_first_progress(lambda h: h.cancel())
    handle = prefetch(files, workers=2, block_size=MiB, progress=progress)
    box["handle"] = handle
    ready.set()
    assert handle.wait(30)
    # two workers: at most the first few blocks, never the tail
    assert resident(files[0]) > 0
    assert all(resident(p) == 0 for p in files[3:])


def test_progress_reports_and_ends_done(four):
    seen = []
    stats = _run(four, block_size=MiB, progress=seen.append)
    assert seen and seen[-1].done and seen[-1].bytes_read == stats.bytes_read
    done = [s.bytes_done for s in seen]
    assert done == sorted(done)


def test_broken_progress_callback_is_ignored(four):
    def boom(_stats):
        raise RuntimeError("callback bug")

    stats = _run(four, block_size=MiB, progress=boom)
    assert stats.bytes_read == 32 * MiB and stats.errors == []


def test_returns_at_once_and_threads_are_daemons(four):
    handle = prefetch(four, block_size=MiB)
    threads = [t for t in threading.enumerate() if t.name.startswith("headstart-prefetch")]
    assert all(t.daemon for t in threads)
    assert handle.wait(30)


def test_nothing_is_written(four):
    before = [os.stat(p) for p in four]
    _run(four, block_size=MiB)
    after = [os.stat(p) for p in four]
    for b, a in zip(before, after, strict=True):
        assert (b.st_mtime_ns, b.st_ctime_ns, b.st_size) == (a.st_mtime_ns, a.st_ctime_ns,
                                                             a.st_size)
        if os.geteuid() == b.st_uid:  # O_NOATIME is allowed to the owner
            assert b.st_atime_ns == a.st_atime_ns


def test_trace_span_per_file(four):
    from headstart.trace import tracer

    _run(four, block_size=MiB)
    # other tests' prefetch events (no path) may still be in the process-wide tracer
    spans = [e for e in tracer.events() if e.get("cat") == "prefetch"]
    paths = {e["args"].get("path") for e in spans}
    assert set(four) <= paths


# -- robustness: every one is skipped with a reason, never raised, never blocking --------

def _reasons(stats) -> dict[str, str]:
    return dict(stats.errors)


def test_fifo_never_blocks(disk, four):
    fifo = disk / "weights.safetensors"
    os.mkfifo(fifo)
    stats = _run([str(fifo), four[0]], block_size=MiB)
    assert _reasons(stats)[str(fifo)] == "is a FIFO"
    assert stats.bytes_read == 8 * MiB


def test_socket_device_folder_symlinks(disk, four):
    sock_path = disk / "s.bin"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    folder = disk / "model.safetensors"
    folder.mkdir()
    dangling = disk / "dangling.safetensors"
    dangling.symlink_to(disk / "nowhere")
    loop_a, loop_b = disk / "loop-a.bin", disk / "loop-b.bin"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    missing = disk / "deleted.bin"
    try:
        stats = _run([str(sock_path), "/dev/null", Range(str(folder), 0, 100), str(dangling),
                      str(loop_a), str(missing), four[0]], block_size=MiB)
    finally:
        sock.close()
    r = _reasons(stats)
    assert r[str(sock_path)] == "is a socket"
    assert r["/dev/null"] == "is a character device"
    assert r[str(folder)] == "is a directory"
    assert r[str(dangling)] == "dangling symlink"
    assert r[str(loop_a)] == "symlink loop"
    assert r[str(missing)].startswith("no such file")
    assert stats.bytes_read == 8 * MiB
    assert resident(four[0]) == 8 * MiB


def test_folder_is_expanded_without_following_symlinked_folders(disk, four):
    (disk / "sub").mkdir()
    inner = make_file(disk / "sub" / "inner.bin", MiB)
    (disk / "sub" / "back").symlink_to(disk)  # a loop through a symlinked folder
    stats = _run(str(disk), block_size=MiB)
    assert stats.errors == []
    assert stats.bytes_read == 33 * MiB
    assert resident(inner) == MiB


@pytest.mark.parametrize("method", METHODS)
def test_truncated_while_reading(disk, method):
    # 80 MiB: more than one take even when populate maps 64 MiB at once
    path = make_file(disk / "shrinks.bin", 80 * MiB)
    box, ready, progress, _ = _blocking_first_progress(lambda h: os.truncate(path, 2 * MiB))
    handle = prefetch([path], workers=1, block_size=16 * MiB, progress=progress,
                      method=method)
    box["handle"] = handle
    ready.set()
    assert handle.wait(30)
    stats = handle.stats
    assert "truncated" in _reasons(stats)[path]
    assert stats.bytes_read < 80 * MiB


def test_deleted_while_reading_keeps_reading_the_open_file(disk):
    path = make_file(disk / "goes.bin", 8 * MiB)
    box, ready, progress, _ = _blocking_first_progress(lambda h: os.unlink(path))
    handle = prefetch([path], workers=1, block_size=MiB, progress=progress)
    box["handle"] = handle
    ready.set()
    assert handle.wait(30)
    stats = handle.stats
    assert stats.errors == [] and stats.bytes_read == 8 * MiB


def test_sparse_file_reads_only_data(disk):
    path = disk / "sparse.bin"
    with open(path, "wb") as fh:
        fh.truncate(64 * MiB)
        fh.write(os.urandom(MiB))
        fh.seek(32 * MiB)
        fh.write(os.urandom(MiB))
        fh.flush()
        os.fsync(fh.fileno())
    drop(path)
    stats = _run([str(path)], block_size=4 * MiB)
    assert "sparse file" in _reasons(stats)[str(path)]
    assert stats.bytes_read == 2 * MiB
    assert resident(path) == 2 * MiB


def test_permission_denied_as_unprivileged_user(disk, four):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    import subprocess
    import sys

    secret = make_file(disk / "secret.bin", MiB)
    os.chmod(secret, 0o000)
    os.chmod(disk, 0o755)
    code = (
        # import first: the interpreter's own files may not be readable by nobody
        "import os, json\n"
        "import headstart.pagecache.budget, headstart.sizes, headstart.trace\n"
        "from headstart.pagecache.engine import prefetch\n"
        "os.setgid(65534); os.setuid(65534)\n"
        f"h = prefetch([{secret!r}]); h.wait(30); print(json.dumps(h.stats.errors))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "permission denied" in out.stdout


@pytest.mark.parametrize("method", METHODS)
def test_long_range_in_the_middle_stays_exact(disk, method):
    """Interior blocks may be read through mmap (whose faults read around); the ends of the
    range are read exactly, so nothing outside it becomes resident."""
    big = make_file(disk / "big.bin", 96 * MiB)
    paged_out = damon_paged_out()
    stats = _run([(big, 8 * MiB, 56 * MiB)], method=method, block_size=MiB)
    assert stats.bytes_read == 56 * MiB
    fd = os.open(big, os.O_RDONLY)
    try:  # outside the range: exactly nothing; inside: all of it, but for what DAMON's
        # pageout reports it took since the read began (0.7 MB once on CI)
        assert syscalls.mincore_resident(fd, 0, 8 * MiB) == 0
        assert syscalls.mincore_resident(fd, 64 * MiB, 32 * MiB) == 0
        taken = damon_paged_out() - paged_out
        assert syscalls.mincore_resident(fd, 8 * MiB, 56 * MiB) >= 56 * MiB - taken
    finally:
        os.close(fd)
