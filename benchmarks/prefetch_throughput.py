"""Cold page-cache prefetch throughput: headstart against cat, vmtouch and the seed's reader.

    python benchmarks/prefetch_throughput.py [--dir D] [--files 4] [--size 512MiB]
        [--runs 3] [--throttle 300MB] [--no-throttle] [--json FILE]

Generates ``--files`` files of random data in ``--dir`` (default: a temporary folder on
disk, refused if it is tmpfs) named like safetensors shards, and deletes them afterwards.
Every contender runs as its own process; before every run all files are evicted
(``POSIX_FADV_DONTNEED``) and checked cold with cachestat, and after it they are checked
resident. Contenders are interleaved round by round, in a rotating order, so drift on a
shared machine hits all of them alike. Reported: min/median/max GB/s (file bytes / wall
time of the process), CPU seconds per GB (user+sys of the process tree, from ``wait4``),
and the median's ratio to ``cat``. With root, the same again with the disk throttled to
``--throttle`` bytes/s (cgroup v1 blkio or v2 io.max, :mod:`headstart.bench.throttle`).
The warm case runs each contender on files already resident.

Contenders:

* ``headstart``: ``headstart prefetch DIR`` with its defaults (whole CLI process).
* ``headstart pread``: the same with ``--method pread`` (buffered reads, reused buffers).
* ``cat``: ``cat FILES > /dev/null``.
* ``vmtouch -t``: if installed (Debian package ``vmtouch``).
* ``seed reader``: the seed's shape: 8 threads, 16 MiB blocks, a fresh buffer per read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from headstart.pagecache import syscalls  # noqa: E402
from headstart.pagecache.evict import evict  # noqa: E402
from headstart.pagecache.residency import residency  # noqa: E402
from headstart.sizes import format_size, parse_size  # noqa: E402

SEED_READER = r"""
import os, sys
from concurrent.futures import ThreadPoolExecutor
BLOCK = 16 * 2**20
def read_block(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        f.read(BLOCK)  # a fresh 16 MiB buffer for every block, as the seed did
with ThreadPoolExecutor(8) as pool:
    for path in sys.argv[1:]:
        for off in range(0, os.path.getsize(path), BLOCK):
            pool.submit(read_block, path, off)
"""


def generate(folder: str, count: int, size: int) -> list[str]:
    chunk = os.urandom(16 * 2**20)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"model-{i + 1:05d}-of-{count:05d}.safetensors")
        with open(path, "wb") as fh:
            left = size
            while left:
                n = min(left, len(chunk))
                fh.write(chunk[:n])
                left -= n
            fh.flush()
            os.fsync(fh.fileno())
        paths.append(path)
    return paths


def make_cold(paths: list[str]) -> None:
    result = evict(paths)
    if result.after:
        raise SystemExit(f"could not evict: {result.after} bytes stayed resident "
                         f"({[f.reasons for f in result.files if f.after]})")
    if residency(paths).resident:
        raise SystemExit("files are not cold after eviction")


def run_measured(argv: list[str], preexec=None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process tree, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec)
    out = proc.stdout.read() if proc.stdout else b""
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, out.decode(errors="replace")


def contenders(folder: str, paths: list[str]) -> dict[str, list[str]]:
    hs = [sys.executable, "-m", "headstart", "prefetch", folder, "--json", "--no-progress"]
    c = {
        "headstart": hs,
        "headstart pread": [*hs, "--method", "pread"],
        "cat": ["sh", "-c", 'cat "$@" > /dev/null', "cat", *paths],
    }
    if shutil.which("vmtouch"):
        c["vmtouch -t"] = ["vmtouch", "-t", "-q", *paths]
    c["seed reader"] = [sys.executable, "-c", SEED_READER, *paths]
    return c


def bench(case: str, cmds: dict[str, list[str]], paths: list[str], total: int, runs: int,
          warm: bool, preexec=None) -> list[dict]:
    samples: dict[str, list[tuple[float, float, float, float | None]]] = {k: [] for k in cmds}
    names = list(cmds)
    for r in range(runs):
        # rotate the order each round: on a VM the first reader after an eviction can pay
        # for memory the host reclaimed, and no contender should always be that one
        for name in names[r % len(names):] + names[:r % len(names)]:
            argv = cmds[name]
            if warm:
                subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)
            else:
                make_cold(paths)
            wall, cpu, out = run_measured(argv, preexec)
            pct = residency(paths).percent
            inner = None
            if name.startswith("headstart"):
                inner = json.loads(out)["stats"]["elapsed"]
            samples[name].append((wall, cpu, pct, inner))
    rows = []
    cat_med = statistics.median(total / s[0] for s in samples["cat"])
    for name, ss in samples.items():
        gbs = sorted(total / s[0] / 1e9 for s in ss)
        med = statistics.median(gbs)
        inner = [s[3] for s in ss if s[3] is not None]
        rows.append({
            "case": case, "contender": name, "runs": len(ss),
            "gbs_min": gbs[0], "gbs_median": med, "gbs_max": gbs[-1],
            "wall_median_s": statistics.median(s[0] for s in ss),
            "cpu_s_per_gb": statistics.median(s[1] / (total / 1e9) for s in ss),
            "ratio_to_cat": med / (cat_med / 1e9),
            "resident_min_pct": min(s[2] for s in ss),
            "headstart_elapsed_median_s": statistics.median(inner) if inner else None,
        })
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| case | contender | GB/s min / median / max | CPU s/GB | x cat | resident | "
           "wall s (in-process s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        inner = r["headstart_elapsed_median_s"]
        wall = f"{r['wall_median_s']:.3f}" + (f" ({inner:.3f})" if inner is not None else "")
        out.append(f"| {r['case']} | {r['contender']} | {r['gbs_min']:.2f} / "
                   f"{r['gbs_median']:.2f} / {r['gbs_max']:.2f} | {r['cpu_s_per_gb']:.3f} | "
                   f"{r['ratio_to_cat']:.2f} | {r['resident_min_pct']:.1f}% | {wall} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="where to generate the files (default: a temp dir on disk)")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--size", default="512MiB", help="size of each file")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--throttle", default="300MB", help="read limit for the throttled case")
    ap.add_argument("--no-throttle", action="store_true", help="skip the throttled case")
    ap.add_argument("--only", action="append", help="run only these contenders (repeatable)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()

    base = args.dir or tempfile.gettempdir()
    if syscalls.fs_type(base) in syscalls.TMPFS_LIKE:
        base = "/var/tmp"
        if syscalls.fs_type(base) in syscalls.TMPFS_LIKE:
            raise SystemExit("no on-disk folder: pass --dir on a real disk")
    folder = tempfile.mkdtemp(prefix="headstart-bench-", dir=base)
    size = parse_size(args.size)
    total = size * args.files
    print(f"generating {args.files} x {format_size(size)} in {folder} ...", file=sys.stderr)
    rows: list[dict] = []
    try:
        paths = generate(folder, args.files, size)
        cmds = contenders(folder, paths)
        if args.only:
            cmds = {k: v for k, v in cmds.items() if k in args.only or k == "cat"}
        print("cold ...", file=sys.stderr)
        rows += bench("cold", cmds, paths, total, args.runs, warm=False)
        print("warm ...", file=sys.stderr)
        rows += bench("warm", cmds, paths, total, args.runs, warm=True)
        if not args.no_throttle:
            from headstart.bench.throttle import throttle_reads
            from headstart.errors import ThrottleError

            bps = parse_size(args.throttle)
            try:
                with throttle_reads(bps, folder) as t:
                    print(f"cold, throttled to {args.throttle}/s ...", file=sys.stderr)
                    rows += bench(f"cold {args.throttle}/s", cmds, paths, total, args.runs,
                                  warm=False, preexec=t.preexec_fn)
            except ThrottleError as exc:
                print(f"throttled case skipped: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{args.files} x {format_size(size)}, {args.runs} runs each, "
          f"{os.cpu_count()} CPUs, kernel {os.uname().release}\n")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
