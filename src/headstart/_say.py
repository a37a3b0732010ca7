"""One line for the user on stderr, ``headstart: MSG``: written to fd 2 at once, so that it
works the same from the target's process before its imports, from a forked helper and
from ``headstart run`` (no buffered ``sys.stderr``, nothing imported)."""

from __future__ import annotations

import contextlib
import os

__all__ = ["say"]


def say(msg: str) -> None:
    """Write ``headstart: MSG`` on fd 2; a closed or full stderr is ignored."""
    with contextlib.suppress(OSError):
        os.write(2, f"headstart: {msg}\n".encode(errors="surrogateescape"))
