"""Why a path cannot be read as a regular file, in words people understand."""

from __future__ import annotations

import errno
import os
import stat as stat_mod

__all__ = ["check_path", "file_kind", "os_reason"]


def file_kind(mode: int) -> str:
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
