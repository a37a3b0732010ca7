"""Emulate slower storage: cap a process tree's disk reads with a cgroup.

Cold starts are I/O-bound on real servers (network disks, cheap NVMe); a fast dev disk
hides exactly what headstart improves (README's benchmarks are at 300 MB/s). This
module creates a fresh cgroup with a read bandwidth limit on the right block device:

* cgroup v1: ``blkio.throttle.read_bps_device`` (``MAJ:MIN BYTES_PER_SECOND``);
* cgroup v2: ``io.max`` (``MAJ:MIN rbps=BYTES_PER_SECOND``).

Processes join it through :meth:`Throttle.preexec_fn` (pass it to ``subprocess.Popen`` so a
child is inside before it execs, and so are all its descendants) or :meth:`Throttle.add`.

Guarantees: root only, otherwise :class:`~headstart.errors.ThrottleError` with the reason and
nothing created. The cgroup is always removed when the context exits, Ctrl-C included
(signals are held during the cleanup); processes still inside are moved back to the parent
first. A cgroup left by a process that was SIGKILLed is removed the next time a throttle is
created (its name carries the owner's pid).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from headstart.errors import ThrottleError

__all__ = ["Throttle", "device_of", "throttle_for_paths", "throttle_reads"]

log = logging.getLogger(__name__)

PREFIX = "headstart-throttle-"
_CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass
class Throttle:
    """A live throttle cgroup. ``path`` is its folder; ``devices`` the MAJ:MIN it limits."""

    path: str
    version: int
    bps: int
    devices: list[str]
    parent: str
    _procs_file: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._procs_file = os.path.join(self.path, "cgroup.procs")

    def add(self, pid: int) -> None:
        """Move ``pid`` (and the threads of it) into the cgroup; its later children follow."""
        with open(self._procs_file, "w") as f:
            f.write(str(pid))

    def preexec_fn(self) -> None:
        """For ``subprocess.Popen(preexec_fn=...)``: the child joins before it execs.

        Runs in the forked child; uses only os calls (no locks, no logging).
        """
        fd = os.open(self._procs_file, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def procs(self) -> list[int]:
        try:
            with open(self._procs_file) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def describe(self) -> dict:
        return {"cgroup": self.path, "version": self.version, "read_bps": self.bps,
                "devices": list(self.devices)}


def _whole_disk(major: int, minor: int) -> str:
    """MAJ:MIN of the whole disk for a partition (throttling rejects partitions)."""
    sys_dev = f"/sys/dev/block/{major}:{minor}"
    real = os.path.realpath(sys_dev)
    if os.path.exists(os.path.join(real, "partition")):
        try:
            with open(os.path.join(os.path.dirname(real), "dev")) as f:
                return f.read().strip()
        except OSError:
            pass
    return f"{major}:{minor}"


def _mount_source_dev(path: str) -> tuple[int, int] | None:
    """For a filesystem without its own device number (btrfs subvolume, some overlays):
    the device of its mount source, when that source is a block device."""
    real = os.path.realpath(path)
    best: tuple[str, str] | None = None
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        point = fields[4].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) > len(best[0])
        ):
            best = (point, rest[1])
    if best is None or not best[1].startswith("/dev/"):
        return None
    try:
        st = os.stat(best[1])
    except OSError:
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def device_of(target: str | int) -> str:
    """``MAJ:MIN`` of the whole disk behind ``target``: a ``"MAJ:MIN"`` string, a device node
    (``/dev/vda``), a dev_t, or any file or folder on it."""
    if isinstance(target, int):
        return _whole_disk(os.major(target), os.minor(target))
    if ":" in target and all(p.isdigit() for p in target.split(":", 1)):
        major, minor = (int(p) for p in target.split(":", 1))
        return _whole_disk(major, minor)
    try:
        st = os.stat(target)
    except OSError as exc:
        raise ThrottleError(f"cannot throttle the disk of {target!r}: {exc.strerror}") from None
    import stat as stat_mod

    if stat_mod.S_ISBLK(st.st_mode):
        return _whole_disk(os.major(st.st_rdev), os.minor(st.st_rdev))
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    if major == 0 or not os.path.exists(f"/sys/dev/block/{major}:{minor}"):
        source = _mount_source_dev(target)
        if source is None:
            raise ThrottleError(f"{target!r} is not on a block device (tmpfs, overlay or a "
                                "network filesystem): nothing to throttle")
        major, minor = source
    return _whole_disk(major, minor)


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup path for a v1 controller, or the v2 path (controller None)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if (controller is None and names == "") or controller in names.split(","):
                return path
    return "/"


def _pick_parent() -> tuple[int, str]:
    """(version, parent folder) where a throttle cgroup can be created."""
    v1 = os.path.join(_CGROUP_ROOT, "blkio")
    if os.path.exists(os.path.join(v1, "blkio.throttle.read_bps_device")) or os.path.exists(
        os.path.join(v1, "cgroup.procs")
    ):
        parent = os.path.join(v1, _own_cgroup("blkio").lstrip("/"))
        return 1, parent if os.path.isdir(parent) else v1
    for root in (_CGROUP_ROOT, os.path.join(_CGROUP_ROOT, "unified")):
        controllers = os.path.join(root, "cgroup.controllers")
        try:
            with open(controllers) as f:
                available = f.read().split()
        except OSError:
            continue
        if "io" in available:
            return 2, root
    raise ThrottleError("no cgroup blkio (v1) or io (v2) controller is available here")


def _remove_stale(parent: str) -> None:
    """Remove throttle cgroups whose owner died without cleaning up (SIGKILL)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(PREFIX):
            continue
        try:
            owner = int(name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if owner != os.getpid() and not os.path.exists(f"/proc/{owner}"):
            _remove(os.path.join(parent, name), parent)


def _remove(path: str, parent: str) -> bool:
    """Move what is left inside back to ``parent``, then rmdir (retried: exiting tasks)."""
    for _ in range(100):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = f.read().split()
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError), open(os.path.join(parent, "cgroup.procs"),
                                                    "w") as f:
                f.write(pid)
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("could not remove throttle cgroup %s: %s", path, exc)
                return False
        time.sleep(0.05)
    log.warning("could not remove throttle cgroup %s: still busy", path)
    return False


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the cgroup is removed; re-raise as KeyboardInterrupt after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda n, _f: pending.append(n))
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if pending:
        raise KeyboardInterrupt


@contextlib.contextmanager
def throttle_reads(bps: int, device: str | int | Sequence[str | int]) -> Iterator[Throttle]:
    """A cgroup whose members read from ``device`` (one or several) at most ``bps`` B/s.

    ``device``: ``"MAJ:MIN"``, a device node, a dev_t, or a path on the disk (partitions are
    mapped to their disk). Raises ThrottleError when not root or no controller is usable.
    """
    if bps <= 0:
        raise ThrottleError(f"read bandwidth must be positive, got {bps}")
    if os.geteuid() != 0:
        raise ThrottleError("--disk-bps needs root (it creates a cgroup with a read limit)")
    targets = [device] if isinstance(device, (str, int)) else list(device)
    devices: list[str] = []
    for t in targets:
        d = device_of(t)
        if d not in devices:
            devices.append(d)
    if not devices:
        raise ThrottleError("no device to throttle")
    version, parent = _pick_parent()
    _remove_stale(parent)
    if version == 2:
        try:
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write("+io")
        except OSError as exc:
            raise ThrottleError(f"cannot enable the io controller in {parent}: "
                                f"{exc.strerror}") from None
    path = os.path.join(parent, f"{PREFIX}{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.mkdir(path)
    except OSError as exc:
        raise ThrottleError(f"cannot create cgroup {path}: {exc.strerror}") from None
    throttle = Throttle(path=path, version=version, bps=int(bps), devices=devices,
                        parent=parent)
    try:
        name = "blkio.throttle.read_bps_device" if version == 1 else "io.max"
        for d in devices:
            line = f"{d} {int(bps)}" if version == 1 else f"{d} rbps={int(bps)}"
            try:
                with open(os.path.join(path, name), "w") as f:
                    f.write(line)
            except OSError as exc:
                raise ThrottleError(f"cannot limit device {d} ({name}): {exc.strerror}") from None
        log.info("throttling reads of %s to %d B/s in %s", ",".join(devices), bps, path)
        yield throttle
    finally:
        with _signals_held():
            _remove(path, parent)


@contextlib.contextmanager
def throttle_for_paths(bps: int, paths: Iterable[str]) -> Iterator[Throttle]:
    """:func:`throttle_reads` on every disk that holds one of ``paths``."""
    devices: list[str] = []
    errors: list[str] = []
    for p in paths:
        try:
            d = device_of(p)
        except ThrottleError as exc:
            errors.append(str(exc))
            continue
        if d not in devices:
            devices.append(d)
    if not devices:
        raise ThrottleError("; ".join(errors) or "no path given to find the disk to throttle")
    with throttle_reads(bps, devices) as t:
        yield t
