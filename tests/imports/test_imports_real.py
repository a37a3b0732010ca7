"""The vLLM revert (#40442) reproduced with the real torch + transformers, then fixed.

A background thread imports torch then transformers; the main thread runs
``from transformers import AutoTokenizer``. Naive: when main arrives while
``transformers/__init__.py`` runs, it keeps the module object that ``_LazyModule`` replaces
and fails with ``cannot import name 'AutoTokenizer'``. With ``headstart.preload`` it must
succeed at every arrival time. Each run is a fresh interpreter (a few seconds each).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    pytest.skip("torch and transformers are not installed", allow_module_level=True)

SRC = Path(__file__).resolve().parents[2] / "src"

# ARRIVAL "window": poll until transformers is in sys.modules (its __init__ is running),
# then import: lands inside the window every time. A number: sleep that many seconds.
SCRIPT = textwrap.dedent('''
    import importlib, sys, threading, time
    mode, arrival = sys.argv[1], sys.argv[2]
    if mode == "naive":
        def load():
            try:
                importlib.import_module("torch")
                importlib.import_module("transformers")
            except BaseException:
                pass
        threading.Thread(target=load, daemon=True).start()
    else:
        import headstart
        handle = headstart.preload(["torch", "transformers"])
    if arrival == "window":
        deadline = time.monotonic() + 60
        while "transformers" not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.0005)
    else:
        time.sleep(float(arrival))
    inside = "transformers" in sys.modules and getattr(
        sys.modules["transformers"].__spec__, "_initializing", False)
    try:
        from transformers import AutoTokenizer
        print("ok", AutoTokenizer.__name__, "inside" if inside else "outside")
    except ImportError as exc:
        print("error", exc)
        sys.exit(3)
    if mode == "headstart":
        assert handle.wait(60) and handle.results == {
            "torch": "imported", "transformers": "imported"}, handle.results
''')


def run(mode: str, arrival: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, arrival], capture_output=True,
                          text=True, timeout=120, env=env)
    return proc.returncode, (proc.stdout + proc.stderr).strip()[-1500:]


def test_naive_background_import_of_transformers_fails() -> None:
    code, out = run("naive", "window")
    assert code == 3 and "cannot import name 'AutoTokenizer'" in out, out


@pytest.mark.parametrize("arrival", ["window", "0", "0.5", "1.0", "1.5", "2.0", "3.0"])
def test_preload_of_transformers_never_fails(arrival: str) -> None:
    code, out = run("headstart", arrival)
    assert code == 0 and out.startswith("ok AutoTokenizer"), out
