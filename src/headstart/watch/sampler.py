"""Follow a process tree from outside and sample what each process does, every ~20 ms.

A daemon thread lists ``/proc`` once per tick (cheap: one ``listdir``), reads the ``stat``
of pids it has not seen (to learn their parent) and, for every live member of the tree,
``stat``, ``io`` and ``schedstat``. It records per pid: start (kernel start time), exec
(``comm`` changed), exit (gone or zombie), CPU, bytes fetched from storage and the state of
the main thread at each tick (R running, S sleeping, D waiting for the disk).

Where the time went while blocked: with the kernel's delay accounting on
(``kernel.task_delayacct``), ``stat`` field 42 is exact (clock ticks, main thread only);
otherwise ticks seen in state D are counted (resolution one interval). ``source`` says
which one was used.

Orphans: when the sampling process is a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``,
:func:`become_subreaper`), a daemon that double-forks out of the tree is re-parented to us
and stays in view; ``adopt`` makes every child of ours part of the tree, and zombies we
inherit are sampled one last time and reaped.

Bytes: ``/proc/PID/io`` counts what a process and its already reaped children fetched
(the kernel adds a child's counts to its parent at ``wait``). :meth:`TrackedProcess.own_bytes`
subtracts the children we saw exit, so each byte is counted once in the tree.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

from headstart.watch import procfs

__all__ = ["TrackedProcess", "TreeSampler", "become_subreaper", "boot_to_monotonic",
           "delayacct_enabled"]

_PR_SET_CHILD_SUBREAPER = 36
SAMPLER_NICE = 19  # the sampler thread's nice value (what it weighs against: see _loop)


def become_subreaper() -> bool:
    """Make orphaned descendants of this process re-parent to it (Linux >= 3.4)."""
    try:
        from headstart.pagecache.syscalls import libc

        return libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def delayacct_enabled() -> bool:
    try:
        with open("/proc/sys/kernel/task_delayacct") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False


def boot_to_monotonic() -> float:
    """What to add to a CLOCK_BOOTTIME reading (``stat`` start times) to get monotonic."""
    return time.monotonic() - time.clock_gettime(time.CLOCK_BOOTTIME)


class TrackedProcess:
    """One process of the tree as sampled. Times are ``time.monotonic()`` seconds."""

    def __init__(self, pid: int, ppid: int, comm: str, start: float, seen: float) -> None:
        self.pid, self.ppid, self.comm = pid, ppid, comm
        self.start = start          # kernel start time (10 ms resolution)
        self.first_seen = seen
        self.last_seen = seen
        self.exec_at: float | None = None
        self.exit_at: float | None = None
        self.exit_status: int | None = None  # known only for processes we reaped
        self.argv: list[str] = []
        self.comms: list[str] = [comm]
        self.cpu_s = 0.0            # user + system, every thread (and reaped children)
        self.child_cpu_s = 0.0      # cutime + cstime: reaped children's CPU
        self.read_bytes = 0         # fetched from storage, incl. reaped children
        self.rchar = 0
        self.majflt = 0
        self.run_s = 0.0            # main thread on CPU (schedstat)
        self.runq_s = 0.0           # main thread runnable, waiting for a CPU
        self.blkio_delay_s = 0.0    # delay accounting, main thread, since first seen
        self.blkio_raw: float | None = None
        self.ticks = {"R": 0.0, "S": 0.0, "D": 0.0}  # seconds per main-thread state
        self.threads = 1
        # (t, cpu_s, read_bytes, D seconds, S seconds, blkio delay s), one per sample
        self.series: list[tuple[float, float, int, float, float, float]] = []
        self.children: list[int] = []

    @property
    def alive(self) -> bool:
        return self.exit_at is None

    def at(self, t: float) -> tuple[float, float, int, float, float, float]:
        """The last sample at or before ``t`` (zeros before the first)."""
        best = (t, 0.0, 0, 0.0, 0.0, 0.0)
        for s in self.series:  # short lists; the report calls this a few times per process
            if s[0] > t:
                break
            best = s
        return best

    def reaped_children(self, tree: dict[int, TrackedProcess], t: float) -> list[TrackedProcess]:
        """Children that exited by ``t`` while still ours: the kernel added their counts
        to ours when we reaped them."""
        return [tree[c] for c in self.children if c in tree and tree[c].ppid == self.pid
                and tree[c].exit_at is not None and tree[c].exit_at <= t]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "pid", "ppid", "comm", "comms", "argv", "start", "first_seen", "last_seen",
            "exec_at", "exit_at", "exit_status", "cpu_s", "read_bytes", "rchar", "majflt",
            "run_s", "runq_s", "blkio_delay_s", "ticks", "threads", "children")}


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


class TreeSampler:
    """Sample ``root`` and its descendants every ``interval`` seconds in a daemon thread.

    ``adopt``: every child of this process belongs to the tree (orphans re-parented to a
    subreaper). ``on_tick(now)`` runs in the sampler thread after each sample (log tails).
    """

    def __init__(self, root: int, interval: float = 0.02, *, adopt: bool = False,
                 on_tick: Callable[[float], None] | None = None) -> None:
        self.root = root
        self.interval = interval
        self.adopt = adopt
        self.on_tick = on_tick
        self.procs: dict[int, TrackedProcess] = {}
        self.source = "delayacct" if delayacct_enabled() else "sampled D state"
        self.ticks = 0
        self.cost_s = 0.0           # CPU time the sampler thread used
        self._me = os.getpid()
        self.thread_id: int | None = None  # the sampler thread's tid, once it runs
        self._foreign: set[int] = set()
        self._placed: set[str] = {str(self._me)}  # /proc names known as member or foreign
        self._files: dict[int, procfs.ProcFiles] = {}  # kept open on live members
        self._offset = boot_to_monotonic()
        # delay accounting counted all the life of a process born after this moment
        self._since = time.monotonic() if self.source == "delayacct" else float("inf")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="headstart-sampler",
                                        daemon=True)

    def start(self) -> TreeSampler:
        self.sample()  # the root at once: a fast exit must still leave a record
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, after one last sample."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
        self.close()

    def live(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self.procs.values() if p.alive]

    def _loop(self) -> None:
        # Lowest CPU priority for this thread only (Linux: a tid's nice is its own): it
        # yields to the readiness probe and, where the kernel's autogroups are off, to the
        # target. With autogroups on (a target in a session of its own is weighed as one
        # group against ours) what keeps watching cheap is the 0.2 ms a tick costs.
        self.thread_id = threading.get_native_id()
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, self.thread_id, SAMPLER_NICE)
        while not self._stop.wait(self.interval):
            c0 = time.thread_time()
            self.sample()
            if self.on_tick is not None:
                self.on_tick(time.monotonic())
            self.cost_s += time.thread_time() - c0

    def _member(self, pid: int, ppid: int) -> bool:
        return pid == self.root or ppid in self.procs or (self.adopt and ppid == self._me)

    def sample(self) -> None:
        """One tick: find new members, then read every live member."""
        with self._lock:
            now = time.monotonic()
            self.ticks += 1
            # only names not placed yet (member, foreign or us) are converted and read
            pids = sorted(int(n) for n in procfs.pid_names()
                          if n not in self._placed and n.isdigit())
            # parents first (lower pid usually), then a second pass for late parents
            for _ in range(2):
                for pid in pids:
                    if pid in self.procs or pid in self._foreign or pid == self._me:
                        continue
                    st = procfs.read_stat(pid)
                    if st is None:
                        continue
                    if self._member(pid, st.ppid):
                        self._add(st, now)
                    elif st.ppid not in self.procs:
                        self._foreign_maybe(pid, st)
            for rec in list(self.procs.values()):
                if rec.alive:
                    self._read(rec, now)
                    files = None if rec.alive else self._files.pop(rec.pid, None)
                    if files is not None:
                        files.close()

    def close(self) -> None:
        """Close the descriptors kept on live members (``stop`` does)."""
        with self._lock:
            for files in self._files.values():
                files.close()
            self._files.clear()

    def _files_of(self, pid: int) -> procfs.ProcFiles:
        files = self._files.get(pid)
        if files is None:  # sampled again after close() (the teardown's last looks)
            files = self._files[pid] = procfs.ProcFiles(pid)
        return files

    def _foreign_maybe(self, pid: int, st: procfs.ProcStat) -> None:
        # Only forget a pid for good once its parent is known not to be ours (second pass
        # may still find the parent); pids are recycled rarely within one start.
        if st.ppid in self._foreign or st.ppid <= 2 or st.ppid == self._me:
            self._foreign.add(pid)
            self._placed.add(str(pid))

    def _add(self, st: procfs.ProcStat, now: float) -> None:
        rec = TrackedProcess(st.pid, st.ppid, st.comm, st.start_s + self._offset, now)
        rec.argv = _cmdline(st.pid)
        parent = self.procs.get(st.ppid)
        if parent is not None:
            parent.children.append(st.pid)
            if parent.comm != st.comm:  # exec'd before we first saw it
                rec.exec_at = now
        self.procs[st.pid] = rec
        self._placed.add(str(st.pid))

    def _read(self, rec: TrackedProcess, now: float) -> None:
        st = self._files_of(rec.pid).stat()
        dt = now - rec.last_seen
        if st is None or st.state in ("Z", "X"):
            if st is not None:
                self._update(rec, st, now)
                self._reap(rec)
            rec.exit_at = now
            return
        if st.state in rec.ticks:
            rec.ticks[st.state] += dt
        elif st.state in ("I", "T", "t"):
            rec.ticks["S"] += dt
        self._update(rec, st, now)
        rec.last_seen = now

    def _update(self, rec: TrackedProcess, st: procfs.ProcStat, now: float) -> None:
        if st.ppid != rec.ppid:  # re-parented (orphan)
            rec.ppid = st.ppid
        if st.comm != rec.comm:
            rec.comm = st.comm
            rec.comms.append(st.comm)
            rec.exec_at = now
            rec.argv = _cmdline(rec.pid) or rec.argv
        rec.cpu_s = st.cpu_s
        rec.majflt = st.majflt
        rec.threads = st.num_threads
        # Each increment is at most the wall time since the last sample (one main thread):
        # a task that blocked before delay accounting was switched on reports its whole
        # uptime as a delay when it wakes (seen on 6.18); such a jump is not a delay.
        # A process born after the sampler started (start time in 10 ms ticks, hence the
        # margin) counts from zero: on a busy machine the first look can come late.
        raw = st.blkio_delay_s
        base = rec.blkio_raw
        since = rec.last_seen
        if base is None and rec.start > self._since + 0.02:
            base, since = 0.0, rec.start
        if base is not None and raw > base:
            rec.blkio_delay_s += min(raw - base, now - since + 0.011)
        rec.blkio_raw = raw
        files = self._files_of(rec.pid)
        io = files.io()
        if io is not None:
            rec.read_bytes, rec.rchar = io.read_bytes, io.rchar
        sched = files.schedstat()
        if sched is not None:
            rec.run_s, rec.runq_s = sched[0], sched[1]
        rec.series.append((now, rec.cpu_s, rec.read_bytes, rec.ticks["D"], rec.ticks["S"],
                           rec.blkio_delay_s))

    def _reap(self, rec: TrackedProcess) -> None:
        # A zombie we inherited (subreaper) is ours to reap; the root is reaped by whoever
        # started it (subprocess.Popen), never here.
        if rec.ppid != self._me or rec.pid == self.root:
            return
        try:
            pid, status = os.waitpid(rec.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            rec.exit_status = os.waitstatus_to_exitcode(status)
