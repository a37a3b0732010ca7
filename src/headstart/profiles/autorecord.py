"""Record a startup profile during an ordinary start (``headstart run`` with no profile).

It runs in the replay helper, never in the target: a forked copy of ``headstart run``
started before the target's first import (or the helper of an exec'd target). Rules:

* **Nothing the target sees changes**: the helper only watches (fanotify as root, else
  ``/proc/PID/maps`` sampling), reads ``/proc`` and the page cache's residency, and writes
  the profile into headstart's own cache, atomically. It never evicts anything.
* **Ready, detected from outside**: the target's tree holds a listening TCP socket and
  has opened no new file for ``QUIET`` seconds (reads are not waited for: a first request
  may read weights for a long time), or it exits after it listened, however soon (a
  benchmark stops a server right after its first answer; what it read is still in the page
  cache, and the pages its mappings touched were sampled while it listened). A socket on a
  port of the kernel's ephemeral range (bound as port 0) is a server's internal channel,
  not the port it serves on: vLLM's worker holds a dozen (TCPStore, gloo, ZeroMQ) before it
  loads the weights, and a shard that took over ``QUIET`` seconds to load ended such a
  recording with one of four shards in it. With only those, ready needs ``INTERNAL_QUIET``
  seconds with no new file and no read of the tree's own from the disk (one large shard
  at a slow disk's speed opens nothing new for longer than that), or an exit that long
  after the first of them. A target that
  exits before it ever listens, or does not get there within ``LIMIT`` seconds, leaves no
  profile.
* **No CPU taken from the start**: the residency scan and the write wait until the tree
  is idle (its first requests done) or gone. Its page tables are sampled every 0.5 s until
  then: the library pages a first request faults (the model's forward pass in
  ``libtorch_cpu.so``) come after readiness, and a profile without them leaves the replayed
  start to fault them itself, in series, after the replay has ended.
* **Loader order from the target's page tables**: weights are read ahead by the same
  helper at the same time, so their residency says nothing about the loader; the
  ``present`` bits of the tree's mappings of weight files (:class:`TouchSampler`) do.
  A loader that reads with ``read()`` instead of a mapping leaves no trace there: its
  chunks keep file order.

What the page cache cannot tell at capture (the residency diff of
:mod:`headstart.profiles.capture`): a start that was warm records every resident page of
the files it opened, not only the ones it read; the first replayed start measures the
coverage and a poor profile is recorded again (:mod:`headstart.profiles.coverage`).
Without root, files read and closed without being mapped (``.py``, ``.pyc``, JSON) come from
a residency scan of the Python installation, in path order, not first-open order.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Collection

from headstart.profiles.weights import WeightSampler

__all__ = ["INTERNAL_QUIET", "LIMIT", "QUIET", "Armed", "ReadyWatch", "TouchSampler", "arm",
           "record_live", "wait_idle"]

QUIET = 1.0
INTERNAL_QUIET = 10.0
LIMIT = 600.0


class TouchSampler(WeightSampler):
    """First time more than half of each ``chunk`` of the weight files (of the part a
    mapping holds; one touch maps a whole large folio, 2 MiB here) was seen mapped and
    present in the tree's page tables (``/proc/PID/pagemap``), every ``interval`` seconds;
    otherwise a :class:`~headstart.profiles.weights.WeightSampler` (``start``, ``stop``,
    ``times``)."""

    def __init__(self, pids: Callable[[], list[int]], weights: Collection[str],
                 chunk: int = 4 * 2**20, interval: float = 0.1) -> None:
        super().__init__(sorted(weights), chunk=chunk, interval=interval)
        self.pids = pids
        self.weights = set(weights)

    def sample(self) -> None:
        from headstart.profiles.pagemap import present_in

        per_chunk = self.chunk // os.sysconf("SC_PAGE_SIZE")
        for path, first_page, present in present_in(self.pids(), only=self.weights,
                                                    want=self._unseen):
            self._note(path, first_page, present, per_chunk)
        self.samples += 1

    def _unseen(self, path: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """The file bytes of ``[lo, hi)`` in chunks not yet more than half touched, as runs:
        only their page tables are read (a loaded 2 GB shard is 4 MB of entries, 10 times a
        second)."""
        out: list[tuple[int, int]] = []
        for c in range(lo // self.chunk, (hi - 1) // self.chunk + 1):
            if (path, c) in self.first:
                continue
            a, b = max(lo, c * self.chunk), min(hi, (c + 1) * self.chunk)
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        return out

    def _note(self, path: str, first_page: int, present: bytes, per_chunk: int) -> None:
        """``present`` starts at ``first_page`` of the file, which need not be a chunk
        boundary: each present page counts for the chunk holding it. A chunk not yet more than
        half present is read again by the next sample (page tables keep what was touched)."""
        from headstart.profiles.layout import chunk_pieces

        for chunk, lo, hi in chunk_pieces(first_page, len(present), per_chunk):
            part = present[lo - first_page:hi - first_page]
            if 1 in part:
                self.note((path, chunk), self.samples, 2 * part.count(1) > len(part))


class ReadyWatch:
    """Follows the tree of ``root`` until it is ready (see the module docstring), keeping
    the pages its mappings touched while it listens (a tree that is stopped right after
    its first answer has none to read at the end). ``skip``: files whose touched pages are
    not needed (weights recorded whole), left out of every page-table read."""

    def __init__(self, root: int, opened: Callable[[], int], *, quiet: float = QUIET,
                 internal_quiet: float = INTERNAL_QUIET, limit: float = LIMIT,
                 interval: float = 0.25, skip: Collection[str] = (),
                 reads: Callable[[], int] | None = None) -> None:
        self.root = root
        self.skip = skip
        self.opened = opened
        self.reads = reads  # bytes the tree fetched from storage itself, so far
        self.quiet = quiet
        self.internal_quiet = internal_quiet
        self.limit = limit
        self.interval = interval
        self.touched: dict[str, bytearray] = {}
        self.listened = False  # on a service port (outside the ephemeral range)
        self.internal_at: float | None = None  # first seen listening on any port
        self.ready_at = 0.0  # monotonic: the last activity before ready (or the exit)

    def _pids(self) -> list[int]:
        return [self.root, *_descendants(self.root)]

    def sample(self) -> None:
        """Add the pages the tree's mappings show touched now (a no-op once it is gone)."""
        from headstart.profiles.pagemap import or_into, touched_pages

        for path, bitmap in touched_pages(self._pids(), skip=self.skip).items():
            or_into(self.touched.setdefault(path, bytearray()), 0, bytes(bitmap))

    def wait(self, keep_going: Callable[[], bool] = lambda: True) -> str:
        """``ready``; ``exited`` (before it listened on a service port, or with only
        internal ports for less than ``internal_quiet`` seconds; otherwise ``ready`` all the
        same: what it read is still in the page cache); ``limit``; ``cancelled``."""
        from headstart.watch.procfs import read_stat
        from headstart.watch.sockets import service_ports, tree_listening_ports

        t0 = time.monotonic()
        last, changed, touched_at = self.opened(), t0, 0.0
        read, read_at = (self.reads() if self.reads else 0), t0
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            st = read_stat(self.root)
            if st is None or st.state in ("Z", "X"):
                # a tree that listened on its service port got through its start,
                # however soon it was stopped (a first answer from a small model and a
                # Ctrl-C can come within one poll of the listen())
                served = self.listened or (self.internal_at is not None
                                           and now - self.internal_at >= self.internal_quiet)
                self.ready_at = now
                return "ready" if served else "exited"
            if not keep_going():
                return "cancelled"
            state = self.opened()
            if state != last:
                last, changed = state, now
            if self.reads is not None and not self.listened:
                # not serving yet: a tree still reading from the disk is still loading
                # (one large shard at a slow disk's speed opens no file for a long time)
                now_read = self.reads()
                if now_read != read:
                    read, read_at = now_read, now
            if not self.listened:
                ports = tree_listening_ports(self._pids())
                self.listened = bool(service_ports(ports))
                if ports and self.internal_at is None:
                    self.internal_at = now
            if self.internal_at is not None and now - touched_at >= 0.5:
                self.sample()
                touched_at = now
            quiet_since = changed if self.listened else max(changed, read_at)
            if now - quiet_since >= (self.quiet if self.listened else self.internal_quiet) \
                    and self.internal_at is not None:
                self.sample()
                self.ready_at = quiet_since
                return "ready"
            if now - t0 >= self.limit:
                return "limit"


def wait_idle(root: int, *, busy_cores: float = 0.25, interval: float = 0.5,
              limit: float = 30.0, each: Callable[[], object] = lambda: None) -> None:
    """Return once the tree of ``root`` uses less than ``busy_cores`` of CPU over an
    ``interval`` (its first requests are done), exits, or ``limit`` seconds pass: the
    residency scan then takes no CPU from the start it records. ``each()`` runs after every
    interval the tree was still there (e.g. :meth:`ReadyWatch.sample`: the pages a first
    request faults come after readiness)."""
    from headstart.watch.procfs import read_stat

    def cpu() -> float | None:
        stats = [read_stat(p) for p in [root, *_descendants(root)]]
        alive = [s for s in stats if s is not None and s.state not in ("Z", "X")]
        return sum(s.cpu_s for s in alive) if alive else None

    deadline = time.monotonic() + limit
    before = cpu()
    while before is not None and time.monotonic() < deadline:
        time.sleep(interval)
        now = cpu()
        if now is not None:
            each()
        if now is None or now - before < busy_cores * interval:
            return
        before = now


def _descendants(pid: int) -> list[int]:
    from headstart.watch.procfs import descendants

    return descendants(pid)


def _python_roots() -> list[str]:
    """This interpreter's installation (the target's, for a forked helper): what the maps
    recorder's residency scan covers."""
    import sysconfig

    paths = sysconfig.get_paths()
    roots = [sys.executable, *(paths.get(k) for k in ("stdlib", "platstdlib", "purelib",
                                                        "platlib"))]
    out: list[str] = []
    for p in roots:
        if p and os.path.exists(p):
            real = os.path.realpath(p)
            if not any(real == o or real.startswith(o.rstrip("/") + "/") for o in out):
                out.append(real)
    return out


class Armed:
    """A recorder already listening (:func:`arm`), with when it started."""

    def __init__(self, recorder, t_start_ns: int, t0: float) -> None:
        self.recorder, self.t_start_ns, self.t0 = recorder, t_start_ns, t0


def arm(target: int, mechanism: str = "auto", adopt: dict | None = None) -> Armed:
    """Start recording what the tree of ``target`` opens, now: what it opened before is
    only recovered where it still maps it at readiness (see
    :func:`headstart.profiles.capture.capture`). ``adopt``: the fanotify group ``headstart
    run`` opened before the target's first import (``{"fd", "devs", "t0", "t_start_ns"}``),
    which misses nothing. Raises OSError when the recorder cannot start."""
    from headstart.profiles.recorders import make_recorder

    t_start, t0 = time.time_ns(), time.monotonic()
    group = None
    if adopt is not None:
        t_start, t0 = int(adopt["t_start_ns"]), float(adopt["t0"])
        group = (int(adopt["fd"]), set(adopt["devs"]), t0)
    recorder = make_recorder(mechanism, ["/", *_python_roots(), os.getcwd()],
                             root_pid=target, include_root=True, adopt=group)
    recorder.start()
    return Armed(recorder, t_start, t0)


def record_live(target: int, *, key: str, identity: dict, command: list[str],
                snapshot=None, keep_going: Callable[[], bool] = lambda: True,
                say: Callable[[str], None] = lambda _m: None, mechanism: str = "auto",
                quiet: float = QUIET, limit: float = LIMIT,
                armed: Armed | None = None, because: str | None = None) -> str | None:
    """Record the start of ``target`` (a pid, already running) until it is ready; save and
    return the profile's path, or None (the reason goes to ``say``). ``armed``: the
    recorder :func:`arm` started earlier (default: one started now). ``because``: why this
    start records (kept in the profile, see :mod:`headstart.profiles.doubt`). Never
    raises."""
    try:
        return _record(target, key, identity, command, snapshot, keep_going, say, mechanism,
                       quiet, limit, armed, because)
    except Exception as exc:  # best-effort by contract: the target is not ours to harm
        say(f"recording a profile failed: {type(exc).__name__}: {exc}")
        if armed is not None:
            armed.recorder.stop()
        return None


def _record(target, key, identity, command, snapshot, keep_going, say, mechanism, quiet,
            limit, armed, because) -> str | None:
    from headstart.profiles.capture import build_profile, capture
    from headstart.profiles.doubt import recording_doubt
    from headstart.profiles.recorders import tree_pids
    from headstart.profiles.store import dist_names, save_profile
    from headstart.watch.tree_io import TreeReads

    armed = armed or arm(target, mechanism)
    recorder, t_start, t0 = armed.recorder, armed.t_start_ns, armed.t0
    weights = {f.real_path for f in snapshot.weight_files} if snapshot else set()
    roots = _python_roots()
    if snapshot:
        recorder.mark([snapshot.root])
    touches = TouchSampler(lambda: tree_pids(target, True), weights)
    touches.start()
    captured = None
    own = TreeReads(target, exclude=(os.getpid(),))  # this helper reads ahead in the tree
    own.start()
    watch = ReadyWatch(target, lambda: len(recorder.ordered()), quiet=quiet, limit=limit,
                       skip=weights, reads=own.total)  # weights: recorded whole below
    try:
        why = watch.wait(keep_going)
        if why != "ready":
            say(f"no profile recorded: the target {why} before it was ready")
            return None
        scan = []
        if recorder.mechanism == "maps":
            scan = [*roots, *(f.real_path for f in snapshot.files)] if snapshot else roots
        captured = capture(target, recorder, touches, weights=weights, t_start_ns=t_start,
                           extra_paths=scan, include_root=True, whole_weights=True,
                           touched=watch.touched,
                           # capture stops both; the page tables are sampled until the
                           # tree is idle, so what its first request faulted is kept
                           before_scan=lambda: wait_idle(target, each=watch.sample))
    finally:
        if captured is None:
            recorder.stop()
            touches.stop()
    site = [p for p in roots if p.endswith("-packages")]
    profile = build_profile(
        captured, key=key, identity=identity, command=command,
        snapshot={"root": snapshot.root, "commit": snapshot.commit, "source": snapshot.source}
        if snapshot else None,
        dists=dist_names(site), ready_seconds=watch.ready_at - t0,
        python=sys.version.split()[0], interpreter=sys.executable)
    profile.stats["recorded_by"] = "headstart run"
    profile.stats["recorded_because"] = because
    profile.stats["doubt"] = doubt = recording_doubt(profile.stats)
    path = save_profile(profile)
    if doubt:
        say(f"the recording was odd: {doubt}")
    missed = ("" if recorder.mechanism == "fanotify" else "; without root, files read "
              "without being mapped are in path order, not first-open order")
    say(f"recorded startup profile {key}: {len(profile.files)} files, "
        f"{profile.total_bytes / 1e6:.1f} MB ({recorder.mechanism}{missed})")
    return path
