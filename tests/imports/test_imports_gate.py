"""The import gate on real threads, real imports and real module files, in subprocesses.

Each race test first shows that a naive background import fails on this Python (so the race
is real here), then that ``headstart.preload`` gives the same result as a plain sequential
import in every one of >= 300 runs. The main thread's arrival sweeps the whole import window.
Run on every supported Python with tests/run_gate_all_pythons.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _pythons import python_id, supported_pythons

HARNESS = Path(__file__).with_name("race_harness.py")
SRC = Path(__file__).resolve().parents[2] / "src"


PYTHON = sys.executable


# the races differ by version: the gate is tested on each (its subprocesses need only the
# stdlib and src)
@pytest.fixture(autouse=True, params=supported_pythons(), ids=python_id)
def _python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "PYTHON", request.param)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def harness(tmp_path: Path, scenario: str, mode: str, runs: int, init_s: float = 0.02,
            timeout: float = 120, **env: str) -> dict:
    """Run the harness in a fresh interpreter; a hang fails the test through the timeout."""
    workdir = tmp_path / f"{scenario}-{mode}"
    proc = subprocess.run(
        [PYTHON, str(HARNESS), scenario, mode, str(runs), str(workdir), str(init_s)],
        capture_output=True, text=True, timeout=timeout, env=_env(**env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PYTHON, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _failures(summary: dict, reference: str = "ok") -> int:
    return sum(n for result, n in summary["results"].items() if result != reference)


@pytest.mark.parametrize("scenario", ["lazy", "inversion"])
def test_naive_races_and_headstart_does_not(tmp_path: Path, scenario: str) -> None:
    # lazy: a package that replaces itself in sys.modules at the end of a slow __init__
    #   (transformers' _LazyModule); naive -> "cannot import name 'Name'" (gh-143650).
    # inversion: pkg.a imports pkg.b, pkg.b import_module()s pkg.a; main imports pkg.b while
    #   the owner is inside pkg.a -> _DeadlockError reaches user code (gh-83065).
    sequential = harness(tmp_path, scenario, "sequential", 30)
    assert sequential["results"] == {"ok": 30}, sequential
    naive = harness(tmp_path, scenario, "naive", 60)
    if _failures(naive) == 0:
        pytest.skip(f"the naive race does not reproduce on Python {naive['python']} "
                    f"(fixed upstream?): {naive}")
    gated = harness(tmp_path, scenario, "headstart", 300)
    assert gated["results"] == {"ok": 300}, gated
    assert gated["gate_outcomes"].get("done", 0) > 0  # threads really waited at the gate
    assert set(gated["gate_outcomes"]) == {"done"}, gated  # and never had to give up
    assert gated["gate_clean"], gated


def test_import_module_is_gated(tmp_path: Path) -> None:
    gated = harness(tmp_path, "lazy_import_module", "headstart", 60)
    assert gated["results"] == {"ok": 60}, gated
    assert gated["gate_outcomes"].get("done", 0) > 0, gated


def test_circular_import_across_threads_finishes(tmp_path: Path) -> None:
    # app imports pkg, pkg imports app. When main is inside app while the owner is inside
    # pkg, the owner blocks on app's lock and main waits at the gate: the gate must see the
    # cycle and let main through, so the import system resolves it as without headstart.
    sequential = harness(tmp_path, "circular", "sequential", 30, init_s=0.04)
    gated = harness(tmp_path, "circular", "headstart", 60, init_s=0.04, timeout=60)
    assert set(gated["results"]) == set(sequential["results"]) == {"ok"}, gated
    assert gated["gate_outcomes"].get("deadlock", 0) > 0, gated  # the cycle was exercised
    assert gated["gate_clean"], gated


def test_thread_started_by_package_init_is_not_gated(tmp_path: Path) -> None:
    # __init__ starts a thread that imports a submodule and joins it: gating that thread
    # would hang the owner; it must pass straight through, not via the stall watchdog.
    gated = harness(tmp_path, "thread_in_init", "headstart", 30, timeout=60)
    assert gated["results"] == {"ok": 30}, gated
    assert "stalled" not in gated["gate_outcomes"], gated


def test_owner_waiting_on_a_gated_thread_is_released_by_the_stall_watchdog(
        tmp_path: Path) -> None:
    # __init__ joins a thread running code from outside the package that imports the
    # package: an invisible wait cycle; the watchdog must end it.
    gated = harness(tmp_path, "stall", "headstart", 8, timeout=60, STALL_S="0.3")
    assert gated["results"] == {"ok": 8}, gated
    assert gated["gate_outcomes"].get("stalled", 0) >= 8, gated


@pytest.mark.parametrize("scenario", ["fail", "missing"])
def test_failed_preload_gives_the_genuine_error(tmp_path: Path, scenario: str) -> None:
    sequential = harness(tmp_path, scenario, "sequential", 20)
    gated = harness(tmp_path, scenario, "headstart", 40)
    (reference,) = sequential["results"]
    assert "Error" in reference
    assert gated["results"] == {reference: 40}, (reference, gated)
    assert gated["gate_clean"], gated


FIXTURE = '''
import os, sys, tempfile, time, importlib
root = tempfile.mkdtemp()
os.makedirs(os.path.join(root, "slowpkg"))
with open(os.path.join(root, "slowpkg", "__init__.py"), "w") as fh:
    fh.write("import time\\ntime.sleep(1.0)\\nVALUE = 7\\n")
sys.path.insert(0, root)
importlib.invalidate_caches()
'''


def test_gate_removes_itself_and_restores_the_originals() -> None:
    run_script(FIXTURE + '''
import builtins, importlib, _frozen_importlib
import headstart
from headstart.imports import gate
orig_import, orig_gcd = builtins.__import__, _frozen_importlib._gcd_import
h = headstart.preload(["slowpkg", "os"])
assert isinstance(h, headstart.Preload)
assert builtins.__import__ is not orig_import and gate.pending() == ["slowpkg"]
assert h.wait(0.01) is False and not h.done
from slowpkg import VALUE
assert VALUE == 7
assert h.wait(30) and h.done
assert h.results == {"slowpkg": "imported", "os": "already-imported"}, h.results
assert h.errors == {} and set(h.timings) == {"slowpkg", "os"}
assert [e["outcome"] for e in h.gate_events] == ["done"], h.gate_events
assert builtins.__import__ is orig_import and _frozen_importlib._gcd_import is orig_gcd
assert importlib.import_module("slowpkg").VALUE == 7
from headstart.trace import tracer
names = {(e["name"], e["cat"]) for e in tracer.events()}
assert ("preload slowpkg", "import") in names and ("import wait slowpkg", "import") in names
''')


def test_on_done_runs_once_after_every_import_even_a_failed_one() -> None:
    run_script(FIXTURE + '''
import threading, headstart
calls = []
h = headstart.preload(["slowpkg", "no_such_module_xyz"],
                      on_done=lambda: calls.append((threading.current_thread().name,
                                                    dict(h.results))))
assert h.wait(30)
for _ in range(100):  # on_done runs right after `done` is set, in the owner thread
    if calls:
        break
    threading.Event().wait(0.01)
assert calls == [("headstart-preload",
                  {"slowpkg": "imported", "no_such_module_xyz": "failed"})], calls
''')


def test_gate_becomes_a_pass_through_under_another_wrapper() -> None:
    run_script(FIXTURE + '''
import builtins, importlib, os, sys
import headstart
from headstart.imports import gate
calls = []
h = headstart.preload(["slowpkg"])
inner = builtins.__import__
def other(name, *args, **kwargs):
    calls.append(name)
    return inner(name, *args, **kwargs)
builtins.__import__ = other  # someone wraps on top of us while we are installed
assert h.wait(30)
assert builtins.__import__ is other  # theirs stays; ours is a pass-through below it
import slowpkg
assert calls and slowpkg.VALUE == 7
# a second preload while we are still in their chain: no double wrapping, no recursion
with open(os.path.join(root, "slowpkg2.py"), "w") as fh:
    fh.write("import time\\ntime.sleep(1.0)\\nVALUE = 8\\n")
importlib.invalidate_caches()
h2 = headstart.preload(["slowpkg2"])
assert builtins.__import__ is other
from slowpkg2 import VALUE
assert VALUE == 8 and h2.wait(30)
assert [e["outcome"] for e in h2.gate_events] == ["done"], h2.gate_events
assert gate.pending() == []
''')


def test_fork_while_preloading_does_not_hang_the_child() -> None:
    run_script(FIXTURE + '''
import headstart
h = headstart.preload(["slowpkg"])
pid = os.fork()
if pid == 0:
    code = 1
    try:
        from slowpkg import VALUE
        code = 0 if VALUE == 7 and h.done and h.results["slowpkg"] == "lost-in-fork" else 2
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert h.wait(30) and h.results["slowpkg"] == "imported"
''', timeout=60)


def test_public_api() -> None:
    import headstart
    from headstart.imports import preload as preload_module

    assert headstart.preload is preload_module.preload
    assert headstart.Preload is preload_module.Preload
    assert preload_module.__all__ == ["Preload", "preload"]
