"""The process-tree sampler on real processes: exec, exit, parents, orphans it inherits as a
child subreaper (sampled to the end and reaped, with their exit status)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from headstart.watch.sampler import SAMPLER_NICE, TreeSampler


def test_exec_exit_and_parent() -> None:
    # sh forks a sleep, then exec's into another program; each lasts 1 s so that the
    # sampler (nice 19) ticks inside both even when the machine's cores are busy
    proc = subprocess.Popen(["sh", "-c", "sleep 1; exec sleep 1"])
    sampler = TreeSampler(proc.pid, 0.01).start()
    proc.wait(10)
    sampler.stop()
    root = sampler.procs[proc.pid]
    assert root.comms == ["sh", "sleep"]
    assert root.exec_at is not None and root.exit_at is not None
    assert root.start <= root.exec_at < root.exit_at
    assert root.exec_at - root.start >= 0.9
    kids = [r for r in sampler.procs.values() if r.ppid == proc.pid]
    assert [k.comm for k in kids] == ["sleep"]
    assert kids[0].exit_at is not None and kids[0].exit_at <= root.exec_at + 0.05


def test_orphans_are_adopted_sampled_and_reaped() -> None:
    # run in a child: becoming a subreaper is for the life of the process
    code = r"""
import os, subprocess, sys, time
from headstart.watch.sampler import TreeSampler, become_subreaper
assert become_subreaper()
proc = subprocess.Popen([sys.executable, "-c",
    "import os, time\nif os.fork() == 0:\n    time.sleep(0.4)\n    os._exit(7)\n"])
sampler = TreeSampler(proc.pid, 0.01, adopt=True).start()
proc.wait(10)
end = time.monotonic() + 10
while time.monotonic() < end:
    orphans = [r for r in sampler.procs.values() if r.pid != proc.pid]
    if orphans and not orphans[0].alive:
        break
    time.sleep(0.02)
sampler.stop()
(orphan,) = [r for r in sampler.procs.values() if r.pid != proc.pid]
assert orphan.ppid == os.getpid(), orphan.ppid
assert orphan.exit_status == 7, orphan.exit_status
assert orphan.exit_at - orphan.start >= 0.35
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"



def test_sampler_thread_yields_the_cpu_and_nothing_else_does() -> None:
    # Only the sampler thread runs at the lowest priority: the caller's threads keep theirs.
    proc = subprocess.Popen(["sleep", "1"])
    sampler = TreeSampler(proc.pid, 0.01).start()
    try:
        for _ in range(200):
            if sampler.thread_id is not None and sampler.ticks > 2:
                break
            time.sleep(0.01)
        assert sampler.thread_id is not None

        def nice(tid: int) -> int:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                return int(fh.read().rsplit(")", 1)[1].split()[16])

        assert nice(sampler.thread_id) == SAMPLER_NICE == 19
        # (under `nice -n 19` the caller was there already: then only that it stayed so)
        assert nice(threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        sampler.stop()
        proc.kill()
        proc.wait()
