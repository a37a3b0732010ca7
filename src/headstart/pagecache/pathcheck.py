"""Why a path cannot be read as a regular file, in words people understand; reading a small
regular file without ever blocking on a FIFO.

Stdlib only and cheap to import: the adapters (``headstart run``'s hot path), model resolution
and the page-cache engine all use it.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod

__all__ = ["check_path", "file_kind", "os_reason", "read_small_regular_file"]


def file_kind(mode: int) -> str:
    """What a non-regular file is (``"is a FIFO"``), from its ``st_mode``."""
    if stat_mod.S_ISDIR(mode):
        return "is a directory"
    if stat_mod.S_ISFIFO(mode):
        return "is a FIFO"
    if stat_mod.S_ISSOCK(mode):
        return "is a socket"
    if stat_mod.S_ISCHR(mode):
        return "is a character device"
    if stat_mod.S_ISBLK(mode):
        return "is a block device"
    return "is not a regular file"


def os_reason(exc: OSError, path: str | None = None) -> str:
    """A short reason for ``exc`` (``"dangling symlink"``, ``"permission denied"``...)."""
    if exc.errno == errno.ENOENT and path is not None and os.path.islink(path):
        return "dangling symlink"
    if exc.errno == errno.ENOENT:
        return "no such file (deleted?)"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"


def check_path(path: str) -> tuple[str, os.stat_result | None]:
    """(reason, None) for what cannot be read as a regular file; ("", stat) otherwise."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return os_reason(exc, path), None
    except ValueError as exc:  # embedded NUL byte
        return f"invalid path: {exc}", None
    if not stat_mod.S_ISREG(st.st_mode):
        return file_kind(st.st_mode), None
    return "", st


def read_small_regular_file(path: str, limit: int) -> bytes:
    """The bytes of a small regular file, never blocking on a FIFO: opened ``O_NONBLOCK``,
    then ``fstat``-checked. Raises ``OSError`` (``EINVAL`` for anything but a regular file,
    ``EFBIG`` above ``limit`` bytes, or the open/read error)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{file_kind(st.st_mode)}, not a regular file", path)
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
