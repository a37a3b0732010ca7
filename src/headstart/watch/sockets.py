"""Whether a process tree listens on a TCP port: ``/proc/net/tcp{,6}`` against its fds.

A listening socket appears in ``/proc/net/tcp`` (IPv4) or ``tcp6`` with state ``0A``
(``TCP_LISTEN``) and an inode; a process holds it when one of its ``/proc/PID/fd``
entries reads ``socket:[INODE]``. Only the sockets of the caller's network namespace are
listed, which is the target's unless it made its own. Readers return empty sets instead of
raising: processes and sockets come and go.

A socket bound to port 0 gets a port from the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``): that is how a server's internal channels
listen (torch.distributed's TCPStore, gloo and ZeroMQ in vLLM's worker hold a dozen such
sockets on 127.0.0.1 before the model loads), while the port a server serves on is one
someone chose, normally below that range. :func:`service_ports` tells them apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["ephemeral_ports", "listening_inodes", "listening_ports", "service_ports",
           "socket_inodes", "tree_listening_ports", "tree_listens"]

_LISTEN = b"0A"


def listening_ports() -> dict[int, int]:
    """Inode -> local port of every TCP socket in state LISTEN (IPv4 and IPv6)."""
    out: dict[int, int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, "rb") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN:
                try:  # local_address is ADDR:PORT in hex
                    out[int(fields[9])] = int(fields[1].rsplit(b":", 1)[1], 16)
                except (ValueError, IndexError):
                    continue
    return out


def listening_inodes() -> set[int]:
    """Inodes of every TCP socket in state LISTEN (IPv4 and IPv6)."""
    return set(listening_ports())


def ephemeral_ports() -> range:
    """The kernel's range for ports bound as 0 (its default when it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", "rb") as fh:
            lo, hi = (int(x) for x in fh.read().split()[:2])
        return range(lo, hi + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def service_ports(ports: Iterable[int]) -> set[int]:
    """The ports of ``ports`` outside the ephemeral range: ones a server was told to use."""
    eph = ephemeral_ports()
    return {p for p in ports if p not in eph}


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
    return bool(tree_listening_ports(pids))


def tree_listening_ports(pids: Iterable[int]) -> set[int]:
    """The local ports of the listening TCP sockets ``pids`` hold (the same order of work
    as :func:`tree_listens`: ``/proc/net`` is read only once one of them holds a socket)."""
    held: set[int] = set()
    for pid in pids:
        held |= socket_inodes(pid)
    if not held:
        return set()
    return {port for inode, port in listening_ports().items() if inode in held}
