"""What ``/proc`` says about processes: ``stat``, ``io``, ``schedstat``, ``maps``, children
(and the one thing written there: an autogroup's nice value).

The one place that reads and parses these files; the rest of headstart calls it.

One open and one read per file, no parsing beyond what is asked, so that sampling a process
tree every few milliseconds costs little. Every reader returns None when the process is
gone (or the file is not readable to us) instead of raising: processes exit between a
listing and a read, and that is the normal case, not an error.

Field meanings (proc(5)): ``stat`` fields 14/15 are user/system CPU in clock ticks, 12 the
major faults, 22 the start time in ticks since boot, 42 ``delayacct_blkio_ticks`` (time
blocked on block I/O; zero unless the kernel's ``task_delayacct`` is on). ``io``:
``read_bytes`` is what this process caused to be fetched from storage (its own reads, its
page faults and the readahead they triggered); ``rchar`` counts every byte read, cached or
not. ``schedstat``: nanoseconds on CPU, nanoseconds runnable but waiting for a CPU, and
time slices. ``maps``: one line per mapping, ``lo-hi perms offset MAJ:MIN inode [path]``
(hex but for the inode; a path may hold spaces and ends `` (deleted)`` when the file was
removed).
"""

from __future__ import annotations

import os

__all__ = ["CLK_TCK", "ProcFiles", "ProcIO", "ProcStat", "children", "descendants",
           "pid_names", "pids", "read_io", "read_maps", "read_schedstat", "read_stat",
           "running", "set_autogroup_nice", "status_field"]

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcStat:
    """The fields of ``/proc/PID/stat`` that startup accounting needs (times in seconds)."""

    __slots__ = ("blkio_delay_s", "comm", "majflt", "minflt", "num_threads", "pgrp", "pid",
                 "ppid", "session", "start_s", "state", "stime_s", "utime_s")

    def __init__(self, pid: int, comm: str, fields: list[bytes]) -> None:
        # fields[0] is field 3 (state): after the parenthesised comm, which may hold spaces
        self.pid = pid
        self.comm = comm
        self.state = fields[0].decode()
        self.ppid = int(fields[1])
        self.pgrp = int(fields[2])
        self.session = int(fields[3])
        self.minflt = int(fields[7])
        self.majflt = int(fields[9])
        self.utime_s = int(fields[11]) / CLK_TCK
        self.stime_s = int(fields[12]) / CLK_TCK
        self.num_threads = int(fields[17])
        self.start_s = int(fields[19]) / CLK_TCK  # since boot (CLOCK_BOOTTIME)
        self.blkio_delay_s = int(fields[39]) / CLK_TCK if len(fields) > 39 else 0.0

    @property
    def cpu_s(self) -> float:
        return self.utime_s + self.stime_s

    def __repr__(self) -> str:
        return (f"ProcStat(pid={self.pid}, comm={self.comm!r}, state={self.state}, "
                f"ppid={self.ppid}, cpu={self.cpu_s:.2f}s, majflt={self.majflt})")


class ProcIO:
    """``/proc/PID/io``: bytes read (``rchar``), fetched from storage (``read_bytes``)."""

    __slots__ = ("rchar", "read_bytes", "write_bytes")

    def __init__(self, rchar: int, read_bytes: int, write_bytes: int) -> None:
        self.rchar = rchar
        self.read_bytes = read_bytes
        self.write_bytes = write_bytes

    def __repr__(self) -> str:
        return f"ProcIO(rchar={self.rchar}, read_bytes={self.read_bytes})"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb", buffering=0) as fh:
            return fh.read()
    except OSError:  # gone, or not ours to read
        return None


def read_stat(pid: int, task: int | None = None) -> ProcStat | None:
    """``/proc/PID/stat`` (or one thread's, ``/proc/PID/task/TID/stat``); None if gone."""
    raw = _read(f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat")
    return None if raw is None else _parse_stat(pid, raw)


def _parse_stat(pid: int, raw: bytes) -> ProcStat | None:
    lp, rp = raw.find(b"("), raw.rfind(b")")
    if lp < 0 or rp < 0:
        return None
    try:
        return ProcStat(pid, raw[lp + 1:rp].decode(errors="replace"), raw[rp + 2:].split())
    except (IndexError, ValueError):
        return None


def running(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (reaps nothing)."""
    st = read_stat(pid)
    return st is not None and st.state not in ("Z", "X")


def status_field(pid: int | str, name: str) -> str | None:
    """One field of ``/proc/PID/status`` (``Umask``, ``SigIgn``...), stripped; None when the
    process or the field is not there."""
    raw = _read(f"/proc/{pid}/status")
    for line in (raw or b"").splitlines():
        key, _, value = line.partition(b":")
        if key == name.encode():
            return value.strip().decode()
    return None


def set_autogroup_nice(nice: int) -> None:
    """Give this process's autogroup (its session's CPU share, ``/proc/self/autogroup``)
    the nice value ``nice``; raising it needs no privilege. It weighs the whole session
    against other sessions: call it only from a session that holds nothing but one's own
    processes. Raises OSError where the kernel has no autogroups."""
    with open("/proc/self/autogroup", "w") as fh:
        fh.write(str(nice))


def read_maps(pid: int | str) -> list[list[bytes]]:
    """The mappings of ``/proc/PID/maps`` (``pid`` may be ``"self"``), each line split into
    its fields: ``[b"lo-hi", perms, offset, b"MAJ:MIN", inode]`` and the path as a sixth
    field when there is one; [] when the process is gone or not ours to read."""
    raw = _read(f"/proc/{pid}/maps")
    return [] if raw is None else [line.split(None, 5) for line in raw.splitlines()]


def pids() -> list[int]:
    """Every pid in ``/proc`` now (in no particular order); [] when it cannot be listed."""
    return [int(n) for n in pid_names() if n.isdigit()]


def pid_names() -> list[str]:
    """The names in ``/proc`` now, pids among them, unconverted (a caller that compares
    with what it saw last time skips the conversion of the hundreds it knows already)."""
    try:
        return os.listdir("/proc")
    except OSError:
        return []


def read_io(pid: int) -> ProcIO | None:
    """``/proc/PID/io``; None if gone or not readable (another user's process)."""
    raw = _read(f"/proc/{pid}/io")
    return None if raw is None else _parse_io(raw)


def _parse_io(raw: bytes) -> ProcIO:
    values: dict[bytes, int] = {}
    for line in raw.splitlines():
        key, _, value = line.partition(b":")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return ProcIO(values.get(b"rchar", 0), values.get(b"read_bytes", 0),
                  values.get(b"write_bytes", 0))


def read_schedstat(pid: int) -> tuple[float, float, int] | None:
    """(seconds on CPU, seconds runnable waiting for a CPU, time slices); None if gone."""
    raw = _read(f"/proc/{pid}/schedstat")
    return None if raw is None else _parse_schedstat(raw)


def _parse_schedstat(raw: bytes) -> tuple[float, float, int] | None:
    try:
        run_ns, wait_ns, slices = (int(x) for x in raw.split()[:3])
    except ValueError:
        return None
    return run_ns / 1e9, wait_ns / 1e9, slices


class ProcFiles:
    """``stat``, ``io`` and ``schedstat`` of one process, kept open and read again with
    ``pread`` at offset 0 (the kernel regenerates them each time): a sampler reading a
    tree every few milliseconds pays no path lookup per read. The descriptors belong to
    the process, not to its number: once it is reaped they read as gone (None), never as
    a new process that got the same pid. ``close`` when done."""

    _NAMES = ("stat", "io", "schedstat")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fds: dict[str, int | None] = {}

    def _raw(self, name: str) -> bytes | None:
        fd = self._fds.get(name, -1)
        if fd == -1:
            try:
                fd = os.open(f"/proc/{self.pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = None
            self._fds[name] = fd
        if fd is None:
            return None
        try:
            return os.pread(fd, 4096, 0) or None
        except OSError:  # gone (ESRCH), or not ours to read
            return None

    def stat(self) -> ProcStat | None:
        raw = self._raw("stat")
        return None if raw is None else _parse_stat(self.pid, raw)

    def io(self) -> ProcIO | None:
        raw = self._raw("io")
        return None if raw is None else _parse_io(raw)

    def schedstat(self) -> tuple[float, float, int] | None:
        raw = self._raw("schedstat")
        return None if raw is None else _parse_schedstat(raw)

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None and fd >= 0:
                os.close(fd)
        self._fds.clear()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (of any of its threads), oldest first where the kernel
    says; empty when it is gone."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tasks:
        raw = _read(f"/proc/{pid}/task/{tid}/children")
        if raw:
            out.extend(int(x) for x in raw.split())
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (not ``pid`` itself), parents before their children."""
    out: list[int] = []
    todo = [pid]
    seen = {pid}
    while todo:
        for child in children(todo.pop(0)):
            if child not in seen:
                seen.add(child)
                out.append(child)
                todo.append(child)
    return out
