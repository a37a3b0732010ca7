"""A synthetic process tree for tests/explain/test_explain.py (run by `headstart explain`).

argv: SEQ_FILE RANDOM_FILE PAGES SPIN_S SLEEP_S. The root forks:
  reader   - reads SEQ_FILE whole (cold), writes what its own thread measured of that read to
             SEQ_FILE.self.json, spins SPIN_S on CPU, sleeps, exits;
  random   - reads PAGES distinct 4 KiB pages of RANDOM_FILE (no readahead), writes what its
             own thread measured of that loop to RANDOM_FILE.self.json, sleeps, exits;
  daemon   - a double-forked child in its own session that sleeps for a minute (left behind);
then sleeps SLEEP_S, reaps the first two, writes its pids to stdout and "ready".
"""

import json
import os
import random
import sys
import time

seq, rnd, pages, spin_s, sleep_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    float(sys.argv[4]), float(sys.argv[5])


def spin(seconds: float) -> None:
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass


def schedstat() -> tuple[float, float]:
    """(on-CPU s, run-queue wait s) of this thread, from the scheduler's own counters."""
    with open("/proc/thread-self/schedstat") as fh:
        cpu_ns, runq_ns = fh.read().split()[:2]
    return int(cpu_ns) / 1e9, int(runq_ns) / 1e9


def measured(path: str, loop) -> None:
    """Run loop() and write its wall time and the time this thread spent blocked in it (off
    the CPU and not waiting for it: on the disk) to PATH.self.json."""
    t0, (cpu0, runq0) = time.monotonic(), schedstat()
    loop()
    wall, (cpu1, runq1) = time.monotonic() - t0, schedstat()
    with open(path + ".self.json", "w") as fh:
        json.dump({"wall_s": wall, "blocked_s": wall - (cpu1 - cpu0) - (runq1 - runq0)}, fh)


def read_all(path: str) -> None:
    def loop() -> None:
        with open(path, "rb", buffering=0) as fh:
            while fh.read(1 << 20):
                pass
    measured(path, loop)


def read_random(path: str, n: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # exactly one page per read
    total = os.fstat(fd).st_size // 4096
    pages = random.Random(1).sample(range(total), n)

    def loop() -> None:
        for page in pages:
            os.pread(fd, 4096, page * 4096)
    measured(path, loop)
    os.close(fd)


def child(work) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            work()
            time.sleep(0.3)  # stay one sample longer than the last read: exact bytes
        finally:
            os._exit(0)
    return pid


reader = child(lambda: (read_all(seq), spin(spin_s)))
randomer = child(lambda: read_random(rnd, pages))
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    if os.fork() == 0:
        os.setsid()
        os.write(w, str(os.getpid()).encode())
        time.sleep(60)
    os._exit(0)
os.waitpid(middle, 0)
daemon = int(os.read(r, 32))
time.sleep(sleep_s)
os.waitpid(reader, 0)
os.waitpid(randomer, 0)
print(json.dumps({"root": os.getpid(), "reader": reader, "random": randomer,
                  "middle": middle, "daemon": daemon}), flush=True)
print("ready", flush=True)
time.sleep(60)
