"""Profile store, keys, stale-file detection and the ``headstart profiles`` CLI.

Real files in tmp_path, real stat results, real subprocesses for the CLI; no root needed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from headstart.pagecache.ranges import Range
from headstart.plan import RunOptions, build_plan
from headstart.profiles import store
from headstart.profiles.key import identity_for, key_for, profile_key
from headstart.profiles.store import FileEntry, Profile, load_profile, save_profile, validate


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entry(path, role="library") -> FileEntry:
    st = os.stat(path)
    return FileEntry(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                     inode=st.st_ino, role=role)


def _profile(tmp_path, n=3, key="generic-x-0123") -> Profile:
    files = []
    tmp_path = tmp_path / key
    tmp_path.mkdir(exist_ok=True)
    for i in range(n):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(8192 * (i + 1)))
        files.append(_entry(p, "weights" if i == n - 1 else "library"))
    ranges = [(i, 0, 4096) for i in range(n)] + [(0, 4096, 4096)]
    return Profile(key=key, identity={"adapter": "generic"}, files=files, ranges=ranges,
                   command=["python", "x.py"], dists={}, mechanism="fanotify")


def test_save_load_roundtrip_mode_0600_and_atomic(tmp_path, cache):
    prof = _profile(tmp_path)
    path = save_profile(prof)
    assert path == os.path.join(str(cache), "profiles", prof.key + ".json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = load_profile(prof.key)
    assert back is not None
    assert back.ranges == prof.ranges and back.files == prof.files
    assert back.created > 0
    # A write that fails half-way leaves the old profile and no temp file behind.
    bad = _profile(tmp_path)
    bad.stats = {"unserialisable": object()}
    with pytest.raises(TypeError):
        save_profile(bad)
    assert load_profile(prof.key).ranges == prof.ranges
    assert sorted(os.listdir(os.path.dirname(path))) == [prof.key + ".json",
                                                         prof.key + ".probe"]
    assert stat.S_IMODE(os.stat(path[:-5] + ".probe").st_mode) == 0o600
    # replacing keeps mode 0600 whatever the umask
    old = os.umask(0)
    try:
        save_profile(_profile(tmp_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_load_missing_or_corrupt_is_none(cache):
    assert load_profile("nope") is None
    os.makedirs(cache / "profiles")
    (cache / "profiles" / "broken.json").write_text("{not json")
    assert load_profile("broken") is None
    with pytest.raises(ValueError):
        store.profile_path("../escape")


def test_key_changes_with_interpreter_model_revision_not_port():
    a = identity_for("transformers", "org/m", None, ["transformers", "serve", "--port", "1"],
                     "/venv1/bin/python")
    same = identity_for("transformers", "org/m", None, ["transformers", "serve", "--port", "2"],
                        "/venv1/bin/python")
    assert key_for(a) == key_for(same)
    for other in (
        identity_for("transformers", "org/m", None, ["t"], "/venv2/bin/python"),
        identity_for("transformers", "org/other", None, ["t"], "/venv1/bin/python"),
        identity_for("transformers", "org/m", "v2", ["t"], "/venv1/bin/python"),
        identity_for("vllm", "org/m", None, ["t"], "/venv1/bin/python"),
    ):
        assert key_for(other) != key_for(a)
    # without a model, the command is what determines the reads
    s1 = identity_for("generic", None, None, ["python", "a.py"], "/p")
    s2 = identity_for("generic", None, None, ["python", "b.py"], "/p")
    assert key_for(s1) != key_for(s2)
    assert "/" not in key_for(a) and key_for(a).startswith("transformers-m-")


def test_plan_key_matches_record_side_and_no_profile_switch(monkeypatch):
    argv = [sys.executable, "-c", "pass"]
    plan = build_plan(RunOptions(), argv, env={})
    assert plan.profile_key == profile_key(plan)[0]
    assert build_plan(RunOptions(no_profile=True), argv, env={}).profile_key is None
    assert build_plan(RunOptions(), argv, env={"HEADSTART_NO_PROFILE": "1"}).profile_key is None
    assert build_plan(RunOptions(no_prefetch=True), argv, env={}).profile_key is None


def test_validate_splits_in_order_and_drops_changed_files(tmp_path):
    prof = _profile(tmp_path, n=4)
    ok = validate(prof)
    assert ok.usable
    assert [r.path for r in ok.libraries] == [prof.files[i].path for i in (0, 1, 2, 0)]
    assert ok.weights == [Range(prof.files[3].path, 0, 4096)]
    # one file rewritten with the same size: new mtime -> its ranges are dropped
    os.utime(prof.files[1].path, ns=(1, 1))
    checked = validate(prof)
    assert checked.usable and checked.stale_files == [prof.files[1].path]
    assert prof.files[1].path not in [r.path for r in checked.libraries]
    # a replaced file (new inode) counts as changed too
    p0 = prof.files[0].path
    with open(p0, "rb") as fh:
        data = fh.read()
    with open(p0 + ".new", "wb") as fh:  # made while the old one exists: a new inode
        fh.write(data)
    os.utime(p0 + ".new", ns=(prof.files[0].mtime_ns, prof.files[0].mtime_ns))
    os.replace(p0 + ".new", p0)
    checked = validate(prof)
    assert p0 in checked.stale_files
    # most bytes changed: the whole profile is refused
    os.unlink(prof.files[2].path)
    checked = validate(prof)
    assert not checked.usable and "changed" in checked.reason


def test_tail_round_trips_validates_and_can_be_placed_before_the_weights(tmp_path, cache):
    """The tail (read-around of mapped libraries) is stored, dropped for a changed file
    like any range, absent from profiles written before it existed, and read between the
    libraries and the weights when placed there."""
    prof = _profile(tmp_path, n=3)
    prof.tail = [(0, 8192, 4096), (1, 12288, 4096)]
    save_profile(prof)
    back = load_profile(prof.key)
    assert back is not None and back.tail == prof.tail
    checked = validate(back)
    assert checked.tail == [Range(prof.files[0].path, 8192, 4096),
                            Range(prof.files[1].path, 12288, 4096)]
    from headstart.profiles.replay import stream

    assert stream(checked, "before")[0] == checked.libraries + checked.tail + checked.weights
    assert checked.bytes == sum(n for _i, _o, n in prof.ranges) + 8192
    os.utime(prof.files[1].path, ns=(1, 1))
    assert validate(back).tail == [Range(prof.files[0].path, 8192, 4096)]
    old = prof.to_dict()
    del old["tail"]
    assert Profile.from_dict(old).tail == []


def test_replay_stream_places_the_tail_as_asked():
    """``stream``: the ranges in order and how many precede the weights, for each place of
    the tail; inline merges a file's tail with its pages in offset order."""
    from headstart.profiles.replay import stream
    from headstart.profiles.store import Validated

    a0, a2, b0 = Range("a", 0, 10), Range("a", 20, 10), Range("b", 0, 10)
    w = Range("w", 0, 99)
    a1, c0 = Range("a", 10, 10), Range("c", 0, 5)
    v = Validated(True, libraries=[a0, a2, b0], weights=[w], tail=[c0, a1])
    assert stream(v) == stream(v, "off") == ([a0, a2, b0, w], 3)
    assert stream(v, "before") == ([a0, a2, b0, c0, a1, w], 5)
    assert stream(v, "after") == ([a0, a2, b0, w, c0, a1], 3)
    assert stream(v, "inline") == ([a0, a1, a2, b0, c0, w], 5)


def test_validate_refuses_other_snapshot_and_changed_packages(tmp_path):
    from headstart.models.snapshot import Snapshot

    prof = _profile(tmp_path)
    prof.snapshot = {"root": "/models/a", "commit": "abc", "source": "hf"}
    assert validate(prof, Snapshot(ref="a", root="/models/a", files=(), commit="abc")).usable
    other = validate(prof, Snapshot(ref="a", root="/models/a", files=(), commit="def"))
    assert not other.usable and "def" in other.reason
    site = tmp_path / "site"
    (site / "torch-2.0.dist-info").mkdir(parents=True)
    prof.dists = store.dist_names([str(site)])
    assert prof.dists == {str(site): ["torch-2.0.dist-info"]}
    assert validate(prof).usable
    os.rename(site / "torch-2.0.dist-info", site / "torch-2.1.dist-info")
    assert not validate(prof).usable


def hs(*args: str, rc: int = 0) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "headstart", *args], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == rc, (out.returncode, out.stdout, out.stderr)
    return out


def test_profiles_cli(tmp_path, cache):
    assert "no profiles" in hs("profiles", "list").stdout
    assert json.loads(hs("profiles", "--json", "list").stdout) == []
    assert "no profile" in hs("profiles", "show", "missing", rc=1).stderr
    hs("profiles", "rm", "missing", rc=1)
    hs("profiles", "rm", rc=2)
    prof = _profile(tmp_path)
    save_profile(prof)
    save_profile(_profile(tmp_path, key="generic-y-4567"))
    listed = hs("profiles", "list").stdout
    assert prof.key in listed and "generic-y-4567" in listed
    shown = json.loads(hs("profiles", "--json", "show", prof.key, "--ranges").stdout)
    assert shown["valid"] is True and shown["files"] == 3
    assert shown["ranges"][0] == [prof.files[0].path, 0, 4096]
    os.unlink(prof.files[0].path)
    text = hs("profiles", "show", prof.key).stdout
    assert "changed" in text and prof.files[0].path in text
    assert "removed" in hs("profiles", "rm", prof.key).stdout
    assert load_profile(prof.key) is None
    assert "removed 1 profile" in hs("profiles", "rm", "--all").stdout
    assert store.list_profiles() == []


def test_looks_resident_only_when_every_sampled_range_is_cached(tmp_path):
    from _pagecache_util import require_disk
    from headstart.pagecache.evict import evict
    from headstart.profiles.replay import looks_resident

    require_disk(tmp_path)
    prof = _profile(tmp_path, n=4)
    for f in prof.files:
        with open(f.path, "rb") as fh:
            fh.read()
    checked = validate(prof)
    assert looks_resident(checked)
    os.sync()  # dirty pages cannot be dropped
    evict([prof.files[3].path])  # the weights file
    assert not looks_resident(checked)


@pytest.mark.parametrize("method", ["readahead", "engine"])
def test_replay_reads_exactly_the_ranges_with_either_method(tmp_path, monkeypatch, method):
    from _pagecache_util import MiB, drop, make_file, require_disk, resident
    from headstart.profiles.record import resident_runs
    from headstart.profiles.replay import replay
    from headstart.profiles.store import Validated

    require_disk(tmp_path)
    monkeypatch.setenv("HEADSTART_REPLAY_METHOD", method)
    monkeypatch.setenv("HEADSTART_REPLAY_TAIL", "before")  # the tail is read too
    lib = make_file(tmp_path / "lib.so", 3 * MiB)
    weights = make_file(tmp_path / "model.safetensors", 48 * MiB)
    drop(lib, weights)
    checked = Validated(True, libraries=[Range(lib, 0, MiB)],
                        weights=[Range(weights, 0, 12 * MiB), Range(weights, 40 * MiB, MiB)],
                        tail=[Range(lib, MiB, None)])
    calls: list[float] = []

    def imports_done(timeout: float) -> bool:
        calls.append(timeout)
        return True

    handles = replay(checked, imports_done=imports_done)
    try:
        assert [h.stats.bytes_read for h in handles] == [3 * MiB + 13 * MiB]
        assert resident(lib) == 3 * MiB
        assert resident_runs(weights) == [(0, 12 * MiB), (40 * MiB, MiB)]
        # the readahead replay asks once, at the first weight chunk, and is released
        assert calls == ([0.0] if method == "readahead" else [])
    finally:
        drop(lib, weights)


def test_a_resident_profile_is_not_validated_file_by_file(tmp_path):
    """Warm start: the helper's residency check comes before the stat of every file, so a
    changed-but-resident file does not make it fall back to a whole-file read."""
    from _pagecache_util import require_disk
    from headstart.pagecache.evict import evict
    from headstart.profiles.model_prefetch import replay_profile
    from headstart.trace import tracer

    require_disk(tmp_path)
    prof = _profile(tmp_path, n=4, key="generic-warm-0123")
    save_profile(prof)
    for f in prof.files:
        with open(f.path, "rb") as fh:
            fh.read()
    os.utime(prof.files[0].path, ns=(1, 1))  # stale by mtime, still resident
    assert validate(prof).stale_files == [prof.files[0].path]
    assert replay_profile(prof.key, [], cache_dir=None, hub="auto")
    lookup = [e for e in tracer.events() if e["name"] == "profile lookup"][-1]
    assert lookup["args"].get("resident") is True and "usable" not in lookup["args"]

    os.sync()
    evict([f.path for f in prof.files])  # cold: now it is validated (and replayed)
    assert replay_profile(prof.key, [], cache_dir=None, hub="auto")
    lookup = [e for e in tracer.events() if e["name"] == "profile lookup"][-1]
    assert "resident" not in lookup["args"] and lookup["args"]["stale_files"] == 1


def test_a_nearly_warm_profile_reads_back_what_was_reclaimed_and_watches_nothing(tmp_path):
    """A warm start whose page cache lost a few pages since (DAMON pageout): the missing
    pages are read back (from files still as recorded), with no coverage watch."""
    from _pagecache_util import MiB, make_file, require_disk, resident
    from headstart.profiles.model_prefetch import replay_profile
    from headstart.trace import tracer

    require_disk(tmp_path)
    prof = _profile(tmp_path, n=2, key="generic-nearly-0123")
    weights = make_file(tmp_path / "model.safetensors", 32 * MiB)
    st = os.stat(weights)
    prof.files[1] = FileEntry(path=weights, size=st.st_size, mtime_ns=st.st_mtime_ns,
                              inode=st.st_ino, role="weights")
    prof.ranges = [(0, 0, 4096), (1, 0, 32 * MiB)]
    save_profile(prof)
    for f in prof.files:
        with open(f.path, "rb") as fh:
            fh.read()
    fd = os.open(weights, os.O_RDONLY)
    os.posix_fadvise(fd, 8 * MiB, 256 * 1024, os.POSIX_FADV_DONTNEED)  # 0.8 % reclaimed
    os.close(fd)
    assert resident(weights) == 32 * MiB - 256 * 1024
    assert replay_profile(prof.key, [], cache_dir=None, hub="auto", target=os.getpid())
    lookup = [e for e in tracer.events() if e["name"] == "profile lookup"][-1]
    assert lookup["args"]["nearly_warm"] == 256 * 1024 and lookup["args"]["usable"]
    assert resident(weights) == 32 * MiB
    assert not os.path.exists(str(tmp_path / "cache" / "profiles" / (prof.key +
                                                                     ".coverage.json")))


def test_profile_key_names_the_installation_not_the_interpreter_alias(tmp_path):
    """python, python3 and python3.11 of one venv read the same files: one profile."""
    from headstart.profiles.key import identity_for, key_for

    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    real = tmp_path / "python3.11"
    real.write_text("")
    for name in ("python", "python3", "python3.11"):
        (venv / name).symlink_to(real)
    keys = {key_for(identity_for("transformers", "/m", None, [], str(venv / name)))
            for name in ("python", "python3", "python3.11")}
    assert len(keys) == 1
    other = tmp_path / "other" / "bin"
    other.mkdir(parents=True)
    (other / "python").symlink_to(real)
    assert key_for(identity_for("transformers", "/m", None, [], str(other / "python"))) \
        not in keys
