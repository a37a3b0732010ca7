"""Start of a worker that imports heavy-ish modules: spawn vs cold forkserver vs prewarmed.

    python benchmarks/forkserver_child_start.py [--runs 7] [--startup 1.0] [--modules M,...]

Each sample is a fresh "API process" (a subprocess of this script) that does ``--startup``
seconds of CPU work (its own startup), then starts one worker with ``multiprocessing`` that
imports ``--modules`` (default: a few stdlib packages, plus torch when it is installed) and
reports back. Modes, interleaved run by run:

* ``spawn``: ``get_context("spawn")``: the worker is a fresh interpreter importing everything.
* ``forkserver-cold``: ``get_context("forkserver")`` with the same preload list, the server
  started on demand at the worker start (what a target does without headstart).
* ``forkserver-prewarmed``: ``headstart.prewarm_forkserver(modules)`` at process entry, so the
  server preloads while the API process does its startup work.

Reported: ``worker start`` = ``Process.start()`` until the worker has its modules (what the
engine start waits for), and ``entry to ready`` = process entry until then. Markdown,
min/median/max over the runs, and the median ratio to spawn. Everything is warm (page cache,
pyc files): this measures CPU work moved off the critical path, not disk.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

MODES = ("spawn", "forkserver-cold", "forkserver-prewarmed")
STDLIB = ["asyncio", "decimal", "email.mime.multipart", "http.client", "json",
          "xml.etree.ElementTree", "unittest", "sqlite3"]
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _worker(modules: list[str], conn: mp.connection.Connection) -> None:
    for name in modules:
        importlib.import_module(name)
    conn.send(os.getpid())
    conn.close()


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def _one(mode: str, modules: list[str], startup: float) -> dict[str, float | None]:
    entry = time.perf_counter()
    handle = None
    if mode == "forkserver-prewarmed":
        from headstart.procs.forkserver import prewarm_forkserver

        handle = prewarm_forkserver(modules)
    _busy(startup)
    if mode == "spawn":
        ctx = mp.get_context("spawn")
    else:
        ctx = mp.get_context("forkserver")
        if mode == "forkserver-cold":
            mp.set_forkserver_preload(modules)
    r, w = ctx.Pipe(duplex=False)
    ready_at_start = handle is not None and handle.done
    t0 = time.perf_counter()
    p = ctx.Process(target=_worker, args=(modules, w))
    p.start()
    w.close()
    r.recv()
    t1 = time.perf_counter()
    p.join()
    if handle is not None:
        handle.wait(60)
    return {"worker_start": t1 - t0, "entry_to_ready": t1 - entry,
            "prewarm_ready": None if handle is None else handle.elapsed,
            "ready_at_start": ready_at_start}


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--startup", type=float, default=1.0,
                    help="seconds of CPU work the API process does before the worker start")
    ap.add_argument("--modules", default=None, help="comma separated; default: stdlib + torch")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.modules:
        modules = [m for m in args.modules.split(",") if m]
    else:
        modules = list(STDLIB)
        if not args.no_torch and importlib.util.find_spec("torch") is not None:
            modules.append("torch")
    if args.one:
        print(json.dumps(_one(args.one, modules, args.startup)))
        return 0

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, os.path.abspath(__file__), "--startup", str(args.startup),
           "--modules", ",".join(modules)]
    samples: dict[str, list[dict[str, float | None]]] = {m: [] for m in MODES}
    for mode in MODES:  # warm-up: page cache and pyc files for every path
        subprocess.run([*cmd, "--one", mode], env=env, check=True, capture_output=True)
    for i in range(args.runs):
        order = MODES[i % 3:] + MODES[:i % 3]
        for mode in order:
            out = subprocess.run([*cmd, "--one", mode], env=env, check=True,
                                 capture_output=True, text=True)
            samples[mode].append(json.loads(out.stdout))

    print(f"Worker importing: {', '.join(modules)}; API startup work {args.startup:.2f} s; "
          f"n={args.runs}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs\n")
    print("| mode | worker start ms min / median / max | entry to ready ms min / median / max "
          "| worker start vs spawn (median) |")
    print("|---|---:|---:|---:|")
    base = statistics.median(s["worker_start"] for s in samples["spawn"])  # type: ignore[misc]
    for mode in MODES:
        ws = _stats([s["worker_start"] for s in samples[mode]])  # type: ignore[misc]
        er = _stats([s["entry_to_ready"] for s in samples[mode]])  # type: ignore[misc]
        print(f"| {mode} | {ws[0] * 1e3:.0f} / {ws[1] * 1e3:.0f} / {ws[2] * 1e3:.0f} "
              f"| {er[0] * 1e3:.0f} / {er[1] * 1e3:.0f} / {er[2] * 1e3:.0f} "
              f"| {ws[1] / base:.2f}x |")
    pre = samples["forkserver-prewarmed"]
    ready = [s["prewarm_ready"] for s in pre if s["prewarm_ready"] is not None]
    if ready:
        early = sum(1 for s in pre if s["ready_at_start"])
        print(f"\nPrewarmed forkserver ready (preload done) at median "
              f"{statistics.median(ready) * 1e3:.0f} ms after entry "  # type: ignore[type-var]
              f"({early}/{args.runs} runs ready before the worker start).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
