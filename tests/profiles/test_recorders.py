"""Recorders rooted at any pid, and the capture step on an already running process.

The watched process is a real daemon (double fork, new session): it is *not* a descendant
of the test process, which is how a detached recorder sees its target. It maps and reads
real files on request; residency is the real page cache (files evicted with DONTNEED).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

import pytest

from _pagecache_util import MiB, make_file, require_disk, resident
from headstart.pagecache.residency import resident_runs
from headstart.profiles.capture import build_profile, capture
from headstart.profiles.recorders import MapsSampler, ProcessTree, make_recorder, tree_pids
from headstart.profiles.weights import WeightSampler

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="fanotify needs root")

DAEMON = r"""
import mmap, os, subprocess, sys
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
keep = []
print(os.getpid(), flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "map":  # map PATH OFFSET...: touch one byte at each offset
        f = open(args[0], "rb")
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        for off in args[1:]:
            m[int(off)]
        keep += [f, m]
    elif cmd == "read":  # read PATH OFFSET LENGTH, without readahead
        fd = os.open(args[0], os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        os.pread(fd, int(args[2]), int(args[1]))
        os.close(fd)
    elif cmd == "spawn":  # a child that lives as long as we do
        keep.append(subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE))
        print(keep[-1].pid, flush=True)
        continue
    print("ok", flush=True)
"""


class Daemon:
    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", DAEMON], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        self._proc.wait(timeout=30)  # the first fork's parent; the daemon lives on
        self.pid = int(self._proc.stdout.readline())

    def ask(self, line: str) -> str:
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        return self._proc.stdout.readline().strip()

    def close(self) -> None:
        self._proc.stdin.close()  # EOF: the daemon and its children exit
        self._proc.stdout.close()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{self.pid}") and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture
def daemon():
    d = Daemon()
    try:
        assert d.pid not in ProcessTree(os.getpid()), "the daemon must not be our descendant"
        yield d
    finally:
        d.close()


def test_tree_rooted_at_a_process_that_is_not_ours(daemon):
    child = int(daemon.ask("spawn"))
    tree = ProcessTree(daemon.pid)
    assert daemon.pid in tree and child in tree and os.getpid() not in tree
    assert sorted(tree_pids(daemon.pid)) == sorted([daemon.pid, child])
    without_root = ProcessTree(daemon.pid, include_root=False)
    assert daemon.pid not in without_root and child in without_root
    # rooted at this process (the default), the recorder itself never counts
    assert os.getpid() not in tree_pids() and daemon.pid not in tree_pids()
    assert os.getpid() in ProcessTree(os.getpid(), include_root=True)


def test_maps_sampler_follows_a_foreign_root(daemon, tmp_path):
    path = make_file(tmp_path / "lib.so", MiB)
    rec = make_recorder("maps", [], root_pid=daemon.pid)
    assert isinstance(rec, MapsSampler) and rec.mechanism == "maps"
    mine = MapsSampler()
    rec.start()
    try:
        assert daemon.ask(f"map {path} 0") == "ok"
    finally:
        rec.stop()  # takes a last sample
    mine.sample()
    seen = {s.path: s.pid for s in rec.ordered()}
    assert seen.get(os.path.realpath(path)) == daemon.pid
    assert os.path.realpath(path) not in {s.path for s in mine.ordered()}


def test_make_recorder_names():
    with pytest.raises(ValueError, match="unknown mechanism"):
        make_recorder("strace", [])
    expected = "fanotify" if os.geteuid() == 0 else "maps"
    assert make_recorder("auto", ["/"]).mechanism == expected


@root_only
def test_fanotify_follows_a_foreign_root(daemon, tmp_path):
    require_disk(tmp_path)
    path = make_file(tmp_path / "config.json", 8192)
    rec = make_recorder("fanotify", [str(tmp_path)], root_pid=daemon.pid)
    mine = make_recorder("fanotify", [str(tmp_path)])
    rec.start()
    mine.start()
    try:
        assert daemon.ask(f"read {path} 0 4096") == "ok"
    finally:
        rec.stop()
        mine.stop()
    assert os.path.realpath(path) in [s.path for s in rec.ordered()]
    assert os.path.realpath(path) not in [s.path for s in mine.ordered()]


def test_capture_an_already_running_process_by_pid(daemon, tmp_path):
    """What a recorder attached to a running target does: no run_once, only a pid."""
    require_disk(tmp_path)
    folder = tmp_path / "m"
    folder.mkdir()
    lib = make_file(folder / "lib.so", 16 * MiB)
    data = make_file(folder / "data.bin", 8 * MiB)
    make_file(folder / "unused.bin", MiB)
    os.symlink(data, folder / "link.bin")  # the same file under a second name
    t0 = time.time_ns()
    rec = MapsSampler(root_pid=daemon.pid)
    sampler = WeightSampler([data])
    rec.start()
    sampler.start()
    assert daemon.ask(f"map {lib} {4 * MiB} {10 * MiB + 5}") == "ok"
    assert daemon.ask(f"read {data} {MiB} 65536") == "ok"
    make_file(folder / "written.bin", 4096)  # an output of the startup, not an input
    cap = capture(daemon.pid, rec, sampler, weights={os.path.realpath(data)}, t_start_ns=t0,
                  extra_paths=[str(folder)])
    assert os.path.exists(f"/proc/{daemon.pid}")  # the target keeps running

    by_path = {f.path: i for i, f in enumerate(cap.files)}
    assert len(by_path) == len(cap.files)  # one entry per real path (link.bin merged)
    mine = {os.path.basename(p) for p in by_path if p.startswith(os.path.realpath(folder))}
    assert mine == {"lib.so", "data.bin"}
    assert cap.skipped_written == 1 and cap.mechanism == "maps"
    d = by_path[os.path.realpath(data)]
    assert cap.files[d].role == "weights"
    assert [r for r in cap.ranges if r[0] == d] == [(d, MiB, 65536)]
    assert cap.ranges[-1] == (d, MiB, 65536)  # weights last
    # the mapped library was trimmed to its touched pages (the root's own mappings count)
    lib_ranges = [(o, n) for i, o, n in cap.ranges if i == by_path[os.path.realpath(lib)]]
    assert any(o <= 4 * MiB < o + n for o, n in lib_ranges)
    assert any(o <= 10 * MiB < o + n for o, n in lib_ranges)
    assert sum(n for _o, n in lib_ranges) < resident(lib) and cap.trimmed > 0
    # what the trim dropped is the tail: together they are the library's resident pages
    lib_tail = [(o, n) for i, o, n in cap.tail if i == by_path[os.path.realpath(lib)]]
    assert lib_tail and cap.trimmed == sum(n for _i, _o, n in cap.tail)
    pieces = sorted(lib_ranges + lib_tail)
    assert all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(pieces))  # disjoint
    # every page resident now (nothing read the file since; a reclaim only removes) is in one
    for off, n in resident_runs(lib):
        assert _covered(pieces, off, n), (off, n)

    prof = build_profile(cap, key="k", identity={"adapter": "generic"}, command=["x"],
                         evicted_roots=[str(folder)])
    assert prof.files == cap.files and prof.ranges == cap.ranges and prof.tail == cap.tail
    assert prof.stats["tail_bytes"] == cap.trimmed
    assert prof.stats["weight_bytes"] == 65536
    assert prof.stats["files_not_evicted"] == len(cap.files) - len(mine)
    assert prof.stats["weight_samples"] == sampler.samples >= 1


def _covered(pieces: list[tuple[int, int]], off: int, n: int) -> bool:
    """[off, off + n) lies inside the union of the sorted, disjoint ``pieces``."""
    pos, end = off, off + n
    for o, m in pieces:
        if o <= pos < o + m:
            pos = o + m
            if pos >= end:
                return True
    return pos >= end
