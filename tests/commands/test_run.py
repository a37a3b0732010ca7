"""`headstart run`'s hand-written option parser (the hot path) agrees with its argparse
parser on every accepted command line, and defers to argparse for help and errors."""

from __future__ import annotations

import pytest

from headstart.cli import build_parser
from headstart.commands.run import parse_fast

FIELDS = ("model", "revision", "cache_dir", "hub", "preload", "no_preload", "no_prefetch",
          "no_profile", "forkserver", "trace", "verbose")

ACCEPTED = [
    ["--", "vllm", "serve", "m"],
    ["vllm", "serve", "m", "--model", "x"],
    ["--model", "org/m", "--revision", "main", "--", "python", "-m", "x", "--help"],
    ["--model=org/m", "--cache-dir=/c", "--hub", "modelscope", "--", "x"],
    ["--preload", "torch,transformers", "--no-prefetch", "--", "x", "-v"],
    ["--no-preload", "--no-profile", "--forkserver", "--trace", "t.json", "--", "x"],
    ["--no-forkserver", "-v", "-vv", "--verbose", "--", "x", "--", "y"],
    ["--hub=hf", "x"],
    ["--"],
    [],
]


def _strip(cmd: list[str]) -> list[str]:
    return cmd[1:] if cmd[:1] == ["--"] else cmd


@pytest.mark.parametrize("argv", ACCEPTED, ids=lambda a: " ".join(a) or "empty")
def test_same_as_argparse(argv):
    fast = parse_fast(argv)
    slow = build_parser("run").parse_args(["run", *argv])
    assert fast is not None
    for name in FIELDS:
        assert getattr(fast, name) == getattr(slow, name), name
    assert _strip(list(fast.cmd)) == _strip(list(slow.cmd))


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--hub", "nope", "x"], ["--model"],
                                  ["--mod", "x", "--", "y"], ["--unknown", "--", "x"]])
def test_defers_to_argparse(argv):
    assert parse_fast(argv) is None
