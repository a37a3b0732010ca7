"""Ports for the tests' servers: a free one below the kernel's ephemeral range, as a port
someone chose for a server is (headstart's recording tells a served port from a server's
internal sockets, which bind port 0 and get one from that range)."""

from __future__ import annotations

import random
import socket

from headstart.watch.sockets import ephemeral_ports

__all__ = ["LISTEN", "free_port"]


def free_port() -> int:
    """A port free on 127.0.0.1 now, outside the ephemeral range."""
    top = min(ephemeral_ports().start, 65536)
    for _ in range(500):
        port = random.randrange(max(1024, top - 12000), top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {top}")


# For a test server's own script (it runs without the tests' imports): ``s = listen()``
# binds 127.0.0.1 on a free port below 32768 and listens, like a server on its --port.
LISTEN = '''
def listen():
    import random, socket
    s = socket.socket()
    for _ in range(500):
        try:
            s.bind(("127.0.0.1", random.randrange(20000, 32768)))
            break
        except OSError:
            continue
    s.listen()
    return s
'''
