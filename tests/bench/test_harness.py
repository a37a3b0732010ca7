"""`headstart bench` with tiny real targets: real processes, real ports, real signals.

Every target carries a unique marker in its argv, so that a /proc scan can prove that no
process of a run is left behind, whatever the run did.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from _ports_util import free_port
from headstart.bench.environment import find_interpreter, python_environment
from headstart.bench.harness import schedule
from headstart.cli import main

# An HTTP server that becomes ready after DELAY seconds; echoes POST bodies back.
SERVER = textwrap.dedent("""
    import http.server, sys, time
    delay, port = float(sys.argv[1]), int(sys.argv[2])
    time.sleep(delay)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b'{"ok": true}')
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200); self.end_headers()
            self.wfile.write(b'{"echo": ' + body + b'}')
        def log_message(self, *a):
            pass
    print("serving on", port)
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")

# Never ready; ignores SIGTERM (forces the SIGKILL path) and has a child that moved to its
# own process group (found through the session).
STUBBORN = textwrap.dedent("""
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        os.setpgid(0, 0)
        while True:
            time.sleep(1)
    print("started", flush=True)
    while True:
        time.sleep(1)
""")


def _marker() -> str:
    return "hs-bench-test-" + uuid.uuid4().hex[:12]


def _procs_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (zombies excluded)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def _script(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _bench(tmp_path, *args: str) -> tuple[int, dict, str]:
    out = tmp_path / "out"
    rc = main(["bench", "--out", str(out), "--no-plot", "--grace", "2", "--port-wait", "5",
               *args])
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    return rc, results, report


def _rows(report: str) -> dict[tuple[str, str], str]:
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] in ("cold", "warm"):
            rows[(cells[0], cells[1])] = line
    return rows


def test_schedule_interleaves_and_rotates():
    order = schedule(["a", "b", "c"], ["cold", "warm"], 3)
    cold = [(i, v) for m, i, v in order if m == "cold"]
    assert cold == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
                    (2, "c"), (2, "a"), (2, "b")]
    assert len(order) == 18


def test_ready_url_every_cell_and_nothing_left(tmp_path):
    marker, port = _marker(), free_port()
    srv = _script(tmp_path, "srv.py", SERVER)
    rc, results, report = _bench(
        tmp_path, "--modes", "warm", "--runs", "1", "--no-headstart-variant",
        "--ready-url", f"http://127.0.0.1:{port}/",
        "--variant", f"fast={sys.executable} {srv} 0.05 {port} {marker}",
        "--", sys.executable, srv, "1.5", str(port), marker,
    )
    assert rc == 0, report
    samples = results["samples"]
    assert [(s["mode"], s["variant"]) for s in samples] == [("warm", "baseline"), ("warm", "fast")]
    assert all(s["ok"] and s["outcome"] == "ready" and s["seconds"] > 0 for s in samples)
    assert [w["variant"] for w in results["warmups"]] == ["baseline", "fast"]
    # the slow variant is slower: 1.5 s sleep vs 0.05 s, more than a loaded machine's
    # spread in interpreter start-up
    by = {s["variant"]: s["seconds"] for s in samples}
    assert by["baseline"] > by["fast"]
    rows = _rows(report)
    assert set(rows) == {("warm", "baseline"), ("warm", "fast")}
    assert "1/1" in rows[("warm", "fast")] and "%" in rows[("warm", "fast")]
    out = tmp_path / "out"
    for s in samples:
        assert (out / s["stdout"]).read_text().startswith("serving on")
        assert json.loads((out / s["response"]).read_text()) == {"ok": True}
        assert s["port_free_after"] is True
    assert results["machine"]["cpus"] >= 1 and results["machine"]["kernel"]
    assert _procs_with(marker) == []


def test_ready_request_keeps_the_answer(tmp_path):
    marker, port = _marker(), free_port()
    srv = _script(tmp_path, "srv.py", SERVER)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    rc, results, report = _bench(
        tmp_path, "--modes", "warm", "--no-warmup", "--runs", "1", "--no-headstart-variant",
        "--ready-request", f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body),
        "--", sys.executable, srv, "0.1", str(port), marker,
    )
    assert rc == 0
    (sample,) = results["samples"]
    answer = json.loads((tmp_path / "out" / sample["response"]).read_text())
    assert answer == {"echo": body}
    assert "Answers: all 1 kept answers have the same text." in report
    assert _procs_with(marker) == []


def test_crash_at_start_is_a_failed_run(tmp_path):
    marker = _marker()
    crash = _script(tmp_path, "crash.py", "import sys; print('boom', file=sys.stderr); "
                                          "sys.exit(3)\n")
    rc, results, report = _bench(
        tmp_path, "--modes", "warm", "--no-warmup", "--runs", "1", "--no-headstart-variant",
        "--ready-url", f"http://127.0.0.1:{free_port()}/",
        "--", sys.executable, crash, marker,
    )
    assert rc == 1
    (s,) = results["samples"]
    assert (s["ok"], s["outcome"], s["exit_code"]) == (False, "exited", 3)
    assert "status 3" in s["reason"]
    assert (tmp_path / "out" / s["stderr"]).read_text().strip() == "boom"
    assert "failed" in _rows(report)[("warm", "baseline")]
    assert "exited with status 3" in report
    assert _procs_with(marker) == []


def test_never_ready_times_out_and_stubborn_tree_is_killed(tmp_path):
    marker = _marker()
    stub = _script(tmp_path, "stub.py", STUBBORN)
    rc, results, report = _bench(
        tmp_path, "--modes", "warm", "--no-warmup", "--runs", "1", "--no-headstart-variant",
        "--timeout", "1", "--grace", "0.5", "--ready-url", f"http://127.0.0.1:{free_port()}/",
        "--", sys.executable, stub, marker,
    )
    assert rc == 1
    (s,) = results["samples"]
    assert s["outcome"] == "timeout" and "not ready within 1 s" in s["reason"]
    assert len(s["killed"]) >= 2  # the SIGTERM-ignoring parent and its re-grouped child
    assert "timeout" in report
    assert _procs_with(marker) == []


def test_port_already_taken_is_reported_and_nothing_starts(tmp_path):
    marker, port = _marker(), free_port()
    srv = _script(tmp_path, "srv.py", SERVER)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        rc, results, report = _bench(
            tmp_path, "--modes", "warm", "--runs", "1", "--no-headstart-variant",
            "--port-wait", "0.3", "--ready-url", f"http://127.0.0.1:{port}/",
            "--", sys.executable, srv, "0", str(port), marker,
        )
    assert rc == 1
    assert {s["outcome"] for s in [*results["samples"], *results["warmups"]]} == {"port-in-use"}
    assert f"port {port}" in report
    assert (tmp_path / "out" / results["samples"][0]["stdout"]).read_text() == ""
    assert _procs_with(marker) == []


def test_ready_log_and_until_exit(tmp_path):
    marker = _marker()
    # no flush: the bench sets PYTHONUNBUFFERED for --ready-log
    logger = _script(tmp_path, "log.py", "import time\ntime.sleep(0.2)\nprint('model READY')\n"
                                         "time.sleep(600)\n")
    rc, results, _ = _bench(
        tmp_path, "--modes", "warm", "--no-warmup", "--runs", "1", "--no-headstart-variant",
        "--timeout", "30", "--ready-log", r"READY$", "--", sys.executable, logger, marker,
    )
    assert rc == 0
    (s,) = results["samples"]
    assert s["ok"] and "model READY" in s["ready_detail"]
    assert _procs_with(marker) == []

    out2 = tmp_path / "exit"
    out2.mkdir()
    rc = main(["bench", "--out", str(out2 / "o"), "--no-plot", "--modes", "warm", "--no-warmup",
               "--runs", "1", "--no-headstart-variant", "--until-exit",
               "--variant", f"bad={sys.executable} -c 'import sys; sys.exit(4)' {marker}",
               "--", sys.executable, "-c", "pass", marker])
    results = json.loads((out2 / "o" / "results.json").read_text())
    assert rc == 1
    by = {s["variant"]: s for s in results["samples"]}
    assert by["baseline"]["ok"] and by["baseline"]["seconds"] > 0
    assert not by["bad"]["ok"] and by["bad"]["exit_code"] == 4
    assert _procs_with(marker) == []


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "--until-exit", "--modes", "hot", "--", "true"]) == 2
    assert "--modes" in capsys.readouterr().err
    assert main(["bench", "--until-exit", "--variant", "novalue", "--", "true"]) == 2
    assert "NAME=COMMAND" in capsys.readouterr().err
    assert main(["bench", "--until-exit"]) == 2
    assert main(["bench", "--until-exit", "--stop-signal", "NOPE", "--", "true"]) == 2
    assert "--stop-signal" in capsys.readouterr().err
    assert main(["bench", "--ready-request", "http://x/", "{not json", "--", "true"]) == 2


def test_find_interpreter_follows_shebangs(tmp_path):
    script = tmp_path / "tool"
    script.write_text(f"#!{sys.executable}\nprint(1)\n")
    script.chmod(0o755)
    assert find_interpreter([str(script), "serve"]) == sys.executable
    env_script = tmp_path / "tool2"
    env_script.write_text("#!/usr/bin/env python3\n")
    env_script.chmod(0o755)
    assert os.path.basename(find_interpreter([str(env_script)]) or "").startswith("python")
    assert find_interpreter([sys.executable, "-m", "x"]) == sys.executable
    assert find_interpreter(["env", "A=1", sys.executable, "x.py"]) == sys.executable
    assert find_interpreter(["/bin/sh", "-c", "true"]) is None
    env = python_environment(sys.executable)
    assert env is not None
    paths = env.evict_paths()
    assert any(os.path.isdir(p) and os.path.exists(os.path.join(p, "os.py")) for p in paths) or \
        any(os.path.exists(os.path.join(p, "lib")) for p in paths)
    assert os.path.realpath(sys.executable) in paths or any(
        os.path.realpath(sys.executable).startswith(p + "/") for p in paths)


@pytest.mark.slow
def test_ctrl_c_mid_run_tears_down_and_writes_partial_report(tmp_path):
    marker = _marker()
    stub = _script(tmp_path, "stub.py", STUBBORN)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "headstart", "bench", "--out", str(out), "--no-plot",
         "--modes", "warm", "--no-warmup", "--runs", "2", "--no-headstart-variant",
         "--timeout", "120", "--grace", "1", "--ready-url", f"http://127.0.0.1:{free_port()}/",
         "--", sys.executable, stub, marker],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        # bench itself, the stub and its fork child: the child exists only once the stub
        # ignores SIGTERM (a SIGINT before that let SIGTERM end the stub: nothing to kill)
        while len(_procs_with(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_procs_with(marker)) >= 3, "target never started"
        proc.send_signal(subprocess.signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr.decode()
    assert _procs_with(marker) == []
    report = (out / "report.md").read_text()
    assert "Interrupted" in report and "interrupted" in stdout.decode()
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True
    assert [s["outcome"] for s in results["samples"]] == ["interrupted"]
    # the interrupted run's teardown is recorded: the SIGTERM-ignoring tree needed SIGKILL
    assert len(results["samples"][0]["killed"]) >= 2
    assert (out / results["samples"][0]["stdout"]).read_text().startswith("started")


def test_headstart_variant_trace_and_charts(tmp_path):
    pytest.importorskip("matplotlib")
    marker, port = _marker(), free_port()
    # SERVER dies on SIGTERM without atexit; with --trace the bench stops runs with SIGINT,
    # so `headstart run` still writes the trace at exit
    srv = _script(tmp_path, "srv.py", SERVER)
    out = tmp_path / "out"
    rc = main(["bench", "--out", str(out), "--modes", "warm", "--no-warmup", "--runs", "1",
               "--trace", "--grace", "5", "--ready-url", f"http://127.0.0.1:{port}/",
               "--", sys.executable, srv, "0.1", str(port), marker])
    results = json.loads((out / "results.json").read_text())
    assert rc == 0, results["samples"]
    by = {s["variant"]: s for s in results["samples"]}
    assert by["headstart"]["argv"][1:4] == ["-m", "headstart", "run"]
    assert "--trace" in by["headstart"]["argv"] and "--trace" not in by["baseline"]["argv"]
    assert by["headstart"]["trace"] and (out / by["headstart"]["trace"]).exists()
    assert (out / "runs.png").stat().st_size > 0
    assert (out / "timeline.png").stat().st_size > 0
    assert _procs_with(marker) == []


@pytest.mark.slow  # evicting the whole dev venv (~90k files) takes ~10 s
def test_cold_evicts_model_and_python_env(tmp_path):
    pytest.importorskip("headstart.pagecache.evict")
    pytest.importorskip("headstart.pagecache.residency")
    marker = _marker()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    weights = model / "model.safetensors"
    weights.write_bytes(os.urandom(4 << 20))
    os.sync()  # dirty pages cannot be evicted
    reader = _script(tmp_path, "reader.py", "import sys\nopen(sys.argv[1], 'rb').read()\n")
    out = tmp_path / "out"
    rc = main(["bench", "--out", str(out), "--no-plot", "--modes", "cold", "--runs", "1",
               "--no-headstart-variant", "--until-exit", "--model", str(model),
               "--", sys.executable, reader, str(weights), marker])
    results = json.loads((out / "results.json").read_text())
    assert rc == 0, results["samples"]
    paths = results["evict_paths"]
    assert os.path.realpath(weights) in paths
    env = python_environment(sys.executable)
    assert os.path.realpath(env.stdlib) in paths
    (s,) = results["samples"]
    ev = s["eviction"]
    assert "error" not in ev, ev
    assert ev["total_bytes"] >= 4 << 20 and 0.0 <= ev["residual_percent"] <= 100.0
    assert results["environments"][sys.executable]["packages"]["headstart"]


def test_report_says_when_answers_differ(tmp_path):
    from headstart.bench.harness import BenchConfig, BenchResult, Variant
    from headstart.bench.probes import RequestProbe
    from headstart.bench.report import markdown, summarize
    from headstart.bench.runner import RunResult

    def answer(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(json.dumps({"id": name, "choices": [{"message": {"content": text}}]}))
        return str(path)

    cfg = BenchConfig(variants=[Variant("baseline", ["a"]), Variant("headstart", ["b"])],
                      probe=RequestProbe("http://127.0.0.1:1/", "{}"), out_dir=str(tmp_path),
                      modes=["cold"], runs=1)
    runs = [RunResult(["a"], str(tmp_path), ok=True, seconds=2.0, variant="baseline",
                      mode="cold", response=answer("a.json", "hello")),
            RunResult(["b"], str(tmp_path), ok=True, seconds=1.5, variant="headstart",
                      mode="cold", response=answer("b.json", "goodbye"))]
    result = BenchResult(config=cfg, runs=runs, planned=2)
    text = markdown(result)
    assert "the kept answers differ" in text and "'goodbye'" in text
    row = {r["variant"]: r for r in summarize(result)}["headstart"]
    assert row["delta"] == pytest.approx(-0.5) and row["delta_percent"] == pytest.approx(-25.0)
    assert "| cold | headstart | 1/1 | 1.50 s |" in text and "\u22120.50 s" in text


def test_report_shows_each_replayed_start_coverage(tmp_path):
    """The coverage a replay helper wrote for each run is summarised per variant."""
    from headstart.bench.harness import BenchConfig, BenchResult, Variant
    from headstart.bench.probes import RequestProbe
    from headstart.bench.report import markdown
    from headstart.bench.runner import RunResult

    cfg = BenchConfig(variants=[Variant("baseline", ["a"]), Variant("headstart", ["b"])],
                      probe=RequestProbe("http://127.0.0.1:1/", "{}"), out_dir=str(tmp_path),
                      modes=["cold"], runs=3)
    covs = [{"fraction": f, "replayed_bytes": r * 10**6, "target_read_bytes": t * 10**6,
             "late_bytes": 30 * 10**6, "late_weight_bytes": 2 * 10**6, "reclaimed_bytes": 0,
             "held_seconds": 0.5}
            for f, r, t in ((0.9, 2000, 200), (0.95, 2100, 100), (0.5, 1000, 1000))]
    runs = [RunResult(["a"], str(tmp_path), ok=True, seconds=2.0, variant="baseline",
                      mode="cold")]
    runs += [RunResult(["b"], str(tmp_path), ok=True, seconds=1.0, variant="headstart",
                       mode="cold", coverage=c) for c in covs]
    text = markdown(BenchResult(config=cfg, runs=runs, planned=4))
    assert "Replay coverage" in text
    assert ("| cold | headstart | 3 | 90 % | 2000 MB | 200 MB | 30 MB | 2 MB | 0 MB "
            "| 0.50 s |") in text
    assert "| cold | baseline | 1 |" not in text  # a baseline has nothing to report


def test_command_args_from_values_equal_the_parsed_command_line():
    """`headstart demo` hands bench and record values, not a command line to re-parse: the
    arguments are the ones the command line would give."""
    from headstart.cli import build_parser
    from headstart.commands import bench, record
    from headstart.commands._readiness import command_args

    given = command_args(bench.add_parser, ready_request=["http://h/x", "{}"], model="m",
                         runs=2, modes="cold", timeout=5.0, out="o", no_plot=True,
                         verbose=1, variant=["x=y"], cmd=["srv", "a"])
    parsed = build_parser("bench").parse_args(
        ["bench", "--ready-request", "http://h/x", "{}", "--model", "m", "--runs", "2",
         "--modes", "cold", "--timeout", "5", "--out", "o", "--no-plot", "-v",
         "--variant", "x=y", "--", "srv", "a"])
    assert parsed.cmd == ["--", "srv", "a"]  # target_command drops the "--"
    assert {**vars(given), "cmd": ["--", "srv", "a"]} == {
        k: v for k, v in vars(parsed).items() if k != "command"}
    rec = command_args(record.add_parser, ready_request=["http://h/x", "{}"], cmd=["srv"])
    assert (rec.ready_request, rec.until_exit, rec.model, rec.func) == (
        ["http://h/x", "{}"], False, None, record.run)
    with pytest.raises(TypeError, match="not_an_option"):
        command_args(record.add_parser, not_an_option=1)


def test_target_environ_adds_only_for_the_target(monkeypatch):
    import argparse
    import os

    from headstart.commands._readiness import target_environ

    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    before = dict(os.environ)
    assert target_environ(argparse.Namespace(target_env={}), unbuffered=False) is None
    env = target_environ(argparse.Namespace(target_env={"HF_HUB_OFFLINE": "1"}),
                         unbuffered=True)
    assert env == {**before, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    assert dict(os.environ) == before
