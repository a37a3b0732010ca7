"""headstart.procs.forkserver with a fixture app shaped like vLLM, in real processes.

The app (written into tmp_path) is an "API process" that may prewarm the forkserver at entry,
parses its arguments (``--help`` and bad arguments exit at once), then starts an "engine"
process with multiprocessing that imports heavy-ish modules and "loads weights" (reads a
file), and prints what the engine saw as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

APP = textwrap.dedent("""
    import json, multiprocessing as mp, os, sys, time

    def engine_main(weights, conn):
        import fake_heavy
        with open(weights, "rb") as fh:
            nbytes = len(fh.read())
        conn.send({"pid": os.getpid(), "ppid": os.getppid(),
                   "heavy_imported_in": fake_heavy.IMPORTED_IN, "weights_bytes": nbytes,
                   "start_method": mp.get_start_method(allow_none=True),
                   "late": os.environ.get("APP_LATE"), "early": os.environ.get("APP_EARLY")})
        conn.close()

    def main(argv):
        handle = None
        if os.environ.get("APP_PREWARM"):
            import headstart
            handle = headstart.prewarm_forkserver(
                os.environ.get("APP_PRELOAD", "fake_heavy").split(","),
                start_method_env="FAKE_WORKER_MULTIPROC_METHOD",
                environ={"APP_EARLY": "set-before-prewarm"})
        time.sleep(float(os.environ.get("APP_STARTUP_DELAY", "0")))
        if "--help" in argv:
            print("usage: api_server [--weights FILE]")
            if handle is not None:
                print(f"forkserver-pid {handle.pid}", file=sys.stderr)
            return 0
        if "--bad" in argv:
            print("api_server: error: unrecognized arguments: --bad", file=sys.stderr)
            return 2
        if handle is not None and os.environ.get("APP_WAIT_PREWARM"):
            handle.wait(60)
        global_after_prewarm = mp.get_start_method(allow_none=True)
        os.environ["APP_LATE"] = "set-after-prewarm"
        if os.environ.get("APP_SET_START_METHOD"):
            mp.set_start_method(os.environ["APP_SET_START_METHOD"])  # the app's own choice
            ctx = mp
        else:
            ctx = mp.get_context(os.environ.get("FAKE_WORKER_MULTIPROC_METHOD", "forkserver"))
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=engine_main, args=(argv[argv.index("--weights") + 1], w))
        p.start()
        w.close()
        engine = r.recv()
        p.join()
        if handle is not None:
            handle.wait(60)
        print(json.dumps({
            "api_pid": os.getpid(), "engine": engine, "exitcode": p.exitcode,
            "global_method": mp.get_start_method(allow_none=True),
            "global_after_prewarm": global_after_prewarm,
            "handle": None if handle is None else {
                "ok": handle.ok, "pid": handle.pid, "reason": handle.reason,
                "preloaded": sorted(handle.preloaded), "failed": sorted(handle.failed),
                "environ_changes": sorted(handle.environ_changes())},
        }))
        return 0

    if __name__ == "__main__":
        sys.exit(main(sys.argv[1:]))
""")

FAKE_HEAVY = textwrap.dedent("""
    import asyncio, decimal, email.mime.multipart, json, os
    IMPORTED_IN = os.getpid()
""")


def _pythons() -> list[str]:
    """This interpreter plus the other supported CPythons that happen to be installed."""
    found = [sys.executable]
    root = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser() / "versions"
    for version in ("3.10", "3.12", "3.13"):
        exe = shutil.which(f"python{version}")
        if exe is None or "shims" in exe:  # a pyenv shim may refuse to run: use the real one
            exe = next((str(p / "bin" / "python3") for p in sorted(root.glob(f"{version}.*"))
                        if (p / "bin" / "python3").exists()), None)
        if exe:
            found.append(exe)
    return found


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "api_server.py").write_text(APP)
    (tmp_path / "fake_heavy.py").write_text(FAKE_HEAVY)
    (tmp_path / "slow_preload.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "broken_preload.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "weights.bin").write_bytes(os.urandom(1 << 20))
    return tmp_path


def _env(app: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APP_", "FAKE_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(app), SRC])
    env.update(extra)
    return env


def _run_app(app: Path, *args: str, python: str = sys.executable,
             **env: str) -> dict[str, Any]:
    out = subprocess.run([python, str(app / "api_server.py"), *args], env=_env(app, **env),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _weights(app: Path) -> tuple[str, str]:
    return "--weights", str(app / "weights.bin")


@pytest.mark.parametrize("python", _pythons())
def test_engine_is_a_child_of_the_prewarmed_forkserver(app: Path, python: str) -> None:
    r = _run_app(app, *_weights(app), python=python, APP_PREWARM="1", APP_WAIT_PREWARM="1")
    h, engine = r["handle"], r["engine"]
    assert h["ok"] is True, h
    assert h["preloaded"] == ["fake_heavy"]
    assert engine["ppid"] == h["pid"] != r["api_pid"]
    # the heavy module was imported once, in the forkserver, and inherited by the engine
    assert engine["heavy_imported_in"] == h["pid"]
    assert engine["weights_bytes"] == 1 << 20
    assert r["exitcode"] == 0
    # prewarming did not choose a global start method for the app (starting the engine
    # with get_context() later does: that is the stdlib's own behaviour)
    assert r["global_after_prewarm"] is None


def test_without_prewarm_the_engine_imports_heavy_modules_itself(app: Path) -> None:
    r = _run_app(app, *_weights(app))
    engine = r["engine"]
    assert engine["ppid"] != r["api_pid"]  # a forkserver, started cold at p.start()
    assert engine["heavy_imported_in"] == engine["pid"]


@pytest.mark.parametrize("python", _pythons())
@pytest.mark.parametrize("wait", ["", "1"])
def test_app_may_set_spawn_afterwards(app: Path, python: str, wait: str) -> None:
    r = _run_app(app, *_weights(app), python=python, APP_PREWARM="1", APP_WAIT_PREWARM=wait,
                 APP_SET_START_METHOD="spawn")
    engine = r["engine"]
    assert r["global_method"] == "spawn"
    assert engine["start_method"] == "spawn"
    assert engine["ppid"] == r["api_pid"]  # spawn children are the API process's own
    assert engine["heavy_imported_in"] == engine["pid"]


@pytest.mark.parametrize("python", _pythons())
def test_app_may_set_forkserver_afterwards_and_gets_the_prewarmed_one(app: Path,
                                                                      python: str) -> None:
    r = _run_app(app, *_weights(app), python=python, APP_PREWARM="1", APP_WAIT_PREWARM="1",
                 APP_SET_START_METHOD="forkserver")
    assert r["global_method"] == "forkserver"
    assert r["engine"]["ppid"] == r["handle"]["pid"]
    assert r["engine"]["heavy_imported_in"] == r["handle"]["pid"]


RACE = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    import headstart
    h = headstart.prewarm_forkserver(["json", "decimal"])
    delay = float(sys.argv[1])
    if delay:
        time.sleep(delay)
    mp.set_start_method("spawn")   # raises "context has already been set" if prewarm fixed it
    h.wait(30)
    assert mp.get_start_method() == "spawn", mp.get_start_method()
    print("ok", h.ok)
""")


def test_set_start_method_right_after_prewarm_never_raises(tmp_path: Path) -> None:
    script = tmp_path / "race.py"
    script.write_text(RACE)
    delays = ["0", "0.001", "0.004", "0.016", "0.03", "0.06", "0.12", "0.25", "0.5"]
    procs = [subprocess.Popen([sys.executable, str(script), d], env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in delays]
    for d, p in zip(delays, procs, strict=True):
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.startswith("ok"), (d, err)


NAIVE = textwrap.dedent("""
    import multiprocessing as mp, multiprocessing.forkserver
    mp.set_forkserver_preload(["json"])
    mp.forkserver.ensure_running()
    try:
        mp.set_start_method("spawn")
    except RuntimeError as exc:
        print("raised", exc)
    else:
        print("no error")
""")


def test_naive_prewarm_does_break_a_later_set_start_method(tmp_path: Path) -> None:
    """The trap the prewarm avoids is real on this Python (so the test above can fail)."""
    out = subprocess.run([sys.executable, "-c", NAIVE], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.startswith("raised context has already been set"), out


def test_start_method_env_naming_another_method_refuses(app: Path) -> None:
    r = _run_app(app, *_weights(app), APP_PREWARM="1", FAKE_WORKER_MULTIPROC_METHOD="spawn")
    assert r["handle"]["ok"] is False
    assert "FAKE_WORKER_MULTIPROC_METHOD=spawn" in r["handle"]["reason"]
    assert r["engine"]["ppid"] == r["api_pid"]


def test_broken_preload_does_not_kill_the_forkserver(app: Path) -> None:
    r = _run_app(app, *_weights(app), APP_PREWARM="1", APP_WAIT_PREWARM="1",
                 APP_PRELOAD="broken_preload,fake_heavy")
    h = r["handle"]
    assert h["ok"] is True and h["failed"] == ["broken_preload"], h
    assert h["preloaded"] == ["fake_heavy"]
    assert r["engine"]["ppid"] == h["pid"] and r["exitcode"] == 0


def test_broken_preload_does_kill_a_plain_stdlib_forkserver(app: Path) -> None:
    """What the guard prevents: the stdlib survives ImportError only."""
    code = textwrap.dedent("""
        import multiprocessing as mp
        if __name__ == "__main__":
            mp.set_forkserver_preload(["broken_preload"])
            ctx = mp.get_context("forkserver")
            p = ctx.Process(target=print)
            try:
                p.start(); p.join(); print("started", p.exitcode)
            except Exception as exc:
                print("failed", type(exc).__name__)
    """)
    (app / "naive_broken.py").write_text(code)
    out = subprocess.run([sys.executable, str(app / "naive_broken.py")], env=_env(app),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("failed"), out


def test_environment_is_captured_at_prewarm_time(app: Path) -> None:
    r = _run_app(app, *_weights(app), APP_PREWARM="1", APP_WAIT_PREWARM="1")
    assert r["engine"]["early"] == "set-before-prewarm"  # environ= reached the children
    assert r["engine"]["late"] is None  # a later change did not (documented)
    assert "APP_LATE" in r["handle"]["environ_changes"]  # and the handle says so


@pytest.mark.parametrize("args, code", [(("--help",), 0), (("--bad",), 2)])
def test_early_exit_does_not_wait_for_the_preload(app: Path, args: tuple[str, ...],
                                                  code: int) -> None:
    """The forkserver imports a module that sleeps 60 s; the app exits at once anyway.

    A correctness check of "nothing joins", not a timing claim: the target's exit and the
    end of its output pipes (which the forkserver inherits) come long before the preload
    could finish (the bound is half its sleep, whatever the machine's load).
    """
    env = _env(app, APP_PREWARM="1", APP_PRELOAD="slow_preload,fake_heavy",
               APP_STARTUP_DELAY="0.3")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(app / "api_server.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.wait(timeout=30)
    exited = time.monotonic() - t0
    out, err = proc.communicate(timeout=30)
    pipes_closed = time.monotonic() - t0
    assert proc.returncode == code
    assert exited < 30.0 and pipes_closed < 30.0, (exited, pipes_closed)
    if code == 0:
        assert out.startswith("usage:")
        # the forkserver had been started (the check is not vacuous) and is gone now
        pid = int(err.split("forkserver-pid ")[1].split()[0])
        deadline = time.monotonic() + 3
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")


FAKE_TORCH_INIT = "from . import cuda\n"
FAKE_TORCH_CUDA = "def is_initialized():\n    return {value}\n"

CHECK = textwrap.dedent("""
    import json, sys
    from multiprocessing import forkserver
    for name in sys.argv[1:]:
        if name.startswith("dlopen:"):
            import ctypes
            ctypes.CDLL(name[len("dlopen:"):])
        else:
            __import__(name)
    from headstart.procs.forkserver import prewarm_forkserver
    h = prewarm_forkserver(["json"])
    h.wait(30)
    print(json.dumps({"ok": h.ok, "reason": h.reason,
                      "started": forkserver._forkserver._forkserver_pid is not None}))
""")


def _check(tmp_path: Path, *imports: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHECK, *imports], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("initialised", [True, False])
def test_refuses_when_torch_says_cuda_is_initialised(tmp_path: Path,
                                                     initialised: bool) -> None:
    # A real (tiny) package named torch on sys.path, in a subprocess; nothing is mocked.
    pkg = tmp_path / "torch"
    (pkg / "cuda").mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_TORCH_INIT)
    (pkg / "cuda" / "__init__.py").write_text(FAKE_TORCH_CUDA.format(value=initialised))
    r = _check(tmp_path, "torch")
    if initialised:
        assert r["ok"] is False and "CUDA" in r["reason"] and not r["started"], r
    else:
        assert r["ok"] is True and r["started"], r


def test_refuses_when_the_cuda_driver_is_mapped(tmp_path: Path) -> None:
    import _ctypes

    fake = tmp_path / "libcuda.so.1"  # a real shared object, mapped under the driver's name
    shutil.copy(_ctypes.__file__, fake)
    r = _check(tmp_path, f"dlopen:{fake}")
    assert r["ok"] is False and "driver is loaded" in r["reason"] and not r["started"], r
    assert _check(tmp_path)["ok"] is True  # control: the same process without it


def test_reports_a_preload_that_initialises_cuda(app: Path) -> None:
    pkg = app / "torch"
    (pkg / "cuda").mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_TORCH_INIT)
    (pkg / "cuda" / "__init__.py").write_text(FAKE_TORCH_CUDA.format(value=True))
    r = _run_app(app, *_weights(app), APP_PREWARM="1", APP_WAIT_PREWARM="1",
                 APP_PRELOAD="torch.cuda,fake_heavy")
    assert r["handle"]["ok"] is False
    assert "initialised CUDA" in r["handle"]["reason"]


def test_prewarm_records_trace_events_and_guard_prefix_matches(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import json
        from headstart.procs.forkserver import prewarm_forkserver, _GUARD_PREFIX
        from headstart.trace import tracer
        h = prewarm_forkserver(["json"])
        h.wait(30)
        names = sorted({e["name"] for e in tracer.events() if e["cat"] == "forkserver"})
        import headstart.procs._forkserver_guard as guard  # only now: it arms a finder
        print(json.dumps({"names": names, "same_prefix": guard.PREFIX == _GUARD_PREFIX}))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    r = json.loads(out.stdout)
    assert r["same_prefix"]
    assert {"forkserver.prewarm", "forkserver.start", "forkserver.ready"} <= set(r["names"])


def test_prewarm_never_raises_into_the_caller() -> None:
    from headstart.procs.forkserver import prewarm_forkserver

    h = prewarm_forkserver(["json"], environ={"bad\0name": "x"})  # os.environ rejects it
    assert h.wait(60) and h.ok is False and "not started" in h.reason


def test_public_export() -> None:
    import headstart
    from headstart.procs.forkserver import prewarm_forkserver

    assert headstart.prewarm_forkserver is prewarm_forkserver


def _facts(adapter: str):
    """The facts the adapter gives a serving command of ``adapter``."""
    from headstart.adapters import detect

    argv = {"vllm": ["vllm", "serve", "m"], "generic": ["srv", "--model", "m"],
            "transformers": ["transformers", "serve", "m"],
            "sglang": ["python", "-m", "sglang.launch_server", "--model-path", "m"]}[adapter]
    facts = detect(argv, {})
    assert facts.adapter == adapter
    return facts


class TestShouldPrewarm:
    def test_disabled_wins(self) -> None:
        from headstart.procs.forkserver import should_prewarm

        assert should_prewarm(_facts("vllm"), {}, False)[0] is False
        assert should_prewarm(_facts("generic"), {}, False)[0] is False

    def test_opt_in_elsewhere(self) -> None:
        from headstart.procs.forkserver import should_prewarm

        assert should_prewarm(_facts("transformers"), {}, None) == (
            False, "opt-in (--forkserver) for this target")
        assert should_prewarm(_facts("sglang"), {}, True)[0] is True

    def test_vllm_respects_the_users_choice(self) -> None:
        from headstart.procs.forkserver import forkserver_environ, should_prewarm

        env = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
        ok, why = should_prewarm(_facts("vllm"), env, True)
        assert ok is False and "set by the user" in why
        assert forkserver_environ(_facts("vllm"), env) == {}
        assert should_prewarm(_facts("vllm"), {"VLLM_WORKER_MULTIPROC_METHOD": "forkserver"},
                              None)[0] is True

    def test_vllm_default_follows_what_the_installed_vllm_accepts(self) -> None:
        from headstart.procs import forkserver as fs

        accepts = fs._accepts_forkserver(_facts("vllm"))
        ok, why = fs.should_prewarm(_facts("vllm"), {}, None)
        assert ok is (accepts is True), why
        assert fs.forkserver_environ(_facts("vllm"), {}) == {"VLLM_WORKER_MULTIPROC_METHOD":
                                                             "forkserver"}


RUNTIME_PATH = textwrap.dedent("""
    import json, multiprocessing as mp, os, sys
    sys.path[:0] = [sys.argv[1], sys.argv[2]]  # headstart and the app: runtime sys.path only

    def engine(conn):
        import fake_heavy
        conn.send([os.getppid(), fake_heavy.IMPORTED_IN])

    if __name__ == "__main__":
        from headstart.procs.forkserver import prewarm_forkserver
        h = prewarm_forkserver(["fake_heavy"])
        h.wait(60)
        ctx = mp.get_context("forkserver")
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=engine, args=(w,))
        p.start()
        w.close()
        ppid, imported_in = r.recv()
        p.join()
        print(json.dumps({"ok": h.ok, "pid": h.pid, "failed": h.failed, "ppid": ppid,
                          "imported_in": imported_in}))
""")


def test_preload_uses_the_targets_runtime_sys_path(app: Path, tmp_path_factory:
                                                   pytest.TempPathFactory) -> None:
    """The stdlib forkserver ignores the sys_path it is handed; the guard applies it."""
    script = app / "runtime_path.py"
    script.write_text(RUNTIME_PATH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    elsewhere = tmp_path_factory.mktemp("cwd")
    out = subprocess.run([sys.executable, str(script), SRC, str(app)], env=env,
                         cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["ok"] is True and not r["failed"], r
    assert r["ppid"] == r["pid"] == r["imported_in"]
