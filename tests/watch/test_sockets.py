"""watch.sockets on real sockets of real processes: a tree listens once one of its processes
holds a listening TCP socket (IPv4 or IPv6), not for a connected or unbound one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from headstart.watch.sockets import listening_inodes, socket_inodes, tree_listens

SERVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET)
if sys.argv[2] == "listen":
    s.bind(("::1" if sys.argv[1] == "6" else "127.0.0.1", 0))
    s.listen()
print("up", flush=True)
time.sleep(30)
"""


def _child(family: str, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, family, mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    return proc


def test_listening_ipv4_and_ipv6_and_not_an_unbound_socket() -> None:
    procs = {k: _child(*k) for k in (("4", "listen"), ("6", "listen"), ("4", "plain"))}
    try:
        assert tree_listens([procs["4", "listen"].pid])
        assert tree_listens([procs["4", "plain"].pid, procs["6", "listen"].pid])
        assert not tree_listens([procs["4", "plain"].pid])
        held = socket_inodes(procs["4", "plain"].pid)
        assert len(held) == 1 and not held & listening_inodes()
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_no_socket_and_gone_processes() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert socket_inodes(proc.pid) == set()
        assert not tree_listens([proc.pid])
    finally:
        proc.kill()
        proc.wait()
    assert not tree_listens([proc.pid])
    with socket.socket() as s:  # and this process's own listening socket counts
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert tree_listens([os.getpid()])


def test_listening_ports_and_which_are_service_ports() -> None:
    """The ports a tree listens on, and which of them a server was told to use: one bound
    as 0 comes from the kernel's ephemeral range and is not a service port."""
    from _ports_util import free_port
    from headstart.watch.sockets import ephemeral_ports, service_ports, tree_listening_ports

    with socket.socket() as internal, socket.socket() as served:
        internal.bind(("127.0.0.1", 0))
        internal.listen()
        port = free_port()
        served.bind(("127.0.0.1", port))
        assert tree_listening_ports([os.getpid()]) >= {internal.getsockname()[1]}
        assert port not in tree_listening_ports([os.getpid()])  # bound, not listening
        served.listen()
        ports = tree_listening_ports([os.getpid()])
        assert {internal.getsockname()[1], port} <= ports
        assert internal.getsockname()[1] in ephemeral_ports()
        assert service_ports([internal.getsockname()[1], port]) == {port}
