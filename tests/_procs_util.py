"""The live processes of this machine, read from /proc, for tests that check what a run
left running."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_table"]


def process_table(env_name: str) -> dict[int, tuple[int, int, str, list[bytes]]]:
    """Every live process: pid -> (parent, session, comm, its ``env_name=...`` environment
    entries). Zombies are left out (nothing runs in them)."""
    key = env_name.encode() + b"="
    procs = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        state, ppid, _pgrp, sid = rest.split()[:4]
        if state != "Z":
            procs[int(entry.name)] = (int(ppid), int(sid), comm,
                                      [v for v in env if v.startswith(key)])
    return procs
