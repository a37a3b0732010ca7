"""Where a cold start's disk reads come from: the server's own processes or the replay helper.

For each run (cold: the model and the target's Python evicted, disk throttled with a cgroup
when ``--disk-bps`` is given), every process in the run's cgroup is sampled every 20 ms:
``/proc/PID/io`` ``read_bytes`` (what it caused to be fetched from storage), major faults,
CPU time and how often it was seen in state D (uninterruptible sleep, which on a cold start
is waiting for the disk), and summed over its threads: time runnable but waiting for a CPU
(``schedstat``) and time blocked on block I/O (delay accounting: the run turns
``kernel.task_delayacct`` on and restores it). Processes in the target's session are the
server; others (the double-forked replay helper) are headstart's. The machine's CPU time
over the run (``/proc/stat``: user, system, iowait, softirq, steal, idle) follows.

    python benchmarks/replay_diagnose.py --disk-bps 300MB --model /tmp/demo2g \\
        --ready-request URL BODY -- headstart run -- transformers serve ... /tmp/demo2g

Prints one table per run (per process: role, MB read from disk, major faults, CPU s, D
samples as seconds) and the server's and the helper's disk reads per 0.5 s.
Needs root for the throttle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time

from headstart.bench.environment import find_interpreter, python_environment
from headstart.bench.harness import evict_checked
from headstart.bench.probes import RequestProbe
from headstart.bench.runner import run_once
from headstart.bench.throttle import throttle_for_paths
from headstart.sizes import parse_size
from headstart.watch import procfs

INTERVAL = 0.02


class TreeSampler(threading.Thread):
    """Samples every pid in ``procs()`` until stopped; keeps per-pid first/last values."""

    def __init__(self, procs, leader: list[int]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.leader = leader  # filled in once the target is started
        self.first: dict[int, tuple] = {}
        self.last: dict[int, tuple] = {}
        self.dstate: dict[int, int] = {}
        self.waits: dict[int, tuple[float, float]] = {}  # pid: (run-queue s, block I/O s)
        self.series: list[tuple[float, int, int]] = []  # t, server read_bytes, helper's
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def role(self, st: procfs.ProcStat) -> str:
        return "server" if self.leader and st.session == self.leader[0] else "helper"

    def run(self) -> None:
        while not self.stop_event.wait(INTERVAL):
            totals = {"server": 0, "helper": 0}
            for pid in self.procs():
                st, io = procfs.read_stat(pid), procfs.read_io(pid)
                if st is None or io is None:
                    continue
                row = (st.comm, self.role(st), io.read_bytes, st.majflt, st.cpu_s)
                self.first.setdefault(pid, row)
                self.last[pid] = row
                if st.state == "D":
                    self.dstate[pid] = self.dstate.get(pid, 0) + 1
                self.waits[pid] = _thread_waits(pid, self.waits.get(pid))
            for row in self.last.values():
                totals[row[1]] += row[2]
            self.series.append((time.monotonic() - self.t0, totals["server"], totals["helper"]))


_TASK_DELAYACCT = "/proc/sys/kernel/task_delayacct"


def _thread_waits(pid: int, last: tuple[float, float] | None) -> tuple[float, float]:
    """(seconds runnable but not running, seconds blocked on block I/O), summed over the
    process's threads now; never less than ``last`` (threads that exited keep counting)."""
    runq = blkio = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return last or (0.0, 0.0)
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                runq += int(fh.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
        st = procfs.read_stat(pid, int(tid))
        if st is not None:
            blkio += st.blkio_delay_s
    if last is not None:
        runq, blkio = max(runq, last[0]), max(blkio, last[1])
    return runq, blkio


def _cpu_times() -> list[float]:
    """user+nice, system, iowait, irq+softirq, steal, idle: seconds, all CPUs together."""
    with open("/proc/stat", encoding="ascii") as fh:
        f = [int(x) / procfs.CLK_TCK for x in fh.readline().split()[1:9]]
    return [f[0] + f[1], f[2], f[4], f[5] + f[6], f[7], f[3]]


def _report(sampler: TreeSampler, seconds: float | None, cpu: list[float]) -> dict:
    rows = []
    for pid, (comm, role, rb, majflt, cpu_s) in sorted(sampler.last.items()):
        runq, blkio = sampler.waits.get(pid, (0.0, 0.0))
        rows.append({"pid": pid, "comm": comm, "role": role, "read_mb": rb / 1e6,
                     "majflt": majflt, "cpu_s": cpu_s,
                     "d_s": sampler.dstate.get(pid, 0) * INTERVAL,
                     "runq_s": runq, "blkio_s": blkio})
    print(f"ready in {seconds:.2f} s" if seconds else "not ready")
    print(f"{'pid':>7} {'comm':16} {'role':7} {'read MB':>9} {'majflt':>7} {'cpu s':>7} "
          f"{'D s':>6} {'runq s':>7} {'blkio s':>8}")
    for r in rows:
        if r["read_mb"] < 0.5 and r["cpu_s"] < 0.1:
            continue
        print(f"{r['pid']:>7} {r['comm']:16} {r['role']:7} {r['read_mb']:9.1f} "
              f"{r['majflt']:7d} {r['cpu_s']:7.2f} {r['d_s']:6.2f} {r['runq_s']:7.2f} "
              f"{r['blkio_s']:8.2f}")
    names = ("user", "system", "iowait", "irq+softirq", "steal", "idle")
    print("machine CPU s over the run: " + ", ".join(f"{n} {v:.2f}"
                                                    for n, v in zip(names, cpu, strict=True)))
    bins: dict[int, list[int]] = {}
    for t, server, helper in sampler.series:
        bins[int(t / 0.5)] = [server, helper]
    prev = [0, 0]
    line = []
    for b in sorted(bins):
        s, h = bins[b]
        line.append(f"{b * 0.5:4.1f}s srv {(s - prev[0]) / 1e6:6.1f} "
                    f"hlp {(h - prev[1]) / 1e6:6.1f}")
        prev = [s, h]
    print("MB read from disk per 0.5 s (server / helper):")
    for i in range(0, len(line), 3):
        print("   " + " | ".join(line[i:i + 3]))
    return {"seconds": seconds, "processes": rows, "series": sampler.series,
            "machine_cpu": dict(zip(names, cpu, strict=True))}


@contextlib.contextmanager
def _delayacct():
    """``kernel.task_delayacct`` on for the run (root), as it was after."""
    try:
        with open(_TASK_DELAYACCT, encoding="ascii") as fh:
            was = fh.read().strip()
        with open(_TASK_DELAYACCT, "w", encoding="ascii") as fh:
            fh.write("1")
    except OSError:
        was = None
    try:
        yield
    finally:
        if was is not None:
            with contextlib.suppress(OSError), open(_TASK_DELAYACCT, "w", encoding="ascii") as fh:
                fh.write(was)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--disk-bps", default=None)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ready-request", nargs=2, metavar=("URL", "JSON"), required=True)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", help="write every sample here")
    ap.add_argument("--warm", action="store_true", help="do not evict before each run")
    ap.add_argument("--logs", help="keep each run's stdout/stderr here (default: discarded)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    inner = cmd[cmd.index("--") + 1:] if "--" in cmd else cmd
    interp = find_interpreter(inner)
    env = python_environment(interp) if interp else None
    evict_paths = [*(env.evict_paths() if env else []), os.path.realpath(args.model)]
    probe = RequestProbe(args.ready_request[0], args.ready_request[1])
    results = []
    bps = parse_size(args.disk_bps) if args.disk_bps else None
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.logs or scratch
        for i in range(args.runs):
            if not args.warm:
                ev = evict_checked(evict_paths)
                print(f"run {i + 1}: evicted {ev['files']} files, "
                      f"{ev['residual_percent']:.2f} % stayed resident")
            leader: list[int] = []
            # unthrottled: a cgroup all the same (it finds the helper), with a limit no disk
            # here reaches
            with throttle_for_paths(bps or 10**12, [args.model]) as th, _delayacct():
                sampler = TreeSampler(th.procs, leader)
                before = _cpu_times()
                r = _run(cmd, probe, tmp, i, args.timeout, th.preexec_fn, sampler, leader)
                cpu = [b - a for a, b in zip(before, _cpu_times(), strict=True)]
            results.append(_report(sampler, r.seconds, cpu))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh)
    return 0


def _run(cmd, probe, tmp, i, timeout, preexec, sampler, leader):
    # the leader pid is known only after Popen: find it as the session leader in the cgroup
    def watch_leader() -> None:
        while not leader and not sampler.stop_event.is_set():
            for pid in sampler.procs():
                st = procfs.read_stat(pid)
                if st is not None and st.session == pid:
                    leader.append(pid)
                    return
            time.sleep(0.005)

    sampler.start()
    threading.Thread(target=watch_leader, daemon=True).start()
    try:
        return run_once(cmd, probe, os.path.join(tmp, f"run-{i}"), timeout=timeout,
                        preexec_fn=preexec)
    finally:
        sampler.stop_event.set()


if __name__ == "__main__":
    sys.exit(main())
