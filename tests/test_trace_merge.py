"""One trace file for a whole start: processes that write the same ``--trace FILE`` (``headstart
run`` and its replay helper) end up in one file, on one clock; a previous run's file is not
merged in. Real processes, each with its own tracer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from headstart.trace import Tracer, load_events

WRITE = """
import sys, time
from headstart.trace import tracer
time.sleep(float(sys.argv[2]))
with tracer.span("work", cat="test", who=sys.argv[3]):
    time.sleep(0.05)
tracer.write(sys.argv[1])
"""


def _write_in_process(path: Path, delay: float, who: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", WRITE, str(path), str(delay), who])
    assert proc.wait(60) == 0
    return proc.pid


def test_two_processes_share_one_file_on_one_clock(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    before = time.monotonic()
    first = _write_in_process(path, 0.0, "first")
    second = _write_in_process(path, 0.2, "second")
    after = time.monotonic()
    doc = json.loads(path.read_text())
    spans = {e["args"]["who"]: e for e in doc["traceEvents"] if e.get("name") == "work"}
    assert spans["first"]["pid"] == first and spans["second"]["pid"] == second
    # the second writer's clock: the first span (earlier, in another process) is negative
    # or small, and the gap between them is the real one (>= the second's sleep)
    gap_us = spans["second"]["ts"] - spans["first"]["ts"]
    assert 0.2e6 <= gap_us <= (after - before) * 1e6
    origin = doc["otherData"]["mono_t0"]
    assert before <= origin + spans["second"]["ts"] / 1e6 <= after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json"]


def test_helper_sidecar_is_folded_in_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    helper = _write_in_process(Path(str(path) + ".helper.json"), 0.0, "helper")
    tracer = Tracer()
    tracer.instant("parent")
    tracer.write(str(path))
    doc = json.loads(path.read_text())
    assert {e["pid"] for e in doc["traceEvents"] if e.get("name") == "work"} == {helper}
    assert not Path(str(path) + ".helper.json").exists()


def test_a_previous_runs_file_is_not_merged(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    _write_in_process(path, 0.0, "old")
    old = time.time() - 3600
    os.utime(path, (old, old))
    pid = _write_in_process(path, 0.0, "new")
    doc = json.loads(path.read_text())
    assert {e["pid"] for e in doc["traceEvents"] if e.get("name") == "work"} == {pid}
    assert load_events(str(path), 0.0, written_after=time.time() + 60) == []
