"""Whether a process tree listens on a TCP port: ``/proc/net/tcp{,6}`` against its fds.

A listening socket appears in ``/proc/net/tcp`` (IPv4) or ``tcp6`` with state ``0A``
(``TCP_LISTEN``) and an inode; a process holds it when one of its ``/proc/PID/fd``
entries reads ``socket:[INODE]``. Only the sockets of the caller's network namespace are
listed, which is the target's unless it made its own. Readers return empty sets instead of
raising: processes and sockets come and go.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["listening_inodes", "socket_inodes", "tree_listens"]

_LISTEN = b"0A"


def listening_inodes() -> set[int]:
    """Inodes of every TCP socket in state LISTEN (IPv4 and IPv6)."""
    out: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, "rb") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN:
                try:
                    out.add(int(fields[9]))
                except ValueError:
                    continue
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` holds open (empty when gone or not ours to read)."""
    out: set[int] = set()
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return out
    for name in names:
        try:
            link = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            try:
                out.add(int(link[8:-1]))
            except ValueError:
                continue
    return out


def tree_listens(pids: Iterable[int]) -> bool:
    """True when any of ``pids`` holds a listening TCP socket.

    The tree's own descriptors are looked at first: listing ``/proc/net/tcp`` walks the
    kernel's whole socket hash table (~4 ms on a 24 GiB machine with no socket at all),
    which a recording polls for until the server listens, while a server that has not
    opened a socket yet costs one ``fd`` listing per process."""
    held: set[int] = set()
    for pid in pids:
        held |= socket_inodes(pid)
    return bool(held) and bool(held & listening_inodes())
