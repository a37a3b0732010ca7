"""Which files a process tree opens, in order: the :class:`Recorder` protocol, its parts.

Two recorders, both following the tree rooted at any pid (``root_pid``, this process by
default; see :class:`ProcessTree` for whether the root itself counts):

* :class:`~headstart.profiles.fanotify.OpenRecorder` (root): every first open of a regular
  file, see :mod:`headstart.profiles.fanotify`.
* :class:`MapsSampler`, the fallback without root: every ~10 ms it reads ``/proc/PID/maps``
  of the tree and notes new file mappings (shared libraries, extension modules, mmap-ed
  weights). It misses every file that is read and closed without being mapped (``.py``,
  ``.pyc``, JSON, tokenizers) and mappings that live shorter than the sampling period.

:func:`make_recorder` picks one by name (``"auto"``: fanotify where permitted).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Protocol

from headstart.watch import procfs

__all__ = ["MapsSampler", "ProcessTree", "Recorder", "Seen", "make_recorder",
           "resolve_mechanism", "tree_pids"]

log = logging.getLogger(__name__)

_SKIP_PREFIXES = ("/proc/", "/sys/", "/dev/", "/run/", "/memfd:")


class Seen:
    """First-touch record of one file."""

    __slots__ = ("order", "path", "pid", "t")

    def __init__(self, path: str, order: int, t: float, pid: int) -> None:
        self.path, self.order, self.t, self.pid = path, order, t, pid


class Recorder(Protocol):
    """Records the first touch of each file by a process tree between ``start`` and
    ``stop``. ``events``: what it handled (notifications or samples); ``overflow``: the
    kernel dropped events, so the order may have gaps."""

    mechanism: str
    events: int
    overflow: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def ordered(self) -> list[Seen]: ...

    def mark(self, paths: list[str]) -> None:
        """Also watch the files under ``paths`` (after ``start``)."""


class ProcessTree:
    """Is a pid in the tree rooted at ``root``? Descendants always are; the root itself
    only with ``include_root`` (default: unless the root is this process, the recorder,
    whose own reads are not the target's). Answers are cached; the parent chain is read
    from /proc."""

    def __init__(self, root: int, include_root: bool | None = None) -> None:
        self.root = root
        self.include_root = root != os.getpid() if include_root is None else include_root
        self.known: dict[int, bool] = {}

    def __contains__(self, pid: int) -> bool:
        if pid == self.root:
            return self.include_root
        chain = []
        cur = pid
        while True:
            if cur in self.known:
                answer = self.known[cur]
                break
            chain.append(cur)
            ppid = _ppid(cur)
            if ppid == self.root:  # before the init check: the root may be pid 1
                answer = True
                break
            if ppid is None or ppid <= 1 or len(chain) > 64:
                answer = False
                break
            cur = ppid
        for p in chain:
            self.known[p] = answer
        return answer

    def pids(self) -> list[int]:
        """The live pids of the tree."""
        return [pid for pid in procfs.pids() if pid in self]


def tree_pids(root_pid: int | None = None, include_root: bool | None = None) -> list[int]:
    """The live pids of the tree rooted at ``root_pid`` (default: this process), as
    :class:`ProcessTree` counts them."""
    return ProcessTree(os.getpid() if root_pid is None else root_pid, include_root).pids()


def _ppid(pid: int) -> int | None:
    st = procfs.read_stat(pid)
    return None if st is None else st.ppid


class BaseRecorder:
    """What both recorders share: the tree, the first-touch table, the worker thread."""

    mechanism = ""

    def __init__(self, root_pid: int | None = None, include_root: bool | None = None) -> None:
        self.seen: dict[str, Seen] = {}
        self.events = 0
        self.dropped_foreign = 0
        self.overflow = False
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.tree = ProcessTree(os.getpid() if root_pid is None else root_pid, include_root)

    def _note(self, path: str, pid: int) -> None:
        if path.startswith(_SKIP_PREFIXES) or path.endswith(" (deleted)"):
            return
        with self._lock:
            if path not in self.seen:
                self.seen[path] = Seen(path, len(self.seen), time.monotonic() - self.t0, pid)

    def ordered(self) -> list[Seen]:
        with self._lock:
            return sorted(self.seen.values(), key=lambda s: s.order)

    def mark(self, paths: list[str]) -> None:
        """Nothing to add where every file of the tree is seen (maps sampling)."""


class MapsSampler(BaseRecorder):
    """Fallback without root: samples ``/proc/PID/maps`` of the tree every ``interval``."""

    mechanism = "maps"

    def __init__(self, interval: float = 0.01, root_pid: int | None = None,
                 include_root: bool | None = None) -> None:
        super().__init__(root_pid, include_root)
        self.interval = interval

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="headstart-maps", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for pid in self.tree.pids():
            for parts in procfs.read_maps(pid):
                if len(parts) == 6 and parts[5].startswith(b"/"):
                    self._note(os.fsdecode(parts[5]), pid)
        self.events += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:
                log.debug("maps sampling: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def resolve_mechanism(mechanism: str) -> str:
    """``"auto"`` becomes ``"fanotify"`` where fanotify is permitted, else ``"maps"``."""
    if mechanism == "auto":
        from headstart.profiles.fanotify import fanotify_available

        return "fanotify" if fanotify_available()[0] else "maps"
    return mechanism


def make_recorder(mechanism: str, mark_paths: list[str], root_pid: int | None = None,
                  include_root: bool | None = None,
                  adopt: tuple[int, set[int], float] | None = None) -> Recorder:
    """A recorder of the tree rooted at ``root_pid`` (default: this process).

    ``mechanism``: ``"fanotify"`` (root; it marks the filesystems holding ``mark_paths``),
    ``"maps"`` or ``"auto"``. Raises ValueError for another name. Not started yet.
    ``adopt``: a fanotify group already listening (see ``OpenRecorder``): fanotify it is.
    """
    mechanism = "fanotify" if adopt is not None else resolve_mechanism(mechanism)
    if mechanism == "fanotify":
        from headstart.profiles.fanotify import OpenRecorder

        return OpenRecorder(mark_paths, root_pid=root_pid, include_root=include_root,
                            adopt=adopt)
    if mechanism == "maps":
        return MapsSampler(root_pid=root_pid, include_root=include_root)
    raise ValueError(f"unknown mechanism {mechanism!r} (fanotify, maps, auto)")
