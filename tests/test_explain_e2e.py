"""`headstart explain` on the real `transformers serve` with a small generated model, cold
only, with and without headstart: every start gets ready, the server's phases and the heavy
imports are rows, the weights are read in the cold start, the trace and the PNG exist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _ports_util import free_port

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

from headstart.adapters.transformers import REQUEST_LINE  # noqa: E402


def test_explain_transformers_serve(tmp_path: Path) -> None:
    model, out, port = tmp_path / "model", tmp_path / "out", free_port()
    subprocess.run([sys.executable, "-m", "headstart", "demo-model", str(model), "--size",
                    "30M"], check=True, capture_output=True, timeout=300)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = json.dumps({"model": str(model), "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 4, "temperature": 0, "stream": False})
    serve = Path(sys.executable).with_name("transformers")
    proc = subprocess.run(
        [sys.executable, "-m", "headstart", "explain", "--cold-only", "--with-headstart",
         "--run-args=--no-profile", "--ready-request", url, body, "--out", str(out),
         "--timeout", "240", "--", str(serve), "serve", "--host", "127.0.0.1", "--port",
         str(port), str(model)],
        capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "explain.json").read_text())
    base, head = doc["starts"]
    # headstart's preload imports through importlib, which -X importtime does not time:
    # there the preload rows say it
    assert {"import torch", "import transformers"} <= {p["name"] for p in base["phases"]}
    for start in (base, head):
        names = {p["name"] for p in start["phases"]}
        assert {"load model", "listening"} <= names, names
        # transformers 5.25 logs no line per request by default: the phase is there exactly
        # when the server's log has the line
        log = (Path(start["run_dir"]) / "stderr.log").read_text()
        assert ("first request" in names) == bool(re.search(REQUEST_LINE, log)), names
        assert start["class_bytes"]["weights"] > 0
        assert start["tree"]["read_bytes"] > 0
        trace = json.loads((Path(start["run_dir"]) / "trace.json").read_text())
        assert any(e.get("name") == "process" for e in trace["traceEvents"])
    assert {"preload torch", "preload transformers"} <= {r["name"] for r in head["headstart"]}
    assert "cold vs cold+headstart" in proc.stdout
    if (out / "waterfall.png").exists() is False:
        pytest.importorskip("matplotlib")
        raise AssertionError("no waterfall.png although matplotlib is installed")
