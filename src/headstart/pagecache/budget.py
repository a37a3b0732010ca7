"""How much page cache a prefetch may fill: what is really available to this process.

``MemAvailable`` ignores container limits, and page cache counts against a cgroup's memory
limit, so a prefetch sized by ``MemAvailable`` alone evicts its own first pages (or the
server's) before the loader reaches them. Available memory is therefore the smaller of

* ``MemAvailable`` from ``/proc/meminfo``, and
* for each level of this process's memory cgroup, from its own folder up to the root of the
  mount: ``limit - usage + inactive_file`` (cgroup v2: ``memory.max``, ``memory.current``,
  ``inactive_file`` of ``memory.stat``; v1: ``memory.limit_in_bytes``,
  ``memory.usage_in_bytes``, ``total_inactive_file``). Only *inactive* file pages count as
  reclaimable: active ones are what the workload is using (Kubernetes' working-set rule).

The process's cgroup comes from ``/proc/self/cgroup`` and the controller's mount from
``/proc/self/mountinfo``; both are read below ``proc_root`` so tests can point at fixtures.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["MemoryAvailability", "available_memory", "memory_budget", "resolve_budget"]

_UNLIMITED = 1 << 60  # v1 reports "no limit" as a huge page-aligned number


@dataclass(frozen=True)
class MemoryAvailability:
    """Where the available-memory figure came from (all in bytes)."""

    available: int
    mem_available: int | None
    cgroup_version: int | None = None
    cgroup_path: str | None = None
    cgroup_available: int | None = None
    cgroup_limit: int | None = None
    cgroup_usage: int | None = None
    cgroup_reclaimable: int | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _mem_available(proc_root: str) -> int | None:
    text = _read(os.path.join(proc_root, "meminfo"))
    if text is None:
        return None
    fallback = None
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        value = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
        if key == "MemAvailable":
            return value
        if key == "MemFree":  # pre-3.14 kernels have no MemAvailable
            fallback = value
    return fallback


def _unescape(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field_ = field_.replace(code, char)
    return field_


def _memory_cgroup(proc_root: str) -> tuple[int, str, str] | None:
    """(version, folder of our cgroup, mount point) for the memory controller, or None."""
    cgroup = _read(os.path.join(proc_root, "self", "cgroup"))
    mountinfo = _read(os.path.join(proc_root, "self", "mountinfo"))
    if cgroup is None or mountinfo is None:
        return None
    v1_path = v2_path = None
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    v1_mount = v2_mount = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        root, mount_point, fstype, options = _unescape(lf[3]), _unescape(lf[4]), rf[0], rf[2]
        if fstype == "cgroup" and "memory" in options.split(",") and v1_mount is None:
            v1_mount = (root, mount_point)
        elif fstype == "cgroup2" and v2_mount is None:
            v2_mount = (root, mount_point)
    # A v1 memory controller wins: on hybrid hosts the v2 tree has no memory controller.
    for version, path, mount in ((1, v1_path, v1_mount), (2, v2_path, v2_mount)):
        if path is None or mount is None:
            continue
        root, mount_point = mount
        rel = path
        if root != "/" and (rel == root or rel.startswith(root.rstrip("/") + "/")):
            rel = rel[len(root):]
        folder = os.path.join(mount_point, rel.lstrip("/"))
        if not os.path.isdir(folder):
            folder = mount_point  # cgroup namespace we cannot map: the mount is our view
        if version == 2 and not os.path.exists(os.path.join(folder, "memory.current")) \
                and not os.path.exists(os.path.join(mount_point, "memory.stat")):
            continue  # v2 without the memory controller enabled
        return version, folder, mount_point
    return None


def _int_file(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(folder: str, keys: tuple[str, ...]) -> int:
    text = _read(os.path.join(folder, "memory.stat")) or ""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    for key in keys:
        if key in values:
            return values[key]
    return 0


def _cgroup_levels(folder: str, mount_point: str) -> list[str]:
    levels = []
    current = os.path.normpath(folder)
    top = os.path.normpath(mount_point)
    while True:
        levels.append(current)
        if current == top or not current.startswith(top + os.sep):
            break
        current = os.path.dirname(current)
    return levels


def available_memory(
    proc_root: str = "/proc",
) -> MemoryAvailability:
    """Memory this process can fill with page cache without hitting a limit (see module doc)."""
    mem = _mem_available(proc_root)
    notes: list[str] = []
    if mem is None:
        notes.append(f"no MemAvailable in {proc_root}/meminfo")
    found = _memory_cgroup(proc_root)
    best: tuple[int, int, int, int, str] | None = None  # avail, limit, usage, reclaim, path
    version = None
    if found is None:
        notes.append("no memory cgroup found")
    else:
        version, folder, mount_point = found
        if version == 1:
            limit_f, usage_f, keys = ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                      ("total_inactive_file", "inactive_file"))
        else:
            limit_f, usage_f, keys = "memory.max", "memory.current", ("inactive_file",)
        for level in _cgroup_levels(folder, mount_point):
            limit = _int_file(os.path.join(level, limit_f))
            if limit is None or limit >= _UNLIMITED:
                continue
            usage = _int_file(os.path.join(level, usage_f)) or 0
            reclaim = _stat_value(level, keys)
            avail = max(0, limit - usage + reclaim)
            if best is None or avail < best[0]:
                best = (avail, limit, usage, reclaim, level)
        if best is None:
            notes.append(f"cgroup v{version} at {folder} has no memory limit")
    candidates = [v for v in (mem, best[0] if best else None) if v is not None]
    available = min(candidates) if candidates else 0
    return MemoryAvailability(
        available=available,
        mem_available=mem,
        cgroup_version=version,
        cgroup_path=best[4] if best else (found[1] if found else None),
        cgroup_available=best[0] if best else None,
        cgroup_limit=best[1] if best else None,
        cgroup_usage=best[2] if best else None,
        cgroup_reclaimable=best[3] if best else None,
        notes=tuple(notes),
    )


def memory_budget(fraction: float = 0.8, *, proc_root: str = "/proc") -> int:
    """``fraction`` of :func:`available_memory`, in bytes: what ``budget="auto"`` means."""
    if not 0 < fraction <= 1:
        from headstart.errors import InvalidSizeError

        raise InvalidSizeError(f"budget fraction must be in (0, 1]: {fraction!r}")
    return int(available_memory(proc_root).available * fraction)


def resolve_budget(budget: int | float | str | None, *, proc_root: str = "/proc") -> int | None:
    """Bytes a prefetch may make resident; ``None`` means unlimited.

    ``"auto"``: 0.8 of available memory. An ``int``: bytes. A ``float`` in (0, 1]: that
    fraction of available memory. A string: a size (``"2GiB"``) or a percentage of available
    memory (``"25%"``). Raises :class:`~headstart.errors.InvalidSizeError` on anything else.
    """
    from headstart.errors import InvalidSizeError
    from headstart.sizes import parse_size_or_percent

    if budget is None:
        return None
    if isinstance(budget, str):
        if budget.strip().lower() == "auto":
            return memory_budget(0.8, proc_root=proc_root)
        if budget.strip().lower() in ("none", "unlimited"):
            return None
        budget = parse_size_or_percent(budget)
    if isinstance(budget, bool):
        raise InvalidSizeError(f"invalid budget {budget!r}")
    if isinstance(budget, int):
        if budget < 0:
            raise InvalidSizeError(f"budget must not be negative: {budget}")
        return budget
    if isinstance(budget, float):
        return memory_budget(budget, proc_root=proc_root)
    raise InvalidSizeError(f"invalid budget {budget!r} (examples: auto, 2GiB, 25%, 0.5)")
