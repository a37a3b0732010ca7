"""Which files a process tree opens, in order: fanotify (root) or ``/proc/PID/maps`` sampling.

:class:`OpenRecorder` marks whole filesystems with ``FAN_OPEN | FAN_OPEN_EXEC`` (notification
class, unlimited queue, so nothing ever waits for us) and keeps the first open of every
regular file by a descendant of this process. It sees every process of the tree, ``open``,
``execve``, ``dlopen`` and files opened only to be ``mmap``-ed (safetensors).

What it misses: *which bytes* were read (fanotify has no offsets for notification events;
the residency diff in :mod:`headstart.profiles.record` supplies them); files opened by a
process that exited before its event was handled, or that left the tree (double fork, the
intermediate already gone); files whose fd was opened before recording started.

:class:`MapsSampler` is the fallback without root: every ~10 ms it reads ``/proc/PID/maps``
of the tree and notes new file mappings (shared libraries, extension modules, mmap-ed
weights). It misses every file that is read and closed without being mapped (``.py``,
``.pyc``, JSON, tokenizers) and mappings that live shorter than the sampling period.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import stat
import struct
import threading
import time

__all__ = ["MapsSampler", "OpenRecorder", "Seen", "fanotify_available"]

log = logging.getLogger(__name__)

_FAN_CLASS_NOTIF = 0x0
_FAN_CLOEXEC = 0x1
_FAN_NONBLOCK = 0x2
_FAN_UNLIMITED_QUEUE = 0x10
_FAN_MARK_ADD = 0x1
_FAN_MARK_FILESYSTEM = 0x100
_FAN_OPEN = 0x20
_FAN_OPEN_EXEC = 0x1000
_FAN_Q_OVERFLOW = 0x4000
_AT_FDCWD = -100
_EVENT = struct.Struct("IBBHQii")  # struct fanotify_event_metadata
_SKIP_PREFIXES = ("/proc/", "/sys/", "/dev/", "/run/", "/memfd:")


class Seen:
    """First-touch record of one file."""

    __slots__ = ("order", "path", "pid", "t")

    def __init__(self, path: str, order: int, t: float, pid: int) -> None:
        self.path, self.order, self.t, self.pid = path, order, t, pid


class _Tree:
    """Is a pid a descendant of ``root``? Cached; the chain is read from /proc."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.known: dict[int, bool] = {}

    def __contains__(self, pid: int) -> bool:
        if pid == self.root:  # the recorder itself is not the target
            return False
        chain = []
        cur = pid
        while True:
            if cur in self.known:
                answer = self.known[cur]
                break
            chain.append(cur)
            ppid = _ppid(cur)
            if ppid is None or ppid <= 1 or len(chain) > 64:
                answer = False
                break
            if ppid == self.root:
                answer = True
                break
            cur = ppid
        for p in chain:
            self.known[p] = answer
        return answer


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return int(data[data.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    lib.fanotify_init.restype = ctypes.c_int
    lib.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                  ctypes.c_char_p]
    lib.fanotify_mark.restype = ctypes.c_int
    return lib


def fanotify_available() -> tuple[bool, str]:
    """(usable, why not). Needs CAP_SYS_ADMIN; probed by creating a group."""
    try:
        lib = _libc()
        fd = lib.fanotify_init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC, os.O_RDONLY)
    except (OSError, AttributeError) as exc:
        return False, f"fanotify unavailable: {exc}"
    if fd < 0:
        err = ctypes.get_errno()
        return False, f"fanotify_init: {os.strerror(err)} (needs root)"
    os.close(fd)
    return True, ""


class _Recorder:
    def __init__(self) -> None:
        self.seen: dict[str, Seen] = {}
        self.events = 0
        self.dropped_foreign = 0
        self.overflow = False
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.tree = _Tree(os.getpid())

    def _note(self, path: str, pid: int) -> None:
        if path.startswith(_SKIP_PREFIXES) or path.endswith(" (deleted)"):
            return
        with self._lock:
            if path not in self.seen:
                self.seen[path] = Seen(path, len(self.seen), time.monotonic() - self.t0, pid)

    def ordered(self) -> list[Seen]:
        with self._lock:
            return sorted(self.seen.values(), key=lambda s: s.order)


class OpenRecorder(_Recorder):
    """fanotify recorder of the files descendants of this process open. Root only."""

    mechanism = "fanotify"

    def __init__(self, paths: list[str] | None = None) -> None:
        super().__init__()
        self._paths = paths or ["/"]
        self._fd = -1

    def start(self) -> None:
        """Mark the filesystems holding ``paths``; raises OSError when not permitted."""
        lib = _libc()
        fd = lib.fanotify_init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK
                               | _FAN_UNLIMITED_QUEUE,
                               os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_init: {os.strerror(err)}")
        self._fd = fd
        devs: set[int] = set()
        for p in self._paths:
            try:
                dev = os.stat(p).st_dev
            except OSError:
                continue
            if dev in devs:
                continue
            devs.add(dev)
            if lib.fanotify_mark(fd, _FAN_MARK_ADD | _FAN_MARK_FILESYSTEM,
                                 _FAN_OPEN | _FAN_OPEN_EXEC, _AT_FDCWD, os.fsencode(p)) != 0:
                err = ctypes.get_errno()
                os.close(fd)
                self._fd = -1
                raise OSError(err, f"fanotify_mark {p}: {os.strerror(err)}")
        self._thread = threading.Thread(target=self._loop, name="headstart-fanotify",
                                        daemon=True)
        self._thread.start()

    def _drain(self) -> int:
        n = 0
        while True:
            try:
                buf = os.read(self._fd, 256 * 1024)
            except BlockingIOError:
                return n
            except OSError as exc:
                log.debug("fanotify read: %s", exc)
                return n
            if not buf:
                return n
            off = 0
            while off + _EVENT.size <= len(buf):
                length, _ver, _res, _mlen, mask, efd, pid = _EVENT.unpack_from(buf, off)
                off += max(length, _EVENT.size)
                n += 1
                if mask & _FAN_Q_OVERFLOW:
                    self.overflow = True
                if efd < 0:
                    continue
                try:
                    if pid in self.tree:
                        if stat.S_ISREG(os.fstat(efd).st_mode):
                            self._note(os.readlink(f"/proc/self/fd/{efd}"), pid)
                    else:
                        self.dropped_foreign += 1
                except OSError:
                    pass
                finally:
                    os.close(efd)
            self.events += n

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            try:
                if poller.poll(50):
                    self._drain()
            except Exception as exc:  # never take the recording down with a bad event
                log.debug("fanotify loop: %s", exc)

    def stop(self) -> None:
        """Handle every queued event, then stop listening."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._fd >= 0:
            self._drain()
            os.close(self._fd)
            self._fd = -1


class MapsSampler(_Recorder):
    """Fallback without root: samples ``/proc/PID/maps`` of this process's descendants."""

    mechanism = "maps"

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__()
        self.interval = interval

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="headstart-maps", daemon=True)
        self._thread.start()

    def _pids(self) -> list[int]:
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) in self.tree:
                out.append(int(name))
        return out

    def sample(self) -> None:
        for pid in self._pids():
            try:
                with open(f"/proc/{pid}/maps", "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            for line in data.splitlines():
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith(b"/"):
                    self._note(os.fsdecode(parts[5]), pid)
        self.events += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:
                log.debug("maps sampling: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
