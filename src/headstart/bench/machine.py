"""A description of the machine a benchmark ran on, for its JSON report.

Numbers without the machine are not comparable: CPUs, memory (and the cgroup limit, which
the page cache counts against), kernel, the disk that holds the files, Python, GPUs.
Every probe here is best-effort: a field it cannot read is left out, never an error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable

__all__ = ["block_device", "machine_info"]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return None


def _meminfo_bytes(key: str) -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith(key + ":"):
            parts = line.split()
            with contextlib.suppress(ValueError, IndexError):
                return int(parts[1]) * 1024
    return None


def _cgroup_memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = _read(path)
        if text and text != "max":
            with contextlib.suppress(ValueError):
                value = int(text)
                if value < 1 << 60:  # v1 reports "no limit" as a huge number
                    return value
    return None


def _mount_of(path: str) -> tuple[str, str, str] | None:
    """(mount point, fs type, source) of the longest mount that contains ``path``."""
    best = None
    real = os.path.realpath(path)
    for line in (_read("/proc/self/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        source, point, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        if (real == point or real.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) > len(best[0])
        ):
            best = (point, fstype, source)
    return best


def block_device(path: str) -> dict | None:
    """The block device holding ``path``: name, MAJ:MIN, whole disk, model, rotational.

    For a partition the whole disk is reported too (``disk``), since that is what
    throttling and the model string belong to. None for tmpfs, overlay and the like.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    info: dict = {"path": path, "dev": f"{major}:{minor}"}
    mount = _mount_of(path)
    if mount:
        info.update(mount=mount[0], fstype=mount[1], source=mount[2])
    sys_dev = f"/sys/dev/block/{major}:{minor}"
    if not os.path.exists(sys_dev):
        return info
    real = os.path.realpath(sys_dev)
    info["name"] = os.path.basename(real)
    disk_dir = real
    if os.path.exists(os.path.join(real, "partition")):
        disk_dir = os.path.dirname(real)
    info["disk"] = os.path.basename(disk_dir)
    info["disk_dev"] = _read(os.path.join(disk_dir, "dev"))
    model = _read(os.path.join(disk_dir, "device", "model"))
    if model:
        info["model"] = model
    rotational = _read(os.path.join(disk_dir, "queue", "rotational"))
    if rotational is not None:
        info["rotational"] = rotational == "1"
    size = _read(os.path.join(disk_dir, "size"))
    if size and size.isdigit():
        info["size_bytes"] = int(size) * 512
    return info


def _gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine_info(paths: Iterable[str] = ()) -> dict:
    """CPUs, memory, kernel, OS, Python, GPUs, and the disks holding ``paths``."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    disks = []
    seen = set()
    for p in paths:
        dev = block_device(p)
        if dev and dev["dev"] not in seen:
            seen.add(dev["dev"])
            disks.append(dev)
    info = {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": _cpu_model(),
        "memory_bytes": _meminfo_bytes("MemTotal"),
        "memory_available_bytes": _meminfo_bytes("MemAvailable"),
        "cgroup_memory_limit_bytes": _cgroup_memory_limit(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "arch": platform.machine(),
        "bench_python": sys.version.split()[0],
        "bench_python_executable": sys.executable,
        "disks": disks,
        "gpus": _gpus(),
    }
    return {k: v for k, v in info.items() if v is not None}
