"""The warm-start probe (profiles/probe.py): the pages it checks are pages the recorded
start read from its libraries, and its answer follows the real page cache (files evicted
with DONTNEED, then read back); a start whose adapter-default preload meets resident
libraries skips it, one that asked for its preload never does."""

from __future__ import annotations

import os
import sys
import time

import pytest
from tests._pagecache_util import MiB, drop, make_file, require_disk, resident

from headstart.plan import RunOptions, build_plan
from headstart.profiles.probe import PAGE, libraries_resident, probe_path, probe_points
from headstart.profiles.store import FileEntry, Profile, remove_profile, save_profile
from headstart.startup import preload_now


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _profile(tmp_path, key: str = "generic-x-0123") -> tuple[Profile, list[str]]:
    """Three libraries (one with many ranges) and a weights file, really on disk."""
    require_disk(tmp_path)
    paths = [make_file(tmp_path / name, size) for name, size in
             (("big.so", 8 * MiB), ("small.pyc", 64 * 1024), ("mid.so", 2 * MiB),
              ("model.safetensors", 4 * MiB))]
    files = []
    for i, p in enumerate(paths):
        st = os.stat(p)
        files.append(FileEntry(path=p, size=st.st_size, mtime_ns=st.st_mtime_ns,
                               inode=st.st_ino, role="weights" if i == 3 else "library"))
    ranges = [(0, k * MiB, 64 * 1024) for k in range(8)]  # big.so: 8 spread ranges
    ranges += [(1, 0, 8192), (2, MiB, 12288), (3, 0, 4 * MiB)]
    return Profile(key=key, identity={}, files=files, ranges=ranges), paths


def _evict(*paths: str) -> None:
    """DONTNEED once the readahead of the pages read before has landed: pages under I/O
    cannot be dropped."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return drop(*paths)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _read_pages(points: dict[str, list[int]]) -> None:
    for path, offsets in points.items():
        fd = os.open(path, os.O_RDONLY)
        try:
            for off in offsets:
                os.pread(fd, PAGE, off)
        finally:
            os.close(fd)


def test_points_are_library_pages_the_start_read(tmp_path) -> None:
    prof, paths = _profile(tmp_path)
    points = probe_points(prof)
    assert paths[3] not in points  # never the weights
    read = {(prof.files[i].path, off // PAGE) for i, o, n in prof.ranges
            for off in range(o, o + n, PAGE)}
    assert all((p, off // PAGE) in read and off % PAGE == 0
               for p, offs in points.items() for off in offs)
    # the library read most: its first, middle and last range
    assert {0, 4 * MiB, 7 * MiB} <= set(points[paths[0]])
    assert set(points) == {paths[0], paths[1], paths[2]}


def test_answer_follows_the_page_cache(tmp_path) -> None:
    prof, paths = _profile(tmp_path)
    assert libraries_resident(prof.key) is None  # no probe yet
    save_profile(prof)  # writes KEY.probe beside the profile
    assert os.path.isfile(probe_path(prof.key))
    drop(*paths)
    assert libraries_resident(prof.key) is False
    points = probe_points(prof)
    assert all(resident(p) == 0 for p in paths)  # the check read nothing
    _evict(*paths)
    _read_pages(points)
    assert libraries_resident(prof.key) is True
    drop(paths[2])  # one library evicted: not warm
    assert libraries_resident(prof.key) is False
    assert resident(paths[2]) == 0
    _evict(*paths)
    _read_pages(points)
    os.unlink(paths[1])  # a file gone: not warm either
    assert libraries_resident(prof.key) is False
    assert remove_profile(prof.key) and not os.path.exists(probe_path(prof.key))


def test_warm_start_skips_only_the_default_preload(tmp_path, monkeypatch) -> None:
    script = os.path.join(os.path.dirname(sys.executable), "transformers")
    if not os.path.exists(script):
        pytest.skip("transformers is not installed in this venv (the demo extra)")
    argv = [script, "serve", str(tmp_path / "model")]
    plan = build_plan(RunOptions(), argv, env={})
    assert plan.preload and plan.preload_default and plan.profile_key
    prof, paths = _profile(tmp_path, key=plan.profile_key)
    save_profile(prof)
    drop(*paths)
    assert preload_now(plan) == plan.preload  # cold: preload
    _read_pages(probe_points(prof))
    assert preload_now(plan) == ()  # warm: nothing to overlap
    asked = build_plan(RunOptions(preload=["torch"]), argv, env={})
    assert not asked.preload_default and preload_now(asked) == ("torch",)
