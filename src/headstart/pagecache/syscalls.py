"""Thin ctypes wrappers for the Linux calls the page-cache engine needs.

* ``cachestat(2)`` (Linux 6.5+, syscall 451 on every architecture with the unified syscall
  table): exact, cheap residency of a byte range of an open file; never lies.
* ``mincore(2)`` on a read-only mapping: the fallback. Since Linux 5.2 it reports *every*
  page resident for files the caller could not open for writing (and does not own, and is
  not privileged for), so such answers are flagged untrusted (:func:`mincore_trusted`).
* ``madvise(MADV_POPULATE_READ)`` (Linux 5.14+): synchronous read of a mapped range without
  a copy into user space.
* ``statfs(2)`` for the file system type (tmpfs ignores ``POSIX_FADV_DONTNEED``).

:func:`libc` is the one ``ctypes`` handle on the C library for all of headstart (fanotify,
``prctl`` use it too).

Availability is detected once, lazily, on first use; nothing runs at import time except
module-level constants. Every wrapper returns ``None`` (or raises ``OSError``) instead of
crashing when the call is missing, so callers can fall back.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import stat
import threading

__all__ = [
    "MADV_POPULATE_READ",
    "OPEN_READ_FLAGS",
    "PAGE_SIZE",
    "TMPFS_LIKE",
    "CacheStat",
    "cachestat",
    "cachestat_available",
    "fs_type",
    "libc",
    "mincore_resident",
    "mincore_trusted",
    "mincore_vector",
    "populate_read",
    "populate_read_available",
    "set_io_priority",
]

PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
MADV_POPULATE_READ = 22
_SYS_CACHESTAT = 451
# The unified syscall table (424+) holds for these; alpha/ia64/mips differ, so we skip them.
_UNIFIED_TABLE = {"x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "ppc64",
                  "s390x", "i386", "i686", "armv7l", "armv6l", "loongarch64"}
_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value
# what platform.system() and .machine() say, without importing platform (15 ms: re, ...)
_UNAME = os.uname()
_SYSNAME, _MACHINE = _UNAME.sysname, _UNAME.machine.lower()

# statfs f_type values of file systems whose pages DONTNEED cannot drop.
TMPFS_LIKE: dict[int, str] = {
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x62656572: "sysfs",
    0x9FA0: "proc",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0x42494E4D: "binfmt_misc",
    0x73717368: "squashfs (no eviction guarantee)",
}


# a collections namedtuple, not typing's: typing costs 11 ms to import (re, enum), and the
# warm-start probe imports this module on the hot path
class CacheStat(collections.namedtuple(
        "CacheStat", "nr_cache nr_dirty nr_writeback nr_evicted nr_recently_evicted")):
    """``struct cachestat``: counts (ints) are in pages of :data:`PAGE_SIZE`."""

    __slots__ = ()


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in CacheStat._fields]


_lock = threading.Lock()
_libc_handle: ctypes.CDLL | None = None
_cachestat_ok: bool | None = None  # None: not tried yet
_populate_ok: bool | None = None


OPEN_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_NOATIME = getattr(os, "O_NOATIME", 0)


def open_for_read(path: str) -> int:
    """A read-only descriptor that does not update atime when the caller owns the file."""
    try:
        return os.open(path, OPEN_READ_FLAGS | _NOATIME)
    except PermissionError:  # O_NOATIME needs ownership; plain read access suffices
        return os.open(path, OPEN_READ_FLAGS)


_READAHEAD: dict[int, int] = {}


def readahead_window(st_dev: int, default: int) -> int:
    """The kernel readahead window (``read_ahead_kb``) of the device holding a file, in
    bytes; ``default`` when sysfs does not say."""
    value = _READAHEAD.get(st_dev)
    if value is None:
        value = default
        name = f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb"
        try:
            with open(name) as fh:
                value = int(fh.read().strip()) * 1024
        except (OSError, ValueError):
            pass
        _READAHEAD[st_dev] = value
    return value


def libc() -> ctypes.CDLL:
    """headstart's one handle on the C library (``use_errno``), with the prototypes of the
    calls here set; other modules set those of their own calls on it (:mod:`ctypes` keeps
    one function object per name)."""
    global _libc_handle
    if _libc_handle is None:
        with _lock:
            if _libc_handle is None:
                lib = ctypes.CDLL(None, use_errno=True)
                lib.syscall.restype = ctypes.c_long
                lib.mmap.restype = ctypes.c_void_p
                lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                     ctypes.c_int, ctypes.c_int, ctypes.c_long]
                lib.munmap.restype = ctypes.c_int
                lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                lib.mincore.restype = ctypes.c_int
                lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
                lib.madvise.restype = ctypes.c_int
                lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                lib.statfs.restype = ctypes.c_int
                lib.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
                _libc_handle = lib
    return _libc_handle


def cachestat_available() -> bool:
    """Whether ``cachestat(2)`` works here (probed once, on a file of our own interpreter)."""
    global _cachestat_ok
    if _cachestat_ok is None:
        if _SYSNAME != "Linux" or _MACHINE not in _UNIFIED_TABLE:
            _cachestat_ok = False
        else:
            try:
                fd = os.open(os.path.realpath(os.__file__), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = -1
            try:
                _cachestat_ok = fd >= 0 and _raw_cachestat(fd, 0, 0) is not None
            except OSError as exc:
                # ENOSYS: old kernel; EPERM: seccomp filter. Anything else: a file quirk,
                # the call itself exists.
                _cachestat_ok = exc.errno not in (errno.ENOSYS, errno.EPERM)
            finally:
                if fd >= 0:
                    os.close(fd)
    return _cachestat_ok


def _raw_cachestat(fd: int, offset: int, length: int) -> CacheStat:
    rng = _CacheStatRange(offset, length)
    out = _CacheStat()
    rc = libc().syscall(ctypes.c_long(_SYS_CACHESTAT), ctypes.c_uint(fd), ctypes.byref(rng),
                        ctypes.byref(out), ctypes.c_uint(0))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return CacheStat(*(getattr(out, name) for name in CacheStat._fields))


def cachestat(fd: int, offset: int = 0, length: int = 0) -> CacheStat | None:
    """Page-cache state of ``[offset, offset+length)`` of ``fd`` (``length`` 0: to EOF).

    ``None`` when cachestat is unavailable; ``OSError`` for a file it cannot answer for
    (e.g. ``EOPNOTSUPP`` on hugetlbfs), so the caller can fall back to mincore.
    """
    if not cachestat_available():
        return None
    return _raw_cachestat(fd, offset, length)


def mincore_trusted(st: os.stat_result) -> bool:
    """Whether mincore tells the truth for this file (Linux >= 5.2 lies unless we could write
    it, own it, or hold CAP_FOWNER; being root is our proxy for the capability)."""
    if os.geteuid() == 0 or st.st_uid == os.geteuid():
        return True
    mode = st.st_mode
    if st.st_gid in os.getgroups() or st.st_gid == os.getegid():
        return bool(mode & stat.S_IWGRP)
    return bool(mode & stat.S_IWOTH)


def _map(fd: int, offset: int, length: int) -> tuple[int, int]:
    """mmap ``[offset, offset+length)`` read-only (page aligned); returns (address, length)."""
    start = offset - offset % PAGE_SIZE
    size = length + (offset - start)
    addr = libc().mmap(None, size, _PROT_READ, _MAP_SHARED, fd, start)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return addr, size


def mincore_vector(fd: int, offset: int, length: int) -> bytes:
    """mincore's vector for ``[offset, offset+length)``: one byte per page of the range
    widened down to a page boundary, bit 0 set when the page is resident.

    ``length`` must be positive; raises ``OSError`` when mmap or mincore fails.
    """
    lib = libc()
    addr, size = _map(fd, offset, length)
    try:
        pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
        vec = ctypes.create_string_buffer(pages)
        if lib.mincore(addr, size, vec) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mincore: {os.strerror(err)}")
        return vec.raw[:pages]
    finally:
        lib.munmap(addr, size)


def mincore_resident(fd: int, offset: int, length: int) -> int:
    """Resident bytes of ``[offset, offset+length)`` by mincore (page granular, clipped)."""
    if length <= 0:
        return 0
    vec = mincore_vector(fd, offset, length)
    resident = len(vec) - vec.count(0)  # only bit 0 is defined
    return min(length, resident * PAGE_SIZE)


def populate_read_available() -> bool:
    """Whether ``MADV_POPULATE_READ`` is supported (probed once on our interpreter's file)."""
    global _populate_ok
    if _populate_ok is None:
        try:
            fd = os.open(os.path.realpath(os.__file__), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _populate_ok = False
            return False
        try:
            populate_read(fd, 0, min(PAGE_SIZE, os.fstat(fd).st_size) or 1)
            _populate_ok = True
        except OSError:
            _populate_ok = False
        finally:
            os.close(fd)
    return _populate_ok


def populate_read(fd: int, offset: int, length: int) -> None:
    """Read ``[offset, offset+length)`` into the page cache via a temporary read-only mapping.

    Raises ``OSError``: ``EINVAL`` when unsupported, ``EFAULT`` when the range is past EOF
    (the file shrank), ``EIO`` on a read error. Never SIGBUS: madvise reports, not faults.
    Faults read around: up to about one readahead window (``read_ahead_kb``) before and
    after the range can become resident too.
    """
    lib = libc()
    addr, size = _map(fd, offset, length)
    try:
        if lib.madvise(addr, size, MADV_POPULATE_READ) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"madvise(MADV_POPULATE_READ): {os.strerror(err)}")
    finally:
        lib.munmap(addr, size)


def fs_type(path: str | os.PathLike[str]) -> int | None:
    """``statfs(2).f_type`` of the file system holding ``path``; ``None`` when unknown."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
    try:
        rc = libc().statfs(os.fsencode(os.fspath(path)), buf)
    except (OSError, AttributeError):
        return None
    if rc != 0:
        return None
    # f_type is the first member, a C long (__fsword_t) on Linux.
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


# ioprio_set(2): not in the unified table (it predates it), so per architecture.
_SYS_IOPRIO_SET = {"x86_64": 251, "amd64": 251, "aarch64": 30, "arm64": 30, "riscv64": 30,
                   "loongarch64": 30, "i386": 289, "i686": 289, "ppc64le": 273,
                   "ppc64": 273, "s390x": 282}
IOPRIO_CLASS_BE = 2
IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1


def set_io_priority(io_class: int, level: int = 0, pid: int = 0) -> None:
    """``ioprio_set(IOPRIO_WHO_PROCESS, pid, class/level)``: the priority of the reads a
    process submits from now on (``pid`` 0: the calling thread's process).

    Schedulers that honour it: BFQ (classes and levels), mq-deadline (classes only); ``none``
    and kyber ignore it, and a cgroup throttle sits above all of them. Raises OSError
    (ENOSYS where the call is unknown here)."""
    nr = _SYS_IOPRIO_SET.get(_MACHINE)
    if nr is None or _SYSNAME != "Linux":
        raise OSError(errno.ENOSYS, "ioprio_set is not known on this platform")
    value = (io_class << _IOPRIO_CLASS_SHIFT) | level
    rc = libc().syscall(ctypes.c_long(nr), ctypes.c_int(_IOPRIO_WHO_PROCESS), ctypes.c_int(pid),
                        ctypes.c_int(value))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
