"""`headstart run` records a startup profile by itself, on real processes and files.

The target is a small server: it reads a library-like file, maps the model's weights and
touches every page, then listens on a TCP port until it is stopped. Nothing here is mocked:
fanotify (root) or maps sampling watch it, residency comes from the real page cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from _pagecache_util import MiB, drop, make_file, model_folder, resident
from _ports_util import LISTEN
from _procs_util import process_table

PY = sys.executable

SERVER = LISTEN + textwrap.dedent("""
    import mmap, os, socket, sys, time
    lib, weights = sys.argv[1], sys.argv[2]
    time.sleep(1.0)  # a server imports for a while; files read before the recorder is up
    with open(lib, "rb") as fh:                 # (~0.1 s) are not in the profile
        fh.read()
    fd = os.open(weights, os.O_RDONLY)
    m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    total = sum(m[i] for i in range(0, len(m), 4096))
    if sys.argv[3:4] == ["never"]:  # fails before it serves
        print("failed", flush=True)
        sys.exit(int(sys.argv[4]))
    s = listen()  # on a port a server would be told to use
    print("listening", s.getsockname()[1], flush=True)
    if len(sys.argv) > 5:  # busy to the end: a new file every 0.2 s, then exit
        for i in range(int(sys.argv[5])):
            open(f"{lib}.{i}", "w").close()
            time.sleep(0.2)
    else:
        time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 60)
    sys.exit(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
""")


@pytest.fixture
def setup(tmp_path):
    model, (weights,) = model_folder(tmp_path, "qwen2", [6 * MiB])
    lib = make_file(tmp_path / "library.py", 2 * MiB)
    server = tmp_path / "server.py"
    server.write_text(SERVER)
    cache = tmp_path / "cache"
    env = dict(os.environ, HEADSTART_CACHE=str(cache), XDG_RUNTIME_DIR="")
    env.pop("HEADSTART_DISABLE", None)
    return {"model": str(model), "weights": weights, "lib": lib, "server": str(server),
            "cache": cache, "env": env}


def _wait_helpers_gone(cache, seconds: float = 60) -> None:
    """Until no process with ``HEADSTART_CACHE=cache`` is left (the target has exited:
    what is left is its replay helper, which records); a fixed sleep would let a slow
    helper pass a "no profile" check before it wrote one."""
    want = f"HEADSTART_CACHE={cache}".encode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid, (*_rest, env) in process_table("HEADSTART_CACHE").items()
                if want in env]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"helpers of {cache} still running after {seconds} s: {left}")


def _profiles(cache) -> list[str]:
    folder = cache / "profiles"
    if not folder.is_dir():
        return []
    return sorted(str(folder / n) for n in os.listdir(folder)
                  if n.endswith(".json") and not n.endswith(".coverage.json")
                  and not n.startswith("."))


def _start(s, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "headstart", "run", "-v", "--model", s["model"], "--",
                             PY, s["server"], s["lib"], s["weights"], *args],
                            env=env or s["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_profile(cache, timeout: float = 30.0, newer_than: float = 0.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in _profiles(cache):
            if os.stat(p).st_mtime > newer_than:
                return p
        time.sleep(0.1)
    return None


def _until_recorded(proc: subprocess.Popen, cache, newer_than: float = 0.0
                    ) -> tuple[str, str]:
    """Wait until the server listens and its profile is written (after ``newer_than``),
    then stop it (SIGTERM): the profile's path and the server's stderr."""
    try:
        assert proc.stdout.readline().startswith("listening")
        path = _wait_for_profile(cache, newer_than=newer_than)
        assert path is not None, "no profile was recorded"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    return path, err


def test_a_start_without_a_profile_records_one(setup):
    from headstart.profiles.store import Profile

    proc = _start(setup)
    path, err = _until_recorded(proc, setup["cache"])
    assert proc.returncode == -signal.SIGTERM  # the target's own death, passed through
    assert "recorded startup profile" in err
    with open(path) as fh:
        profile = Profile.from_dict(json.load(fh))
    by_path = {f.path: f for f in profile.files}
    assert by_path[os.path.realpath(setup["lib"])].role == "library"
    w = by_path[os.path.realpath(setup["weights"])]
    assert w.role == "weights"
    index = profile.files.index(w)
    assert sum(n for i, _o, n in profile.ranges if i == index) == 6 * MiB  # whole
    lib_index = profile.files.index(by_path[os.path.realpath(setup["lib"])])
    # the library's ranges are what was resident when the recording ended; a reclaim daemon
    # (this VM's DAMON pageout) took a few pages of it before then on CI, and a reclaim only
    # removes, so what is missing is at most what is gone now (and small)
    recorded = sum(n for i, _o, n in profile.ranges if i == lib_index)
    gone_now = 2 * MiB - resident(setup["lib"])
    assert 2 * MiB - min(gone_now, 256 * 1024) <= recorded <= 2 * MiB
    # libraries come before weights in the replay order
    roles = [profile.files[i].role for i, _o, _n in profile.ranges]
    assert roles.index("weights") > roles.index("library")
    assert profile.stats["recorded_by"] == "headstart run"
    # from the recorder's start to its last new file before the quiet: after the server's
    # 1 s of "imports", before the recording was written
    assert 1.0 <= profile.stats["ready_seconds"] < 30, profile.stats


def test_a_target_that_exits_before_it_is_ready_leaves_no_profile(setup):
    proc = _start(setup, "never", "3")  # exits with status 3 before it listens
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert out.startswith("failed")
    _wait_helpers_gone(setup["cache"])  # it noticed the exit and wrote nothing
    assert _profiles(setup["cache"]) == []
    assert "no profile recorded: the target exited before it was ready" in err


def test_a_target_stopped_as_soon_as_it_listens_is_recorded(setup):
    """Listening on its port is the end of a start, however soon the target is stopped
    after it (a small model's first answer, then Ctrl-C, within one poll): exits 0 after
    0.3 s, before the 1 s quiet."""
    proc = _start(setup, "0.3", "0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.startswith("listening")
    assert _wait_for_profile(setup["cache"], timeout=15) is not None, err


def test_a_target_stopped_after_it_served_is_recorded_all_the_same(setup):
    """Never quiet (a new file every 0.2 s while it listens), then it exits, as a server
    stopped right after its first answer does: what it read is still in the page cache."""
    proc = _start(setup, "0", "0", "10")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.startswith("listening")
    path = _wait_for_profile(setup["cache"], timeout=15)
    assert path is not None, err
    from headstart.profiles.store import Profile

    with open(path) as fh:
        profile = Profile.from_dict(json.load(fh))
    paths = {f.path for f in profile.files}
    assert os.path.realpath(setup["lib"]) in paths
    assert os.path.realpath(setup["weights"]) in paths
    assert not any(p.startswith(setup["lib"] + ".") for p in paths)  # its outputs


def test_a_corrupt_profile_is_recorded_again_and_the_target_runs_as_usual(setup):
    first = _start(setup)
    try:
        first.stdout.readline()
        path = _wait_for_profile(setup["cache"])
        assert path
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    with open(path, "w") as fh:
        fh.write('{"format": 1, "key": tru')  # truncated
    second = _start(setup)
    again, _err = _until_recorded(second, setup["cache"], newer_than=os.stat(path).st_mtime)
    assert again == path
    assert second.returncode == -signal.SIGTERM
    from headstart.profiles.store import Profile

    with open(path) as fh:
        Profile.from_dict(json.load(fh))  # valid again


def test_a_poor_profile_is_replaced_the_old_one_kept_until_then(setup, monkeypatch):
    from headstart.profiles.coverage import Coverage, coverage_path

    monkeypatch.setenv("HEADSTART_CACHE", str(setup["cache"]))
    first = _start(setup)
    try:
        first.stdout.readline()
        path = _wait_for_profile(setup["cache"])
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    key = os.path.basename(path)[:-len(".json")]
    time.sleep(0.05)
    poor = Coverage(key=key, replayed_bytes=100 * MiB, target_read_bytes=200 * MiB,
                    created=time.time())
    with open(coverage_path(key), "w") as fh:  # what a poor replayed start left
        json.dump(poor.to_dict(), fh)
    written = os.stat(path).st_mtime
    second = _start(setup)
    try:
        second.stdout.readline()
        assert os.path.exists(path)  # kept while the new one is recorded
        assert _wait_for_profile(setup["cache"], newer_than=written) == path
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert "the target still read" in err  # -v says why it recorded again


def _stop(proc: subprocess.Popen) -> str:
    """SIGTERM the server once it listens; its stderr (the helper's -v lines included: it
    holds the pipe until it is done)."""
    try:
        assert proc.stdout.readline().startswith("listening")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    return err


def test_an_odd_recording_is_recorded_again_once_and_replayed_without_recording(setup):
    """A profile whose recording was odd (here: it says so) is not replayed but recorded
    again during the next start; that one is judged by its coverage only, so the start
    after it replays; with recording off, the odd one is replayed all the same."""
    first = _start(setup)
    path, _err = _until_recorded(first, setup["cache"])
    with open(path) as fh:
        doc = json.load(fh)
    doc["stats"]["doubt"] = "the recorder's event queue overflowed"
    with open(path, "w") as fh:
        json.dump(doc, fh)
    written = os.stat(path).st_mtime

    drop(setup["weights"], setup["lib"])  # a replay then reads (a warm start says nothing)
    off = _stop(_start(setup, env=dict(setup["env"], HEADSTART_AUTO_RECORD="0")))
    assert "profile replay" in off and "recording a startup profile" not in off, off
    assert os.stat(path).st_mtime == written

    again, err = _until_recorded(_start(setup), setup["cache"], newer_than=written)
    assert again == path
    assert ("recording a startup profile during this start (the recording was odd: the "
            "recorder's event queue overflowed)") in err, err
    with open(path) as fh:
        stats = json.load(fh)["stats"]
    assert stats["recorded_because"].startswith("the recording was odd")
    assert stats["doubt"] is None  # this recording lost nothing

    drop(setup["weights"], setup["lib"])
    third = _stop(_start(setup))
    assert "profile replay" in third and "recording a startup profile" not in third, third


def test_an_unwritable_profile_folder_harms_nothing(setup, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = dict(setup["env"], HEADSTART_CACHE=str(blocker / "cache"))
    proc = _start(setup, "2", "0", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.startswith("listening")
    assert "recording a profile failed" in err or "no profile recorded" in err


def test_auto_record_off(setup):
    env = dict(setup["env"], HEADSTART_AUTO_RECORD="0")
    proc = _start(setup, "3", "0", env=env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "recording" not in err
    assert _profiles(setup["cache"]) == []


def _trace_events(path) -> dict[str, list[dict]]:
    with open(path) as fh:
        data = json.load(fh)
    events: dict[str, list[dict]] = {}
    for e in data["traceEvents"] if isinstance(data, dict) else data:
        events.setdefault(e.get("name"), []).append(e)
    return events


def test_the_helper_keeps_the_targets_cpu_priority_until_the_libraries_are_asked(setup,
                                                                                 tmp_path):
    """A replay asks for the profile's libraries at the target's priority and drops to nice
    10 once they are all asked for; a first start (whole files, no libraries to ask) drops
    at once."""
    first_trace, second_trace = tmp_path / "first.json", tmp_path / "second.json"

    def start(trace) -> str:
        proc = subprocess.Popen(
            [PY, "-m", "headstart", "run", "-v", "--trace", str(trace), "--model",
             setup["model"], "--", PY, setup["server"], setup["lib"], setup["weights"], "1",
             "0"], env=setup["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        _wait_helpers_gone(setup["cache"])
        return err

    start(first_trace)
    assert _profiles(setup["cache"])
    first = _trace_events(first_trace)
    (niced,) = first["helper niced"]
    assert niced["ts"] <= first["prefetch readahead"][0]["ts"]
    assert "replay lead asked" not in first

    drop(setup["lib"], setup["weights"])
    err = start(second_trace)
    second = _trace_events(second_trace)
    assert "replay readahead" in second, err  # a cold replay, not a warm start
    (lead,), (niced,) = second["replay lead asked"], second["helper niced"]
    assert lead["args"]["bytes"] > 0
    assert lead["ts"] <= niced["ts"]
    assert niced["args"]["nice"] >= 10


def _touch_sampled_model(tmp_path):
    """A 12 MiB weight file (resident: just written) and a TouchSampler of this process's
    own page tables, with 4 MiB chunks."""
    from headstart.profiles.autorecord import TouchSampler

    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(12 * MiB))
    real = os.path.realpath(path)
    return path, real, TouchSampler(lambda: [os.getpid()], [real], chunk=4 * MiB)


def test_touch_sampler_keeps_the_order_the_page_tables_were_touched_in(tmp_path):
    """Two samples of this process's own mapping: the chunk touched first ranks first,
    a chunk never touched is not listed."""
    import mmap

    path, real, sampler = _touch_sampled_model(tmp_path)
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        _ = m[9 * MiB]  # chunk 2 first
        sampler.sample()
        _ = m[1 * MiB]  # then chunk 0
        sampler.sample()
        m.close()
    times = sampler.times()
    assert times.first[(real, 2)] == 0 and times.first[(real, 0)] == 1
    assert (real, 1) not in times.first and times.samples == 2


def test_touch_sampler_ranks_a_chunk_by_when_half_of_it_was_touched(tmp_path):
    """A loader that touches the first page of each tensor, then copies them in another
    order: the chunk copied first ranks first; the one only peeked at keeps its first
    touch."""
    import mmap

    path, real, sampler = _touch_sampled_model(tmp_path)
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        for c in range(3):
            _ = m[c * 4 * MiB]  # a peek at every chunk (it maps a 2 MiB folio: half of one)
        sampler.sample()
        _ = bytes(m[8 * MiB:12 * MiB])  # chunk 2 copied first
        sampler.sample()
        _ = bytes(m[0:4 * MiB])  # then chunk 0; chunk 1 only ever peeked at
        sampler.sample()
        m.close()
    times = sampler.times()
    assert times.first[(real, 2)] == 1 and times.first[(real, 0)] == 2
    assert times.first[(real, 1)] == 0


@pytest.mark.root
def test_a_full_disk_while_writing_the_profile_leaves_nothing_behind(setup, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(full)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        env = dict(setup["env"], HEADSTART_CACHE=str(full))
        proc = _start(setup, "3", "0", env=env)
        out, err = proc.communicate(timeout=60)
        _wait_helpers_gone(full)  # its failed write happens after the target is idle
        assert proc.returncode == 0 and out.startswith("listening")
        assert "recording a profile failed" in err and "No space left" in err
        folder = full / "profiles"
        left = os.listdir(folder) if folder.is_dir() else []
        assert left == []  # no profile, no temp file (the host lock lives in run/)
    finally:
        subprocess.run(["umount", str(full)], check=False)


EARLY = LISTEN + textwrap.dedent("""
    import mmap, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)  # mapped before anyone records: a torch library
    m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    total = sum(m[i] for i in range(0, 256 * 1024, 4096))  # its first 256 KiB
    s = listen()  # on a port a server would be told to use
    print("listening", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_a_library_mapped_before_the_recorder_listened_is_in_the_profile(tmp_path, monkeypatch):
    """A recorder armed late (the target was importing already) still records what the tree
    maps at readiness, by its touched pages, first in the order."""
    from headstart.profiles.autorecord import arm, record_live
    from headstart.profiles.store import load_profile

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    lib = make_file(tmp_path / "libearly.so", 4 * MiB)
    script = tmp_path / "early.py"
    script.write_text(EARLY)
    proc = subprocess.Popen([PY, str(script), lib, "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("listening")
        armed = arm(proc.pid)  # only now
        later = make_file(tmp_path / "later.json", 64 * 1024)
        path = record_live(proc.pid, key="generic-early-0123", identity={}, command=[],
                           quiet=0.5, limit=20, armed=armed)
    finally:
        proc.kill()
        proc.wait()
    assert path is not None
    profile = load_profile("generic-early-0123")
    by_path = {f.path: i for i, f in enumerate(profile.files)}
    index = by_path[os.path.realpath(lib)]
    got = sum(n for i, _o, n in profile.ranges if i == index)
    assert 256 * 1024 <= got < 4 * MiB  # its touched pages (read-around aside), not all
    assert os.path.realpath(later) not in by_path  # never opened by the tree
    if armed.recorder.mechanism == "fanotify":
        assert profile.stats["mapped_before_recorder"] >= 1


FIRST_LINE = LISTEN + textwrap.dedent("""
    import socket, sys, time
    with open(sys.argv[1], "rb") as fh:  # the target's very first read, closed at once
        fh.read()
    s = listen()  # on a port a server would be told to use
    print("listening", flush=True)
    time.sleep(30)
""")


@pytest.mark.root
def test_the_targets_first_read_is_recorded(setup, tmp_path):
    """As root, headstart run opens the fanotify group itself before the target runs: a file
    the target reads and closes on its first line is in the profile (a recorder armed by the
    helper listened only after such reads)."""
    if os.geteuid() != 0:
        pytest.skip("fanotify needs root")
    from headstart.profiles.store import Profile

    script = tmp_path / "first_line.py"
    script.write_text(FIRST_LINE)
    first = make_file(tmp_path / "first.json", 256 * 1024)
    proc = subprocess.Popen([PY, "-m", "headstart", "run", "-v", "--model", setup["model"],
                             "--", PY, str(script), first], env=setup["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path, _err = _until_recorded(proc, setup["cache"])
    with open(path) as fh:
        profile = Profile.from_dict(json.load(fh))
    assert profile.mechanism == "fanotify"
    assert os.path.realpath(first) in {f.path for f in profile.files}


LATE = LISTEN + textwrap.dedent("""
    import mmap, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    m[0]  # a page of the library touched while it starts
    s = listen()  # on a port a server would be told to use
    print("listening", flush=True)

    def spin(seconds):  # busy: a first request being served
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    spin(2.0)  # ready (listening, no new file) long before this
    m[2 * 1024 * 1024]  # the request reaches code the start did not
    spin(1.0)
    time.sleep(30)
""")


def test_pages_a_first_request_faults_after_readiness_are_in_the_profile(tmp_path,
                                                                         monkeypatch):
    """Ready comes when the tree listens and opens nothing new; the scan waits until its
    first request is done. A library page first touched in between is in the profile's
    ranges (replayed), not its tail."""
    from headstart.profiles.autorecord import arm, record_live
    from headstart.profiles.store import load_profile

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    lib = make_file(tmp_path / "liblate.so", 4 * MiB)
    drop(lib)
    script = tmp_path / "late.py"
    script.write_text(LATE)
    proc = subprocess.Popen([PY, str(script), lib], stdout=subprocess.PIPE, text=True)
    try:
        armed = arm(proc.pid)
        assert proc.stdout.readline().startswith("listening")
        t_listen = time.monotonic()
        path = record_live(proc.pid, key="generic-late-0123", identity={}, command=[],
                           quiet=0.5, limit=20, armed=armed)
        assert time.monotonic() - t_listen >= 2.0  # the scan waited for the "request"
    finally:
        proc.kill()
        proc.wait()
    assert path is not None
    profile = load_profile("generic-late-0123")
    index = [f.path for f in profile.files].index(os.path.realpath(lib))
    page = 2 * MiB
    replayed = [(o, n) for i, o, n in profile.ranges if i == index]
    assert any(o <= page < o + n for o, n in replayed), replayed
    assert any(o == 0 for o, _n in replayed)  # the start's own touch as well
    assert sum(n for _o, n in replayed) < 4 * MiB  # touched pages, not the whole file


INTERNAL_FIRST = LISTEN + textwrap.dedent("""
    import os, socket, sys, time
    marks = sys.argv[1]
    internal = socket.socket()  # a worker's RPC socket: bound as port 0, listening early
    internal.bind(("127.0.0.1", 0))
    internal.listen()
    open(os.path.join(marks, "internal"), "w").close()
    if sys.argv[3] == "read":  # loading one large shard from a slow disk: misses, no new file
        fd = os.open(sys.argv[4], os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: one page a read
        end = time.monotonic() + float(sys.argv[2])
        offset = 0
        while time.monotonic() < end:
            os.pread(fd, 1, offset)
            offset += 256 * 1024
            time.sleep(0.1)
    else:
        time.sleep(float(sys.argv[2]))  # loading a shard: no new file for a while
    open(os.path.join(marks, "shard-2"), "w").close()
    if sys.argv[3] == "serve":
        s = listen()
        open(os.path.join(marks, "served"), "w").close()
    time.sleep(60)
""")


def _watch(tmp_path, pause: float, mode: str, *args: str, **kw) -> tuple[str, set[str]]:
    """ReadyWatch on a real server script; what it returned and which marks existed then.
    ``reads=True``: the watch follows the script's own reads from the disk (as
    :func:`record_live` gives it), ``kw["reads"]`` is then that TreeReads."""
    from headstart.profiles.autorecord import ReadyWatch
    from headstart.watch.tree_io import TreeReads

    script, marks = tmp_path / "internal.py", tmp_path / "marks"
    script.write_text(INTERNAL_FIRST)
    marks.mkdir()
    proc = subprocess.Popen([PY, str(script), str(marks), str(pause), mode, *args])
    try:
        if kw.get("reads") is True:
            tree = kw["reads"] = TreeReads(proc.pid)
            tree.start()
            kw["reads"] = tree.total
        watch = ReadyWatch(proc.pid, lambda: len(os.listdir(marks)), limit=60, **kw)
        why = watch.wait()
        return why, set(os.listdir(marks))
    finally:
        proc.kill()
        proc.wait()


def test_a_port_bound_as_0_is_not_the_served_one(tmp_path):
    """A tree that listens early on an ephemeral port (vLLM's worker: TCPStore, gloo,
    ZeroMQ) and goes quiet while it loads is not ready: it is once it listens on the port
    it serves on and is quiet. Before, a shard that loaded for longer than the quiet period
    ended the recording with the later shards missing."""
    why, marks = _watch(tmp_path, 2.0, "serve", quiet=0.5, internal_quiet=30)
    assert why == "ready"
    assert {"internal", "shard-2", "served"} <= marks


def test_a_tree_with_only_internal_ports_is_ready_after_the_longer_quiet(tmp_path):
    """A server that serves on an ephemeral port only still ends its recording, after
    ``internal_quiet`` seconds with no new file (not the short ``quiet``)."""
    why, marks = _watch(tmp_path, 1.5, "internal", quiet=0.3, internal_quiet=3.0)
    assert why == "ready"
    assert marks == {"internal", "shard-2"}  # not ready within the 1.5 s pause


def test_a_tree_still_reading_its_shard_is_not_ready_on_internal_ports(tmp_path):
    """Internal ports only and no new file for longer than ``internal_quiet``, but the tree
    reads from the disk all the while (one large shard from a slow disk): not ready until
    those reads stop. Without the reads, ready 1 s into the 3 s of loading."""
    shard = make_file(tmp_path / "shard.safetensors", 16 * MiB)
    drop(shard)
    assert resident(shard) == 0
    why, marks = _watch(tmp_path, 3.0, "read", str(shard), quiet=0.3, internal_quiet=1.0,
                        reads=True)
    assert why == "ready"
    assert marks == {"internal", "shard-2"}  # it waited for the loading to end
    assert resident(shard) >= 10 * 4096  # the script did read the shard from the disk
