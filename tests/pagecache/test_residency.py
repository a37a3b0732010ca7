"""residency() and evict() against the real page cache, cross-checked with fincore."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys

import pytest

from _pagecache_util import MiB, fincore_bytes, make_file, require_disk, resident
from headstart.pagecache import syscalls
from headstart.pagecache.evict import evict
from headstart.pagecache.ranges import Range, expand_paths
from headstart.pagecache.residency import residency


@pytest.fixture
def disk(tmp_path):
    require_disk(tmp_path)
    return tmp_path


def _read(path, n=None):
    """Read without readahead, so exactly these pages become resident (and are uptodate)."""
    with open(path, "rb", buffering=0) as fh:
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        fh.read() if n is None else fh.read(n)


def test_residency_matches_fincore(disk):
    a = make_file(disk / "a.bin", 4 * MiB)
    b = make_file(disk / "b.bin", 4 * MiB)
    _read(a)
    res = residency([a, b])
    assert [f.resident for f in res.files] == [4 * MiB, 0]
    assert res.resident == fincore_bytes(a, b) == 4 * MiB
    assert res.size == 8 * MiB and res.percent == 50.0
    assert res.exact == syscalls.cachestat_available() and res.trusted
    d = res.to_dict()
    assert d["total"]["resident"] == 4 * MiB and d["files"][0]["percent"] == 100.0


def test_residency_of_a_range_and_a_folder(disk):
    a = make_file(disk / "a.bin", 4 * MiB)
    (disk / "sub").mkdir()
    make_file(disk / "sub" / "c.bin", MiB)
    res = residency([Range(a, MiB, MiB)])
    assert res.files[0].size == MiB and res.files[0].resident == 0
    folder = residency(str(disk))
    assert [os.path.basename(f.path) for f in folder.files] == ["a.bin", "c.bin"]


def test_residency_errors_are_reported_not_raised(disk):
    (disk / "dangling").symlink_to(disk / "nowhere")
    os.mkfifo(disk / "fifo")
    res = residency([str(disk / "dangling"), str(disk / "fifo"), "/dev/null"])
    assert [f.error for f in res.files] == ["dangling symlink", "is a FIFO",
                                           "is a character device"]
    assert res.size == 0 and len(res.errors) == 3


def test_mincore_fallback_agrees_and_flags_trust(disk):
    a = make_file(disk / "a.bin", 2 * MiB)
    _read(a, MiB)
    fd = os.open(a, os.O_RDONLY)
    try:
        by_mincore = syscalls.mincore_resident(fd, 0, 2 * MiB)
        cs = syscalls.cachestat(fd)
    finally:
        os.close(fd)
    if cs is not None:
        assert by_mincore == cs.nr_cache * syscalls.PAGE_SIZE
    assert by_mincore == MiB
    st = os.stat(a)
    assert syscalls.mincore_trusted(st)  # we own it


def test_mincore_untrusted_for_unwritable_file(disk):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    a = make_file(disk / "ro.bin", MiB)
    os.chmod(a, 0o644)
    os.chmod(disk, 0o755)
    os.chmod(disk.parent, 0o755)
    os.chmod(disk.parent.parent, 0o755)
    code = (
        "import os, json\n"
        "from headstart.pagecache import syscalls\n"
        "from headstart.pagecache import residency as r\n"
        "import headstart.pagecache.pathcheck\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "syscalls._cachestat_ok = False  # take the mincore path\n"
        f"f = r.residency([{a!r}]).files[0]\n"
        "print(json.dumps([f.exact, f.trusted, f.resident, f.error]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    exact, trusted, res, error = __import__("json").loads(out.stdout)
    assert error is None and exact is False and trusted is False
    assert res == MiB  # Linux >= 5.2: mincore claims every page of it is resident
    assert resident(a) == 0  # ... while cachestat knows none is


def test_evict_drops_pages(disk):
    a = make_file(disk / "a.bin", 4 * MiB)
    _read(a)
    assert resident(a) == 4 * MiB
    result = evict(str(disk))
    assert result.before == 4 * MiB and result.after == 0 and result.evicted == 4 * MiB
    assert fincore_bytes(a) == 0
    assert result.files[0].reasons == ()
    assert result.to_dict()["total"]["evicted"] == 4 * MiB


def test_evict_says_why_mapped_pages_stay(disk):
    a = make_file(disk / "a.bin", MiB)
    with open(a, "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as m:
        m.madvise(mmap.MADV_WILLNEED) if hasattr(m, "madvise") else None
        _ = sum(m[i] for i in range(0, MiB, syscalls.PAGE_SIZE))  # fault every page in
        result = evict([a])
        f = result.files[0]
        assert f.after > 0
        assert any(f"pid {os.getpid()}" in r for r in f.reasons), f.reasons


def test_evict_says_why_dirty_pages_stay(disk):
    path = disk / "dirty.bin"
    with open(path, "wb") as fh:
        fh.write(os.urandom(MiB))
        fh.flush()  # no fsync: the pages are dirty
        result = evict([str(path)])
    f = result.files[0]
    if f.after == 0:
        pytest.skip("the kernel wrote the pages back before we looked")
    assert any("dirty" in r or "writeback" in r for r in f.reasons), f.reasons


def test_evict_on_tmpfs_explains(tmp_path):
    shm = "/dev/shm"
    if syscalls.fs_type(shm) != 0x01021994:
        pytest.skip("no tmpfs at /dev/shm")
    path = os.path.join(shm, f"headstart-test-{os.getpid()}")
    try:
        with open(path, "wb") as fh:
            fh.write(b"x" * MiB)
        f = evict([path]).files[0]
        assert f.after == MiB
        assert any("tmpfs" in r for r in f.reasons)
    finally:
        os.unlink(path)


def test_evict_errors_are_reported(disk):
    result = evict([str(disk / "missing")])
    assert result.files[0].error.startswith("no such file")


def test_expand_paths_sorted_without_symlinked_folders(disk):
    (disk / "b").mkdir()
    (disk / "b" / "z.bin").write_bytes(b"z")
    (disk / "a.bin").write_bytes(b"a")
    (disk / "b" / "loop").symlink_to(disk)
    (disk / "link.bin").symlink_to(disk / "a.bin")
    names = [os.path.relpath(p, disk) for p in expand_paths(str(disk))]
    assert names == ["a.bin", "b/z.bin", "link.bin"]
    assert expand_paths([str(disk / "a.bin"), "missing"]) == [str(disk / "a.bin"), "missing"]
