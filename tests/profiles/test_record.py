"""``headstart record`` on a tiny real Python target, then replay under ``headstart run``.

The target imports modules of a fixture package and reads two small parts of a 64 MiB
data file; a decoy file beside it is never read. Everything runs as real processes on the
real page cache (fixture files evicted with DONTNEED, residency by mincore/cachestat).
The Python installation is not evicted (``--no-evict-env``): tests must not make the
machine's other work cold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _pagecache_util import (
    MiB,
    assert_resident_runs,
    damon_paged_out,
    make_file,
    require_disk,
    resident,
)
from headstart.profiles.record import resident_runs
from headstart.profiles.store import list_profiles

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="fanotify needs root")

TARGET = """
import os, sys, time
sys.path.insert(0, {fixture!r})


def helpers():
    # headstart's replay helper of this process: after exec its argv names us as parent;
    # before exec (just forked) it still has our command line.
    mine = open("/proc/self/cmdline", "rb").read()
    tag = ('"parent": %d' % os.getpid()).encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % name, "rb").read()
        except OSError:
            continue
        if (b"replay_helper" in cmd and tag in cmd) or cmd == mine:
            out.append(name)
    return out


if os.environ.get("MODE") == "replay":
    # Wait for headstart's replay helper to finish, then exit without reading anything.
    if os.environ.get("EXPECT_HELPER") == "1":
        seen = helpers()
        assert seen, "no replay helper was started"
        while helpers():
            time.sleep(0.01)
    sys.exit(0)
import fixpkg
import fixpkg.second
with open({data!r}, "rb") as f:
    f.seek(1 * 2**20)
    f.read(65536)
    f.seek(40 * 2**20)
    f.read(4096)
"""


@pytest.fixture
def fixture(tmp_path, monkeypatch):
    require_disk(tmp_path)
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # replay must read what record saw
    fx = tmp_path / "fx"
    (fx / "fixpkg").mkdir(parents=True)
    (fx / "fixpkg" / "__init__.py").write_text("from . import first\n")
    (fx / "fixpkg" / "first.py").write_text("A = 1\n")
    (fx / "fixpkg" / "second.py").write_text("B = 2\n")
    (fx / "fixpkg" / "unused.py").write_text("C = 3\n")
    data = make_file(fx / "data.bin", 64 * MiB)
    decoy = make_file(fx / "decoy.bin", 8 * MiB)
    script = fx / "target.py"
    script.write_text(TARGET.format(fixture=str(fx), data=data))
    os.sync()
    return fx, script, data, decoy


def hs(*args: str, env: dict | None = None, rc: int = 0) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "headstart", *args], capture_output=True,
                         text=True, timeout=240, env=dict(os.environ, **(env or {})))
    assert out.returncode == rc, (out.returncode, out.stdout, out.stderr)
    return out


def _record(fx, script, mechanism="auto"):
    out = hs("record", "--until-exit", "--no-evict-env", "--evict", str(fx), "--json",
             "--mechanism", mechanism, "--", sys.executable, str(script),
             env={"MODE": "record"})
    summary = json.loads(out.stdout)
    [(key, prof)] = list_profiles()
    assert key == summary["key"] and prof is not None
    return prof


def _ranges_of(prof, path):
    return [(o, n) for i, o, n in prof.ranges if prof.files[i].path == os.path.realpath(path)]


def _covers(ranges, offset, length):
    return any(o <= offset and offset + length <= o + n for o, n in ranges)


def _check_recorded(prof, fx, script, data, decoy):
    order = [f.path for f in prof.files]
    wanted = [str(script), str(fx / "fixpkg" / "__init__.py"), str(fx / "fixpkg" / "first.py"),
              str(fx / "fixpkg" / "second.py"), data]
    pos = [order.index(os.path.realpath(p)) for p in wanted]
    assert pos == sorted(pos), f"first-touch order wrong: {pos}"
    assert os.path.realpath(decoy) not in order
    assert str(fx / "fixpkg" / "unused.py") not in order
    got = _ranges_of(prof, data)
    assert _covers(got, 1 * MiB, 65536) and _covers(got, 40 * MiB, 4096)
    # 16-32 MiB was never read (readahead here is at most 8 MiB past a read)
    assert not any(o < 32 * MiB and o + n > 16 * MiB for o, n in got)
    assert all(f.size > 0 and f.inode > 0 and f.mtime_ns > 0 for f in prof.files)


@root_only
@pytest.mark.slow
def test_record_then_replay_reads_exactly_the_recorded_ranges(fixture):
    fx, script, data, decoy = fixture
    prof = _record(fx, script)
    assert prof.mechanism == "fanotify"
    _check_recorded(prof, fx, script, data, decoy)

    # Cold again, then `headstart run` with the same command replays the profile while
    # the target only waits for the replay: whatever is resident now, replay read.
    hs("evict", str(fx))
    assert resident(data) == 0 and resident(decoy) == 0
    paged_out = damon_paged_out()
    hs("run", "--", sys.executable, str(script), env={"MODE": "replay", "EXPECT_HELPER": "1"})
    assert_resident_runs(data, _ranges_of(prof, data), paged_out)
    assert resident(decoy) == 0
    assert resident(fx / "fixpkg" / "second.py") > 0
    assert resident(fx / "fixpkg" / "unused.py") == 0

    # --no-profile (and HEADSTART_NO_PROFILE) read nothing for a model-less command.
    hs("evict", str(fx))
    hs("run", "--no-profile", "--", sys.executable, str(script), env={"MODE": "replay"})
    assert resident(data) == 0
    hs("run", "--", sys.executable, str(script), env={"MODE": "replay",
                                                       "HEADSTART_NO_PROFILE": "1"})
    assert resident(data) == 0


@root_only
@pytest.mark.slow
def test_replay_skips_a_changed_file(fixture):
    fx, script, data, _decoy = fixture
    prof = _record(fx, script)
    assert _ranges_of(prof, data)
    os.utime(data, ns=(1, 1))  # the data file "changed": its pages may have moved
    hs("evict", str(fx))
    hs("run", "--", sys.executable, str(script), env={"MODE": "replay", "EXPECT_HELPER": "1"})
    assert resident(data) == 0
    assert resident(fx / "fixpkg" / "second.py") > 0  # the rest is still replayed


@pytest.mark.slow
def test_record_without_fanotify_uses_maps_and_residency(fixture):
    if os.geteuid() != 0:
        pytest.skip("eviction of the fixture is checked; DONTNEED works unprivileged, but "
                    "mincore is trusted only for writable files")
    fx, script, data, decoy = fixture
    prof = _record(fx, script, mechanism="maps")
    assert prof.mechanism == "maps"
    got = _ranges_of(prof, data)
    assert _covers(got, 1 * MiB, 65536) and _covers(got, 40 * MiB, 4096)
    assert os.path.realpath(decoy) not in [f.path for f in prof.files]


def test_resident_runs_match_reads(tmp_path):
    require_disk(tmp_path)
    path = make_file(tmp_path / "f.bin", 16 * MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: exact pages
        os.pread(fd, 8192, 4 * MiB)
        os.pread(fd, 100, 10 * MiB + 10)
    finally:
        os.close(fd)
    assert resident_runs(path) == [(4 * MiB, 8192), (10 * MiB, 4096)]
    assert resident_runs(str(tmp_path / "f.bin")) == resident_runs(path)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert resident_runs(str(empty)) == []
    with pytest.raises(OSError):
        resident_runs(str(tmp_path / "missing"))


def _sampled_cold_shard(tmp_path):
    """A cold 16 MiB weight file, a WeightSampler of it (4 MiB chunks) and an fd that reads
    exactly what is asked (no readahead)."""
    from headstart.profiles.weights import WeightSampler

    require_disk(tmp_path)
    path = make_file(tmp_path / "w.safetensors", 16 * MiB)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    return path, WeightSampler([path], chunk=4 * MiB), fd


def test_weight_sampler_orders_chunks_by_first_residency(tmp_path):
    """A loader that reads the second half of a shard first is replayed in that order."""
    path, sampler, fd = _sampled_cold_shard(tmp_path)
    try:
        os.pread(fd, 4 * MiB, 12 * MiB)  # chunk 3 first
        sampler.sample()
        os.pread(fd, 4 * MiB, 8 * MiB)  # then chunk 2
        sampler.sample()
        os.pread(fd, 8 * MiB, 0)  # then chunks 0 and 1
        sampler.sample()
    finally:
        os.close(fd)
    order = sampler.order([(path, 0, 16 * MiB)], {path: 0})
    # it walked the file from its end: the two chunks of the last sample go last-first too
    assert order == [(path, 12 * MiB, 4 * MiB), (path, 8 * MiB, 4 * MiB),
                     (path, 4 * MiB, 4 * MiB), (path, 0, 4 * MiB)]


def test_weight_sampler_ranks_a_chunk_by_when_half_of_it_was_read(tmp_path):
    """A loader that reads one page at the start of every tensor before it copies them: the
    chunk it then copies first ranks first, not the chunks it only peeked into; a chunk
    never half read keeps the sample that first saw any of it."""
    path, sampler, fd = _sampled_cold_shard(tmp_path)
    try:
        for c in (0, 1, 3):
            os.pread(fd, 4096, c * 4 * MiB)  # a peek at chunks 0, 1 and 3
        sampler.sample()
        os.pread(fd, 4 * MiB, 12 * MiB)  # chunk 3 copied first
        sampler.sample()
        os.pread(fd, 4 * MiB, 0)  # then chunk 0; chunk 1 only ever peeked at
        sampler.sample()
    finally:
        os.close(fd)
    times = sampler.times()
    assert times.first[(path, 3)] == 1 and times.first[(path, 0)] == 2
    assert times.first[(path, 1)] == 0 and (path, 2) not in times.first
    order = sampler.order([(path, 0, 8 * MiB), (path, 12 * MiB, 4 * MiB)], {path: 0})
    assert order == [(path, 4 * MiB, 4 * MiB), (path, 12 * MiB, 4 * MiB), (path, 0, 4 * MiB)]


def test_chunk_bytes_splits_runs_at_chunk_boundaries():
    from headstart.profiles.weights import chunk_bytes

    assert chunk_bytes([(0, 10), (14, 4), (30, 1)], 8) == {0: 8, 1: 2 + 2, 2: 2, 3: 1}
    assert chunk_bytes([], 8) == {}


def test_pagemap_shows_only_touched_pages_of_a_mapping(tmp_path):
    """A process maps a cold 16 MiB file and touches two pages: the pagemap names those
    (plus at most the kernel's fault-around neighbours), while read-around made far more
    resident; trimming keeps the touched pages and the file's first 64 KiB."""
    from headstart.profiles.layout import trim_to_touched as _trim
    from headstart.profiles.pagemap import touched_pages

    require_disk(tmp_path)
    path = make_file(tmp_path / "lib.so", 16 * MiB)
    code = ("import mmap, sys\n"
            "f = open(sys.argv[1], 'rb')\n"
            "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
            "m[4 * 2**20]; m[10 * 2**20 + 5]\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        touched = touched_pages([proc.pid])[os.path.realpath(path)]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    pages = {i for i, bit in enumerate(touched) if bit}
    assert {1024, 2560} <= pages
    assert len(pages) <= 64  # fault-around maps at most 16 pages around each fault
    trimmed = _trim(resident_runs(path), touched)
    assert resident(path) > sum(n for _o, n in trimmed)  # read-around was trimmed away
    assert _covers(trimmed, 4 * MiB, 4096) and _covers(trimmed, 10 * MiB, 4096)
    assert not any(o < 8 * MiB and o + n > 6 * MiB for o, n in trimmed)


def test_trim_keeps_headers_and_touched_pages():
    from headstart.profiles.layout import trim_to_touched as _trim

    touched = bytearray(300)
    touched[100] = touched[101] = 1
    assert _trim([(0, MiB)], touched) == [(0, 65536), (100 * 4096, 8192)]
    assert _trim([(200 * 4096, 10 * 4096)], touched) == []


@root_only
@pytest.mark.slow
def test_exec_target_replays_from_the_detached_helper(fixture):
    """Interpreter options make `headstart run` exec the target; the detached helper
    replays the profile recorded for the same command."""
    fx, script, data, decoy = fixture
    cmd = [sys.executable, "-X", "utf8", str(script)]
    out = hs("record", "--until-exit", "--no-evict-env", "--evict", str(fx), "--json", "--",
             *cmd, env={"MODE": "record"})
    key = json.loads(out.stdout)["key"]
    [(stored, prof)] = list_profiles()
    assert stored == key
    hs("evict", str(fx))
    paged_out = damon_paged_out()
    hs("run", "--", *cmd, env={"MODE": "replay", "EXPECT_HELPER": "1"})
    assert_resident_runs(data, _ranges_of(prof, data), paged_out)
    assert resident(decoy) == 0


def test_cachestat_runs_agree_with_mincore_at_chunk_granularity(tmp_path):
    """The fallback for files mincore would lie about (not ours, not writable)."""
    from headstart.pagecache.residency import cachestat_runs as _cachestat_runs

    require_disk(tmp_path)
    path = make_file(tmp_path / "f.bin", 4 * MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        os.pread(fd, 4096, 65536 + 8192)  # one page inside the second chunk
        os.pread(fd, 3 * 65536, MiB)
        assert _cachestat_runs(fd, 4 * MiB) == [(65536, 65536), (MiB, 3 * 65536)]
    finally:
        os.close(fd)
    assert resident_runs(path) == [(65536 + 8192, 4096), (MiB, 3 * 65536)]


def test_record_keeps_its_logs_only_when_no_profile_was_written(tmp_path, monkeypatch):
    # `headstart record` without --out logs into a temporary folder: removed once a profile
    # is written, kept (and named) when the target never got ready
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    hs("record", "--until-exit", "--no-evict-env", "--", sys.executable, "-c", "pass", env=env)
    assert list(tmp.glob("headstart-record-*")) == []
    out = hs("record", "--until-exit", "--no-evict-env", "--", sys.executable, "-c",
             "import sys; print('said'); sys.exit(3)", env=env, rc=1)
    [kept] = list(tmp.glob("headstart-record-*"))
    assert str(kept) in out.stderr
    assert "said" in (kept / "stdout.log").read_text()


HOLD = """
import mmap, sys
maps = []
for path in sys.argv[1:]:
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
    sum(m[i] for i in range(0, len(m), 4096))  # every page mapped and present
    maps.append(m)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_a_recording_that_was_not_cold_is_noticed(fixture):
    """Another process maps the data file (and the decoy) through the whole recording, so
    the eviction leaves 72 MiB resident: ``headstart record`` says it was not a cold
    start, without -v, and the profile carries the doubt that makes the next ``headstart
    run`` record again (tests/profiles/test_autorecord.py)."""
    fx, script, data, decoy = fixture
    holder = subprocess.Popen([sys.executable, "-c", HOLD, data, decoy], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "held\n"
        out = hs("record", "--until-exit", "--no-evict-env", "--evict", str(fx), "--json",
                 "--", sys.executable, str(script), env={"MODE": "record"})
    finally:
        holder.communicate("", timeout=30)
    doubt = json.loads(out.stdout)["doubt"]
    assert doubt and "not a cold start" in doubt, out.stdout
    assert f"headstart record: warning: {doubt}" in out.stderr
    [(key, prof)] = list_profiles()
    assert prof.stats["doubt"] == doubt
    assert f"doubt       {doubt}" in hs("profiles", "show", key).stdout


@pytest.mark.slow
def test_a_cold_recording_has_no_doubt(fixture):
    fx, script, _data, _decoy = fixture
    out = hs("record", "--until-exit", "--no-evict-env", "--evict", str(fx), "--json", "--",
             sys.executable, str(script), env={"MODE": "record"})
    assert json.loads(out.stdout)["doubt"] is None
    assert "warning" not in out.stderr
