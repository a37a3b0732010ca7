"""The fanotify descriptor alone, with nothing but ``ctypes`` and ``os``: what ``headstart
run`` itself opens and marks on a start that records, before it forks the recording helper
and before the target's first import, so the recorder misses none of the target's opens.
The helper inherits the descriptor and reads it (:class:`headstart.profiles.fanotify.
OpenRecorder`); the kernel queues what happens meanwhile. Its own C-library handle: the
shared one (:func:`headstart.pagecache.syscalls.libc`) costs ``platform`` and ``typing``
on the hot path.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["FAN_OPEN", "FAN_OPEN_EXEC", "FAN_Q_OVERFLOW", "mark", "open_fd", "open_marked"]

FAN_CLASS_NOTIF = 0x0
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_UNLIMITED_QUEUE = 0x10
FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100
FAN_OPEN = 0x20
FAN_OPEN_EXEC = 0x1000
FAN_Q_OVERFLOW = 0x4000
AT_FDCWD = -100

_lib: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                      ctypes.c_int, ctypes.c_char_p]
        lib.fanotify_mark.restype = ctypes.c_int
        _lib = lib
    return _lib


def open_fd(flags: int = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK
            | FAN_UNLIMITED_QUEUE) -> int:
    """A new fanotify group (close-on-exec: an exec'd target never holds it). Raises
    OSError where it is not permitted (it needs CAP_SYS_ADMIN)."""
    fd = _libc().fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init: {os.strerror(err)}")
    return fd


def mark(fd: int, path: str) -> None:
    """Watch every open and exec of a file on the filesystem holding ``path``."""
    if _libc().fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN | FAN_OPEN_EXEC,
                             AT_FDCWD, os.fsencode(path)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_mark {path}: {os.strerror(err)}")


def open_marked(paths: list[str]) -> tuple[int, set[int]] | None:
    """A group watching the filesystems of ``paths`` (missing ones skipped) and the devices
    marked; None where fanotify is not permitted or a mark is refused."""
    if os.geteuid() != 0:  # not permitted: spare the ctypes import
        return None
    try:
        fd = open_fd()
    except OSError:
        return None
    devs: set[int] = set()
    try:
        for p in paths:
            try:
                dev = os.stat(p).st_dev
            except OSError:
                continue
            if dev not in devs:
                mark(fd, p)
                devs.add(dev)
    except OSError:
        os.close(fd)
        return None
    return fd, devs
