"""Phases from a server's own log lines: the vLLM adapter's milestones, timed as the lines
appear in a real process's output, in ``headstart bench`` (median per phase) and
``headstart explain`` (rows and trace threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from headstart.adapters.registry import detect
from headstart.watch.phases import LogLine, import_spans, phases_from_lines

# what vLLM 0.32 prints on CPU (one real run, trimmed), with sleeps standing for the work
FAKE_VLLM = """#!{python}
import sys, time
log = lambda m: (print(m, file=sys.stderr, flush=True))
time.sleep(0.3)
log("(APIServer pid=11) INFO 12-01 08:40:01 [utils.py:286] non-default args: {{'model': 'm'}}")
time.sleep(0.2)
log("(EngineCore pid=12) INFO 12-01 08:40:02 [core.py:134] Initializing a V1 LLM engine (v0.32.0)")
time.sleep(0.2)
log("(EngineCore pid=12) INFO 12-01 08:40:03 [cpu_model_runner.py:68] Starting to load model m...")
time.sleep(0.4)
log("(EngineCore pid=12) INFO 12-01 08:40:04 [default_loader.py:502] Loading weights took 0.40 seconds")
time.sleep(0.3)
log("(EngineCore pid=12) INFO 12-01 08:40:05 [core.py:403] init engine (profile, create kv cache, warmup model) took 0.30 s")
log("(APIServer pid=11) INFO 12-01 08:40:05 [entry.py:140] Starting vLLM server on http://127.0.0.1:8000")
time.sleep(0.2)
"""  # noqa: E501


def _fake_vllm(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "vllm"
    path.parent.mkdir()
    path.write_text(FAKE_VLLM.format(python=sys.executable))
    path.chmod(0o755)
    return path


def test_vllm_lines_become_phases() -> None:
    patterns = detect(["vllm", "serve", "m"], {}).log_phases
    text = FAKE_VLLM.split("\n")
    lines, t = [], 0.0
    for row in text:
        if row.startswith("time.sleep("):
            t += float(row[len("time.sleep("):-1])
        elif row.startswith('log("'):
            lines.append(LogLine(t, "stderr", row[5:-2]))
    phases = {p.name: p for p in phases_from_lines(lines, patterns, 0.0, 1.8, 2.0)}
    assert abs(phases["launch"].seconds - 0.3) < 1e-9
    assert abs(phases["API server up (args parsed)"].seconds - 0.2) < 1e-9
    assert abs(phases["worker: load model"].seconds - 0.7) < 1e-9
    assert phases["Loading weights"].kind == "reported"
    assert abs(phases["Loading weights"].seconds - 0.40) < 1e-9
    assert phases["Loading weights"].pid == 12
    assert abs(phases["init engine (profile, KV cache, warmup)"].seconds - 0.30) < 1e-9
    assert abs(phases["API server starting"].end - 1.8) < 1e-9  # until ready


def test_import_time_lines() -> None:
    lines = [LogLine(1.0, "stderr", "import time:       120 |        300 |   torch._C"),
             LogLine(2.0, "stderr", "import time:      2000 |     900000 | torch"),
             LogLine(3.0, "stderr", "import time:      2000 |     500000 | torch")]
    (span,) = import_spans(lines)
    assert span.name == "import torch" and abs(span.start - 1.1) < 1e-9 and span.end == 2.0


def test_bench_reports_median_per_phase(tmp_path: Path) -> None:
    fake = _fake_vllm(tmp_path)
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "headstart", "bench", "--until-exit", "--runs", "2",
         "--modes", "warm", "--no-headstart-variant", "--no-warmup", "--no-plot",
         "--out", str(out), "--", str(fake), "serve", "m"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = (out / "report.md").read_text()
    assert "| Loading weights | 0.40 s |" in report
    assert "| worker: load model |" in report
    runs = json.loads((out / "results.json").read_text())["samples"]
    names = [p["name"] for p in runs[0]["phases"]]
    assert names[:2] == ["launch", "API server up (args parsed)"]
    # the log-line phases agree with the sleeps between the lines (20 ms polling + startup)
    by = {p["name"]: p["seconds"] for p in runs[0]["phases"]}
    assert 0.3 <= by["worker: load model"] <= runs[0]["seconds"]


def test_explain_shows_phases_as_rows_and_trace_threads(tmp_path: Path) -> None:
    fake = _fake_vllm(tmp_path)
    out = tmp_path / "explain"
    proc = subprocess.run(
        [sys.executable, "-m", "headstart", "explain", "--warm-only", "--until-exit",
         "--no-plot", "--no-classes", "--out", str(out), "--", str(fake), "serve", "m"],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "Loading weights" in proc.stdout and "EngineCore initialising" in proc.stdout
    trace = json.loads((out / "warm" / "trace.json").read_text())
    phases = [e for e in trace["traceEvents"] if e.get("cat") == "phase" and e["ph"] == "X"]
    assert {"launch", "Loading weights", "API server starting"} <= {e["name"] for e in phases}
