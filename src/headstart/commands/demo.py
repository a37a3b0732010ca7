"""``headstart demo``: see what headstart saves, on this machine, in one command.

Creates a demo model once (random weights, Qwen2-shaped, a locally trained tokenizer; kept
in headstart's cache folder), lets one ordinary cold ``headstart run`` start record the
startup profile by itself, then runs ``headstart bench`` on the real ``transformers
serve``: baseline against ``headstart run``, cold and warm, timed from launch until a chat
completion succeeds. As root the disk is throttled (default 300 MB/s, a network
volume's speed) for the server and its children; otherwise it runs unthrottled and says so.

Needs the demo extra: ``pip install 'headstart[demo]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

__all__ = ["add_parser", "run"]

DEFAULT_PORT = 8765


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str
               ) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="2G", help="demo model size (default 2G)")
    p.add_argument("--dtype", choices=["bfloat16", "float32"],
                   help="weights' type (default: bfloat16 where the CPU has native bf16, "
                        "else float32)")
    p.add_argument("--runs", type=int, default=3, help="runs per variant and mode (default 3)")
    p.add_argument("--modes", default="cold,warm", help="cold, warm or cold,warm (default)")
    p.add_argument("--disk-bps", default=None, metavar="SIZE",
                   help="throttle reads to SIZE per second (default 300MB as root, "
                        "'none' to disable)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    p.add_argument("--out", help="output folder (default ./bench-out/demo-TIMESTAMP)")
    p.add_argument("--model-dir", help="use or create the demo model here instead of the cache")
    p.add_argument("--no-plot", action="store_true", help="write no PNG chart")
    p.add_argument("--no-record", action="store_true",
                   help="do not record a startup profile first (the headstart variant then "
                        "reads the model's whole files)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)
    return p


def _say(msg: str) -> None:
    print(f"headstart demo: {msg}", file=sys.stderr, flush=True)


def _transformers_cli() -> str:
    from headstart.errors import MissingExtraError

    beside = os.path.join(os.path.dirname(sys.executable), "transformers")
    cli = beside if os.access(beside, os.X_OK) else shutil.which("transformers")
    if not cli:
        raise MissingExtraError("the `transformers` command was not found: "
                                "pip install 'headstart[demo]'")
    return cli


def demo_dtype(cpuinfo: str = "/proc/cpuinfo") -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32.

    A CPU without either converts every bf16 matrix product, and the demo's first chat
    completion then costs seconds of CPU that have nothing to do with starting up; float32
    of the same size in bytes keeps the reads the same and the arithmetic native."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"
    except OSError:
        pass
    return "float32"


def _demo_model(args: argparse.Namespace) -> str:
    import subprocess

    from headstart.errors import HeadstartError
    from headstart.settings import headstart_cache

    dtype = args.dtype or demo_dtype()
    folder = args.model_dir or os.path.join(headstart_cache(), "demo",
                                            f"qwen2-{args.size.lower()}-{dtype}-seed0")
    if os.path.isfile(os.path.join(folder, "headstart_demo.json")):
        _say(f"using the demo model in {folder}")
        return folder
    _say(f"creating a {args.size} {dtype} demo model in {folder} (once)")
    # in a child: numpy's and tokenizers' libraries mapped by this process for the rest of
    # the demo would stay in the page cache through every eviction, the cold runs not cold
    done = subprocess.run([sys.executable, "-m", "headstart", "demo-model", folder,
                           "--size", args.size, "--dtype", dtype, "--seed", "0"])
    if done.returncode != 0:
        raise HeadstartError(f"creating the demo model in {folder} failed (exit status "
                             f"{done.returncode}, said above)")
    return folder


def _throttle(args: argparse.Namespace) -> tuple[str | None, str]:
    if args.disk_bps and args.disk_bps.lower() != "none":
        return args.disk_bps, f"disk throttled to {args.disk_bps}/s"
    if args.disk_bps:
        return None, "disk not throttled (--disk-bps none)"
    if os.geteuid() == 0:
        return "300MB", "disk throttled to 300MB/s (a network volume's speed; root)"
    return None, "disk not throttled: throttling needs root (run as root or pass --disk-bps)"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _record_by_run(server: list[str], model: str, ready: list[str], offline: dict,
                   disk_bps: str | None, args: argparse.Namespace, out: str) -> None:
    """The profile as users get it: one ordinary cold ``headstart run`` start, which
    records it by itself (``headstart record`` stays for explicit control); a
    ``headstart bench`` of that one start, so it is cold and throttled like the runs after
    it. Says what was recorded, or that the headstart variant reads whole files instead."""
    import contextlib
    import time

    from headstart.commands import bench
    from headstart.commands._readiness import command_args
    from headstart.plan import RunOptions, build_plan
    from headstart.profiles.key import profile_key
    from headstart.profiles.store import load_profile, remove_profile

    run_server = [sys.executable, "-m", "headstart", "run", "--", *map(_quote, server)]
    key = profile_key(build_plan(RunOptions(model=model), server))[0]
    remove_profile(key)  # this demo's own recording, not an earlier one
    _say("recording a startup profile: one cold `headstart run` start, which records it "
         "by itself")
    recording = command_args(bench.add_parser, ready_request=ready, model=model, runs=1,
                             modes="cold", timeout=args.timeout,
                             out=os.path.join(out, "recording"), disk_bps=disk_bps,
                             no_plot=True, no_headstart_variant=True,
                             variant=["recording=" + " ".join(run_server)], cmd=server,
                             target_env=offline)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # its report
        bench.run(recording)
    deadline = time.monotonic() + 30  # written once the server is idle or gone
    while (profile := load_profile(key)) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if profile is None:
        _say("no profile was recorded: the headstart variant reads whole files instead "
             f"(the recording start's output is in {os.path.join(out, 'recording')})")
        return
    s = profile.stats
    _say(f"recorded {key}: {len(profile.files)} files, {profile.total_bytes / 2**30:.2f} GiB "
         f"(weights {s.get('weight_bytes', 0) / 2**30:.2f} GiB){_recording_times(out)}")


def _recording_times(out: str) -> str:
    """``; that start ready in X s, a cold baseline in Y s`` from the recording bench's
    results (empty when they cannot be read: only a figure of the message is lost)."""
    try:
        with open(os.path.join(out, "recording", "results.json"), encoding="utf-8") as fh:
            cells = {c["variant"]: c["median"] for c in json.load(fh)["summary"]}
        return (f"; that start ready in {cells['recording']:.2f} s, a cold baseline in "
                f"{cells['baseline']:.2f} s")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def run(args: argparse.Namespace) -> int:
    import time

    from headstart.commands import bench
    from headstart.commands._readiness import command_args

    cli = _transformers_cli()
    model = _demo_model(args)
    disk_bps, note = _throttle(args)
    _say(note)
    url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8, "temperature": 0, "stream": False}
    ready = [url, json.dumps(body)]
    server = [cli, "serve", "--host", "127.0.0.1", "--port", str(args.port), model]
    # A local folder needs no hub: without this, transformers retries the network first.
    offline = {} if "HF_HUB_OFFLINE" in os.environ else {"HF_HUB_OFFLINE": "1"}
    variants = []
    out = args.out or os.path.join("bench-out", time.strftime("demo-%Y%m%d-%H%M%S"))
    if not args.no_record:
        _record_by_run(server, model, ready, offline, disk_bps, args, out)
        variants.append("headstart-no-profile=" + " ".join(
            [sys.executable, "-m", "headstart", "run", "--no-profile", "--",
             *map(_quote, server)]))
    benching = command_args(bench.add_parser, ready_request=ready, model=model,
                            runs=args.runs, modes=args.modes, timeout=args.timeout, out=out,
                            disk_bps=disk_bps, no_plot=args.no_plot, verbose=args.verbose,
                            variant=variants, cmd=server, target_env=offline)
    return int(benching.func(benching) or 0)
