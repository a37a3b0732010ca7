"""Which files a process tree opens, in order, by fanotify (root).

:class:`OpenRecorder` marks whole filesystems with ``FAN_OPEN | FAN_OPEN_EXEC`` (notification
class, unlimited queue, so nothing ever waits for us) and keeps the first open of every
regular file by the tree it follows (:class:`~headstart.profiles.recorders.ProcessTree`
rooted at ``root_pid``, by default this process). It sees every process of the
tree, ``open``, ``execve``, ``dlopen`` and files opened only to be ``mmap``-ed (safetensors).

What it misses: *which bytes* were read (fanotify has no offsets for notification events;
the residency diff in :mod:`headstart.profiles.capture` supplies them); files opened by a
process that exited before its event was handled, or that left the tree (double fork, the
intermediate already gone); files whose fd was opened before recording started.

The fallback without root, :class:`~headstart.profiles.recorders.MapsSampler`, and the
:class:`~headstart.profiles.recorders.Recorder` protocol both implement are in
:mod:`headstart.profiles.recorders`.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import struct
import threading

from headstart.profiles import fanotify_fd
from headstart.profiles.recorders import BaseRecorder, MapsSampler, Seen

# MapsSampler and Seen live in recorders; still importable from here.
__all__ = ["MapsSampler", "OpenRecorder", "Seen", "fanotify_available"]

log = logging.getLogger(__name__)

_EVENT = struct.Struct("IBBHQii")  # struct fanotify_event_metadata


def fanotify_available() -> tuple[bool, str]:
    """(usable, why not). Needs CAP_SYS_ADMIN; probed by creating a group."""
    try:
        os.close(fanotify_fd.open_fd(fanotify_fd.FAN_CLASS_NOTIF | fanotify_fd.FAN_CLOEXEC))
    except AttributeError as exc:
        return False, f"fanotify unavailable: {exc}"
    except OSError as exc:
        return False, f"{exc.strerror or exc} (needs root)"
    return True, ""


class OpenRecorder(BaseRecorder):
    """fanotify recorder of the files the tree rooted at ``root_pid`` (default: this
    process) opens. Root only."""

    mechanism = "fanotify"

    def __init__(self, paths: list[str] | None = None, root_pid: int | None = None,
                 include_root: bool | None = None,
                 adopt: tuple[int, set[int], float] | None = None) -> None:
        """``adopt``: ``(fd, devices marked, time.monotonic() it was opened)`` of a group
        opened by :func:`headstart.profiles.fanotify_fd.open_marked` (in ``headstart run``,
        before the target's first import); it is this recorder's from then on."""
        super().__init__(root_pid, include_root)
        self._paths = paths or ["/"]
        self._fd = -1
        self._devs: set[int] = set()
        if adopt is not None:
            self._fd, devs, self.t0 = adopt
            self._devs = set(devs)

    def start(self) -> None:
        """Mark the filesystems holding ``paths``; raises OSError when not permitted."""
        if self._fd < 0:
            self._fd = fanotify_fd.open_fd()
        try:
            self.mark(self._paths)
        except OSError:
            os.close(self._fd)
            self._fd = -1
            raise
        self._thread = threading.Thread(target=self._loop, name="headstart-fanotify",
                                        daemon=True)
        self._thread.start()

    def mark(self, paths: list[str]) -> None:
        """Also watch the filesystems holding ``paths`` (those not watched yet); a path that
        does not exist is skipped. Raises OSError when the kernel refuses a mark."""
        for p in paths:
            try:
                dev = os.stat(p).st_dev
            except OSError:
                continue
            if dev not in self._devs:
                fanotify_fd.mark(self._fd, p)
                self._devs.add(dev)

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
                if mask & fanotify_fd.FAN_Q_OVERFLOW:
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
