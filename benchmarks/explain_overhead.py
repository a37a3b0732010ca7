"""What watching costs the start it watches: the same warm start with and without
``headstart explain``'s sampler (every process's stat/io/schedstat every 20 ms, and the log
tail), interleaved and rotated, everything else identical (same launch, readiness probe,
teardown and environment: PYTHONUNBUFFERED=1, PYTHONPROFILEIMPORTTIME=1).

    python benchmarks/explain_overhead.py --runs 4 --ready-request URL JSON -- CMD ...

Prints min / median / max launch -> ready of each, the difference of medians, and the
sampler's own CPU time. One untimed start first fills the page cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from headstart.bench.probes import RequestProbe, UrlProbe
from headstart.explain.session import watch_start


def _mmm(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--ready-url")
    ap.add_argument("--ready-request", nargs=2, metavar=("URL", "JSON"))
    ap.add_argument("--no-import-times", action="store_true")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    probe = RequestProbe(*args.ready_request) if args.ready_request else UrlProbe(args.ready_url)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not args.no_import_times:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    times: dict[bool, list[float]] = {True: [], False: []}
    cost: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        watch_start("warm-up", cmd, probe, os.path.join(tmp, "w"), env=env, sample=False)
        for i in range(args.runs):
            for sample in ((True, False) if i % 2 == 0 else (False, True)):
                tl = watch_start("run", cmd, probe, os.path.join(tmp, f"{i}-{sample}"),
                                 env=env, sample=sample, interval=args.interval)
                if not tl.result.ok:
                    print(f"run {i} sample={sample}: {tl.result.reason}", file=sys.stderr)
                    return 1
                times[sample].append(tl.result.seconds)
                if sample:
                    cost.append(tl.sampler_cpu_s)
                print(f"run {i + 1} {'sampled' if sample else 'plain  '}: "
                      f"{tl.result.seconds:.2f} s", flush=True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"without sampling: {_mmm(times[False])}")
    print(f"with sampling:    {_mmm(times[True])}")
    print(f"difference of medians: {on - off:+.3f} s ({100 * (on - off) / off:+.1f} %); "
          f"sampler CPU per start {statistics.median(cost):.3f} s "
          f"({args.interval * 1e3:.0f} ms interval)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
