"""Disk throttling for `headstart bench --disk-bps`: a real cgroup, real processes.

Root-only tests skip elsewhere. No timing assertions: membership, limits written, and
cleanup (Ctrl-C included) are what is checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from headstart.bench import throttle as th
from headstart.errors import ThrottleError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _leftover_cgroups() -> list[str]:
    found: set[str] = set()
    for base in ("/sys/fs/cgroup/blkio", "/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for dirpath, dirnames, _ in os.walk(base):
            found.update(os.path.realpath(os.path.join(dirpath, d))
                         for d in dirnames if d.startswith(th.PREFIX))
            if dirpath.count("/") > 6:
                dirnames[:] = []
    return sorted(found)


def _usable() -> bool:
    try:
        with th.throttle_reads(10**9, __file__):
            return True
    except ThrottleError:
        return False


def test_device_of_path_is_a_whole_disk(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"x")
    try:
        dev = th.device_of(str(f))
    except ThrottleError as exc:  # tmpfs /tmp: the error must say why
        assert "block device" in str(exc)
        return
    major, minor = (int(x) for x in dev.split(":"))
    assert not os.path.exists(f"/sys/dev/block/{dev}/partition")
    assert th.device_of(dev) == dev
    assert th.device_of(os.makedev(major, minor)) == dev


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the non-root error")
def test_not_root_is_a_clear_error():
    with pytest.raises(ThrottleError, match="root"), th.throttle_reads(10**6, __file__):
        pass


@root_only
def test_child_joins_cgroup_and_cgroup_is_removed(tmp_path):
    if not _usable():
        pytest.skip("no usable blkio/io cgroup controller")
    before = _leftover_cgroups()
    with th.throttle_reads(123_000_000, __file__) as t:
        assert os.path.isdir(t.path)
        name = "blkio.throttle.read_bps_device" if t.version == 1 else "io.max"
        with open(os.path.join(t.path, name)) as f:
            text = f.read()
        assert t.devices[0] in text and "123000000" in text
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                preexec_fn=t.preexec_fn)
        try:
            with open(f"/proc/{proc.pid}/cgroup") as f:
                assert os.path.basename(t.path) in f.read()
            assert proc.pid in t.procs()
        finally:
            proc.kill()
            proc.wait()
        path = t.path
    assert not os.path.exists(path)
    assert _leftover_cgroups() == before


@root_only
def test_stale_cgroup_of_a_dead_owner_is_removed():
    if not _usable():
        pytest.skip("no usable blkio/io cgroup controller")
    _version, parent = th._pick_parent()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = os.path.join(parent, f"{th.PREFIX}{dead.pid}-1")
    if os.path.exists(f"/proc/{dead.pid}"):
        pytest.skip("pid reused already")
    os.mkdir(stale)
    try:
        with th.throttle_reads(10**9, __file__):
            assert not os.path.exists(stale)
    finally:
        if os.path.exists(stale):
            os.rmdir(stale)


@root_only
def test_bench_disk_bps_and_ctrl_c_leave_no_cgroup(tmp_path):
    if not _usable():
        pytest.skip("no usable blkio/io cgroup controller")
    before = _leftover_cgroups()
    marker = "hs-bench-throttle-" + os.urandom(6).hex()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(1 << 20))
    reader = tmp_path / "reader.py"
    reader.write_text("import sys, time\nopen(sys.argv[1], 'rb').read()\n"
                      "print('loaded', flush=True)\ntime.sleep(float(sys.argv[2]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = tmp_path / "out"
    # a full bench: cold eviction of the data file, throttled, ready by log line
    import importlib.util

    mode = "cold" if importlib.util.find_spec("headstart.pagecache.evict") else "warm"
    rc = subprocess.run(
        [sys.executable, "-m", "headstart", "bench", "--out", str(out), "--no-plot",
         "--runs", "1", "--modes", mode, "--no-headstart-variant", "--no-evict-env",
         "--evict", str(data), "--disk-bps", "200MB", "--ready-log", "^loaded",
         "--timeout", "60", "--", sys.executable, str(reader), str(data), "30", marker],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert rc.returncode == 0, rc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["throttle"]["read_bps"] == 200_000_000
    assert results["samples"][0]["ok"]
    assert _leftover_cgroups() == before
    assert _procs_with(marker) == []

    # Ctrl-C while a throttled run waits: no process, no cgroup left
    out2 = tmp_path / "out2"
    proc = subprocess.Popen(
        [sys.executable, "-m", "headstart", "bench", "--out", str(out2), "--no-plot",
         "--runs", "1", "--modes", "warm", "--no-warmup", "--no-headstart-variant",
         "--no-evict-env", "--evict", str(data), "--disk-bps", "200MB",
         "--ready-log", "never-printed", "--timeout", "120", "--",
         sys.executable, str(reader), str(data), "300", marker],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out2 / "warm" / "baseline" / "run-1" / "stdout.log").exists() or \
                b"loaded" not in (out2 / "warm" / "baseline" / "run-1" / "stdout.log").read_bytes():
            assert time.monotonic() < deadline, "target never started"
            time.sleep(0.05)
        assert len(_leftover_cgroups()) == len(before) + 1
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert _leftover_cgroups() == before
    assert "Interrupted" in (out2 / "report.md").read_text()
    assert _procs_with(marker) == []


def _procs_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    with open(f"/proc/{name}/stat", "rb") as g:
                        if g.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                            found.append(int(name))
        except (OSError, ValueError):
            continue
    return found
