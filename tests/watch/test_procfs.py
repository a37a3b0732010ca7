"""watch.procfs on real processes: the kept-open readers say what the path readers say, and
once the process is reaped they say it is gone."""

from __future__ import annotations

import os
import subprocess
import sys

from headstart.watch import procfs


def test_kept_open_readers_match_and_go_with_the_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c",
                             "open(__import__('sys').executable, 'rb').read(); "
                             "import time; time.sleep(30)"])
    files = procfs.ProcFiles(proc.pid)
    try:
        for _ in range(3):  # read again and again through the same descriptors
            st, by_path = files.stat(), procfs.read_stat(proc.pid)
            assert st is not None and by_path is not None
            assert (st.pid, st.ppid, st.comm, st.start_s) == (
                by_path.pid, by_path.ppid, by_path.comm, by_path.start_s)
            io, sched = files.io(), files.schedstat()
            assert io is not None and sched is not None
            assert io.rchar <= procfs.read_io(proc.pid).rchar
        proc.kill()
        proc.wait()
        assert files.stat() is None and files.io() is None and files.schedstat() is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        files.close()


def test_pid_names_holds_this_process() -> None:
    assert str(os.getpid()) in procfs.pid_names()
    assert os.getpid() in procfs.pids()
