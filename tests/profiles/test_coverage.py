"""A replay's coverage, measured on a real process reading known files from a cold cache.

The "server" is a child process that reads whole files when told to (``os.read`` only, no
imports after it is up, so ``/proc/PID/io`` counts nothing but those reads). Files are
evicted with ``posix_fadvise(DONTNEED)`` and checked by residency first.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from _pagecache_util import MiB, drop, make_file, require_disk, resident
from headstart.pagecache.ranges import Range
from headstart.pagecache.readahead import MAX_HOLD, readahead
from headstart.profiles.coverage import Coverage, measure_coverage, rerecord_reason
from headstart.profiles.replay import replay
from headstart.profiles.store import Validated
from headstart.watch.tree_io import TreeReads

_SERVER = r"""
import os, sys
sys.stdout.write("up\n"); sys.stdout.flush()
for line in sys.stdin:
    path = line.strip()
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 1 << 20):
        pass
    os.close(fd)
    sys.stdout.write("ok\n"); sys.stdout.flush()
"""


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "up\n"

    def read(self, path: str) -> None:
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def files(tmp_path):
    require_disk(tmp_path)
    paths = {name: make_file(tmp_path / name, size)
             for name, size in (("a.so", 8 * MiB), ("b.py", 4 * MiB), ("lacking.bin", 6 * MiB),
                                        ("w.safetensors", 2 * MiB))}
    yield paths
    drop(*paths.values())


def test_coverage_counts_what_the_target_read_itself_exactly(files, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(files["a.so"]).rsplit("/", 1)[0] + "/cache")
    server = Server()
    try:
        reads = TreeReads(server.proc.pid)
        reads.start()
        server.read(files["b.py"])  # the target gets to b.py before the replay does
        server.read(files["w.safetensors"])  # and to the weights
        checked = Validated(True, libraries=[Range(files["a.so"], 0, None),
                                             Range(files["b.py"], 0, None)],
                            weights=[Range(files["w.safetensors"], 0, None)],
                            bytes=14 * MiB)
        t0 = time.monotonic()
        handles = replay(checked, target_reads=reads)
        assert resident(files["a.so"]) == 8 * MiB
        server.read(files["a.so"])  # replayed: costs the target no disk read
        server.read(files["lacking.bin"])  # not in the profile: the target reads it
        cov = measure_coverage("k", checked, handles, reads, t0, quiet=0.3)
    finally:
        server.close()
    assert cov.replayed_bytes == 8 * MiB
    assert cov.late_bytes == (4 + 2) * MiB and cov.late_weight_bytes == 2 * MiB
    assert cov.target_read_bytes == (4 + 2 + 6) * MiB
    # reclaimed counts what was gone when the start settled; a reclaim daemon (this VM's DAMON
    # pageout) took a page or two then on CI, and a reclaim only removes, so it is at most
    # what is gone now
    gone_now = 14 * MiB - sum(resident(files[n]) for n in ("a.so", "b.py", "w.safetensors"))
    assert 0 <= cov.reclaimed_bytes <= min(gone_now, 64 * 1024)
    assert cov.needed_bytes == 20 * MiB
    assert cov.settled == "quiet"
    assert cov.poor() is None  # 10 MiB is under the 64 MiB floor


def test_poor_and_stale_profiles_ask_for_a_new_recording(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path))
    from headstart.profiles.coverage import write_coverage
    from headstart.profiles.key import profile_file

    key = "generic-x-0123456789abcdef"
    path = profile_file(key)
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("{}")
    old = os.stat(path).st_mtime
    assert rerecord_reason(key) is None  # nothing measured yet
    good = Coverage(key=key, replayed_bytes=2000 * MiB, target_read_bytes=100 * MiB)
    write_coverage(good)
    assert good.poor() is None and rerecord_reason(key) is None
    poor = Coverage(key=key, replayed_bytes=500 * MiB, target_read_bytes=300 * MiB)
    write_coverage(poor)
    assert "itself" in rerecord_reason(key)
    # the same reads, but most of them ranges the profile holds that the target reached
    # before the replay did (a slow disk): no new recording, it would be no better
    behind = Coverage(key=key, replayed_bytes=2000 * MiB, target_read_bytes=311 * MiB,
                      late_bytes=158 * MiB)
    ahead = Coverage(key=key, replayed_bytes=2000 * MiB, target_read_bytes=311 * MiB)
    assert behind.missing_bytes == 153 * MiB and behind.poor() is None
    assert ahead.missing_bytes == 311 * MiB and "lacks" in ahead.poor()
    write_coverage(behind)
    assert rerecord_reason(key) is None
    stale = Coverage(key=key, replayed_bytes=2000 * MiB, stale_files=2)
    write_coverage(stale)
    assert "changed" in rerecord_reason(key)
    # a profile written after that start is the new recording: no longer asked for
    os.utime(path, (old + 3600, old + 3600))
    assert rerecord_reason(key) is None


def test_tree_reads_sees_the_target_reading_and_then_quiet(files):
    server = Server()
    try:
        reads = TreeReads(server.proc.pid, quiet=0.05)
        reads.start()
        assert not reads.busy()
        server.read(files["lacking.bin"])
        assert reads.busy()  # read within the last 50 ms
        assert reads.total() == 6 * MiB
        time.sleep(0.1)
        assert not reads.busy()
        assert reads.alive()
    finally:
        server.close()
    assert not reads.alive()
    assert reads.total() == 6 * MiB  # an exited process keeps what it read


def test_weights_stand_back_while_the_target_reads_libraries_do_not(files):
    from headstart.pagecache.engine import PrefetchStats

    st = PrefetchStats()
    planned_at_call: list[int] = []

    def busy() -> bool:
        planned_at_call.append(st.bytes_planned)
        return len(planned_at_call) <= 3  # the target reads during the first three checks

    ranges = [Range(files["b.py"], 0, None), Range(files["a.so"], 0, None)]
    readahead(ranges, slow_from=1, yield_to=busy, stats=st)
    assert st.bytes_read == 12 * MiB
    assert st.holds == 1  # one wait, at the first weight chunk
    assert 0 < st.held_seconds <= MAX_HOLD
    # first asked once the weights file was planned, i.e. never for the library
    assert planned_at_call[0] == 12 * MiB
    assert len(planned_at_call) >= 4  # asked again after each sleep


def test_a_target_that_never_stops_reading_does_not_stall_the_replay(files):
    st = readahead([Range(files["a.so"], 0, None)], slow_from=0, yield_to=lambda: True)
    assert st.bytes_read == 8 * MiB  # every chunk waited MAX_HOLD, then went ahead
    assert st.holds >= 1
    assert st.held_seconds >= MAX_HOLD * 0.9
