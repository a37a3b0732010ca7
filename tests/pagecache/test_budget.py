"""Available memory and budgets: cgroup v1 and v2 from fixture files, and the real machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from headstart.errors import InvalidSizeError
from headstart.pagecache.budget import available_memory, memory_budget, resolve_budget

GiB, MiB = 2**30, 2**20


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path, *, cgroup: str, mountinfo: str, mem_available_kb: int):
    proc = tmp_path / "proc"
    _write(proc / "self" / "cgroup", cgroup)
    _write(proc / "self" / "mountinfo", mountinfo)
    _write(proc / "meminfo", f"MemTotal:       33554432 kB\nMemFree:         1000 kB\n"
                             f"MemAvailable:   {mem_available_kb} kB\n")
    return str(proc)


def _v2(tmp_path, *, leaf_max="1073741824", parent_max="max", mem_kb=8 * 2**20):
    cg = tmp_path / "cg2"
    leaf = cg / "user.slice" / "app.service"
    _write(cg / "memory.stat", "anon 0\n")
    _write(cg / "user.slice" / "memory.max", parent_max + "\n")
    _write(cg / "user.slice" / "memory.current", str(3 * GiB) + "\n")
    _write(cg / "user.slice" / "memory.stat", f"anon 1\ninactive_file {GiB}\n")
    _write(leaf / "memory.max", leaf_max + "\n")
    _write(leaf / "memory.current", str(600 * MiB) + "\n")
    _write(leaf / "memory.stat", f"anon {400 * MiB}\nactive_file {50 * MiB}\n"
                                 f"inactive_file {100 * MiB}\n")
    return _proc(
        tmp_path,
        cgroup="0::/user.slice/app.service\n",
        mountinfo=(f"22 1 253:0 / / rw,relatime - ext4 /dev/vda rw\n"
                   f"30 22 0:26 / {cg} rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate\n"),
        mem_available_kb=mem_kb,
    )


def test_cgroup_v2_limit_minus_usage_plus_inactive_file(tmp_path):
    avail = available_memory(_v2(tmp_path))
    assert avail.cgroup_version == 2
    assert avail.cgroup_limit == GiB
    assert avail.available == GiB - 600 * MiB + 100 * MiB
    assert avail.cgroup_path.endswith("app.service")
    assert json.dumps(avail.to_dict())


def test_cgroup_v2_tighter_parent_wins(tmp_path):
    # parent: 3.5 GiB limit, 3 GiB used, 1 GiB inactive file -> 1.5 GiB; leaf unlimited
    avail = available_memory(_v2(tmp_path, leaf_max="max", parent_max=str(3 * GiB + GiB // 2)))
    assert avail.available == GiB + GiB // 2
    assert avail.cgroup_path.endswith("user.slice")


def test_cgroup_v2_unlimited_falls_back_to_memavailable(tmp_path):
    avail = available_memory(_v2(tmp_path, leaf_max="max", mem_kb=4 * 2**20))
    assert avail.available == 4 * GiB
    assert avail.cgroup_available is None
    assert any("no memory limit" in n for n in avail.notes)


def test_memavailable_smaller_than_cgroup(tmp_path):
    assert available_memory(_v2(tmp_path, mem_kb=100 * 1024)).available == 100 * MiB


def _v1(tmp_path, *, limit: int, usage: int, inactive: int, mem_kb=8 * 2**20):
    mnt = tmp_path / "memory"
    # a container without a cgroup namespace: mount root is its own cgroup
    _write(mnt / "memory.limit_in_bytes", f"{limit}\n")
    _write(mnt / "memory.usage_in_bytes", f"{usage}\n")
    _write(mnt / "memory.stat", f"cache 1\ninactive_file 7\ntotal_inactive_file {inactive}\n"
                                f"hierarchical_memory_limit {limit}\n")
    return _proc(
        tmp_path,
        cgroup="12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n",
        mountinfo=(f"600 500 0:50 / / rw - overlay overlay rw\n"
                   f"610 600 0:32 /docker/abc {mnt} ro,nosuid - cgroup cgroup rw,memory\n"
                   f"611 600 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"),
        mem_available_kb=mem_kb,
    )


def test_cgroup_v1_from_fixture(tmp_path):
    proc = _v1(tmp_path, limit=2 * GiB, usage=GiB + GiB // 2, inactive=256 * MiB)
    avail = available_memory(proc)
    assert avail.cgroup_version == 1
    assert avail.available == GiB // 2 + 256 * MiB
    assert memory_budget(0.5, proc_root=proc) == (GiB // 2 + 256 * MiB) // 2
    assert resolve_budget("auto", proc_root=proc) == int(avail.available * 0.8)
    assert resolve_budget("25%", proc_root=proc) == int(avail.available * 0.25)


def test_cgroup_v1_unlimited(tmp_path):
    proc = _v1(tmp_path, limit=9223372036854771712, usage=GiB, inactive=0, mem_kb=2**20)
    assert available_memory(proc).available == GiB


def test_no_cgroup_files_at_all(tmp_path):
    proc = tmp_path / "proc"
    _write(proc / "meminfo", "MemAvailable: 1024 kB\n")
    avail = available_memory(str(proc))
    assert avail.available == 1024 * 1024 and avail.cgroup_version is None


def test_resolve_budget_forms():
    assert resolve_budget(12345) == 12345
    assert resolve_budget("16MiB") == 16 * MiB
    assert resolve_budget(None) is None and resolve_budget("none") is None
    for bad in ("lots", "0%", "150%", -1, 1.5, True):
        with pytest.raises(InvalidSizeError):
            resolve_budget(bad)


def _meminfo_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable")


def test_real_machine():
    avail = available_memory()
    real = _meminfo_available()
    assert 0 < avail.available <= real * 1.05 + 64 * MiB
    assert avail.cgroup_version in (1, 2, None)
    assert 0 < memory_budget() < avail.available


def _own_v1_memory_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _h, ctrls, path = line.rstrip("\n").split(":", 2)
                if "memory" in ctrls.split(","):
                    folder = "/sys/fs/cgroup/memory" + path
                    return folder if os.path.isdir(folder) else None
    except OSError:
        return None
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a cgroup")
def test_real_cgroup_v1_limit_is_seen():
    parent = _own_v1_memory_cgroup()
    if parent is None or not os.path.exists(os.path.join(parent, "memory.limit_in_bytes")):
        pytest.skip("no cgroup v1 memory controller here")
    child = os.path.join(parent, f"headstart-budget-test-{os.getpid()}")
    os.mkdir(child)
    try:
        with open(os.path.join(child, "memory.limit_in_bytes"), "w") as fh:
            fh.write(str(512 * MiB))
        code = ("import json; from headstart.pagecache.budget import available_memory; "
                "print(json.dumps(available_memory().to_dict()))")
        procs = os.path.join(child, "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))

        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             preexec_fn=join, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["cgroup_version"] == 1
        assert doc["cgroup_limit"] == 512 * MiB
        assert 0 < doc["available"] <= 512 * MiB
    finally:
        for _ in range(50):
            try:
                os.rmdir(child)
                break
            except OSError:
                import time

                time.sleep(0.1)
