"""Overhead of `headstart run` on a trivial target: `headstart run -- python -c pass` vs
`python -c pass`, interleaved, everything warm. Target: under 20 ms.

    python benchmarks/run_overhead.py [--runs 30]

Prints min/median/max wall time of each and the difference of medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    headstart = shutil.which("headstart") or os.path.join(os.path.dirname(sys.executable),
                                                          "headstart")
    variants = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "headstart run -- python -c pass": [headstart, "run", "--", sys.executable, "-c", "pass"],
        "python -m headstart run -- python -c pass": [sys.executable, "-m", "headstart", "run",
                                                      "--", sys.executable, "-c", "pass"],
    }
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for cmd in variants.values():  # warm-up: page cache, pyc files
        _time(cmd)
    for i in range(args.runs):
        order = list(variants)
        order = order[i % len(order):] + order[: i % len(order)]
        for name in order:
            samples[name].append(_time(variants[name]))
    base = statistics.median(samples["python -c pass"])
    print(f"| command | min ms | median ms | max ms | median overhead ms |  (n={args.runs})")
    print("|---|---:|---:|---:|---:|")
    for name, xs in samples.items():
        med = statistics.median(xs)
        print(f"| `{name}` | {min(xs)*1e3:.1f} | {med*1e3:.1f} | {max(xs)*1e3:.1f} | "
              f"{(med - base)*1e3:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
