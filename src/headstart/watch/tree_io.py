"""How much a process tree reads from storage itself, and whether it is reading right now.

``/proc/PID/io`` ``read_bytes`` counts what a process caused to be fetched from storage:
its ``read()`` misses, its page faults and the readahead they triggered, but not pages
another process (the replay helper) brought in. Summed over a target's tree it is exactly
the disk work the target still did itself, and a rise between two samples means one of
its threads is waiting for the disk at that moment, which is when a background reader must
stand back.

Rules: never raises for processes that come and go (a process that exited keeps the last
value seen, so the total never goes down); the tree is listed again at most every
``rescan`` seconds, each sample in between costs one small read per known process.
"""

from __future__ import annotations

import time

from headstart.watch import procfs

__all__ = ["TreeReads"]


class TreeReads:
    """``read_bytes`` of ``root`` and its descendants, excluding ``exclude`` pids."""

    def __init__(self, root: int, *, exclude: tuple[int, ...] = (), rescan: float = 0.1,
                 min_interval: float = 0.004, quiet: float = 0.02) -> None:
        self.root = root
        self.exclude = set(exclude)
        self.rescan = rescan
        self.min_interval = min_interval
        self.quiet = quiet  # busy() stays True this long after the last rise
        self._pids: list[int] = []
        self._last: dict[int, int] = {}
        self._base: dict[int, int] = {}  # first value seen: reads before we watched
        self._listed = 0.0
        self._sampled = 0.0
        self._total = 0
        self._rise_at = -1.0
        self.samples = 0
        self.busy_samples = 0

    def _list(self, now: float) -> None:
        pids = [self.root, *procfs.descendants(self.root)]
        self._pids = [p for p in pids if p not in self.exclude]
        self._listed = now

    def total(self) -> int:
        """Bytes the tree has fetched from storage since this watcher first saw each process
        (the root's reads before :meth:`start` are not counted)."""
        now = time.monotonic()
        if now - self._listed >= self.rescan:
            self._list(now)
        for pid in self._pids:
            io = procfs.read_io(pid)
            if io is None:
                continue
            self._base.setdefault(pid, io.read_bytes)
            self._last[pid] = io.read_bytes
        total = sum(v - self._base[p] for p, v in self._last.items())
        self.samples += 1
        if total > self._total:
            self._rise_at = now
        self._total = total
        self._sampled = now
        return total

    def start(self) -> int:
        """Take the baseline (call once, before the work being measured)."""
        self._list(time.monotonic())
        return self.total()

    def busy(self) -> bool:
        """True while the tree's reads rose within the last ``quiet`` seconds."""
        now = time.monotonic()
        if now - self._sampled >= self.min_interval:
            self.total()
        busy = now - self._rise_at < self.quiet
        self.busy_samples += busy
        return busy

    def alive(self) -> bool:
        st = procfs.read_stat(self.root)
        return st is not None and st.state not in ("Z", "X")
