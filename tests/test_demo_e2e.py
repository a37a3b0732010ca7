"""A reduced `headstart demo`: a small generated model, a recorded startup profile, 1 run
per cell, the real `transformers serve`, cold and warm, baseline and headstart (with and
without the profile). Every run must become ready,
both variants must answer the same greedy text, and the report must have every cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _ports_util import free_port

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

pytestmark = pytest.mark.slow


def test_reduced_demo(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, HEADSTART_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "headstart", "demo", "--size", "30M", "--runs", "1",
         "--disk-bps", "none", "--port", str(free_port()), "--out", str(out), "--no-plot",
         "--timeout", "240"],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    results = json.loads((out / "results.json").read_text())
    cells = {(s["mode"], s["variant"]): s for s in results["summary"]}
    # headstart replays the profile the demo recorded first; headstart-no-profile reads
    # the model's whole files.
    variants = ("baseline", "headstart", "headstart-no-profile")
    assert set(cells) == {(m, v) for m in ("cold", "warm") for v in variants}
    for cell in cells.values():
        assert (cell["ok"], cell["failed"]) == (1, 0), cell
        assert cell["median"] > 0
    samples = [s for s in results["samples"] if not s.get("warmup")]
    assert len(samples) == 6 and all(s["outcome"] == "ready" for s in samples), samples

    answers = set()
    for s in samples:
        body = json.loads((out / s["response"]).read_text())
        answers.add(body["choices"][0]["message"]["content"])
    assert len(answers) == 1, answers  # greedy: headstart changes nothing the server says

    report = (out / "report.md").read_text()
    for mode in ("cold", "warm"):
        for variant in variants:
            assert f"| {mode} | {variant} | 1/1 |" in report, report
    # the model was created in headstart's cache folder, not in the working tree,
    # and the recorded profile was stored there too
    assert any((tmp_path / "cache" / "demo").iterdir())
    [profile] = [p for p in (tmp_path / "cache" / "profiles").glob("*.json")
                 if not p.name.endswith(".coverage.json")]
    # recorded the zero-configuration way: by one ordinary `headstart run` start
    assert json.loads(profile.read_text())["stats"]["recorded_by"] == "headstart run"
