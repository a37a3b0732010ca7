"""`headstart run` launches targets exactly as if they were run directly.

Each case runs the same command twice in real subprocesses, once plain and once under
`headstart run --`, and compares stdout, stderr's last line and the exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PY = sys.executable

PROBE = textwrap.dedent(
    """
    import os, sys
    main = sys.modules["__main__"]
    print("name", __name__)
    print("argv", sys.argv)
    print("path0", sys.path[0])
    print("file", getattr(main, "__file__", None))
    print("spec", getattr(getattr(main, "__spec__", None), "name", None))
    print("main-is-us", main.__dict__ is globals())
    print("leftovers", sorted(k for k in globals() if not k.startswith("__")))
    def annotated(x: int) -> None: ...
    print("annotations", annotated.__annotations__)  # no __future__ flags leak into targets
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HEADSTART_DISABLE", None)
    env.update(extra)
    return env


def _pair(cmd: list[str], cwd, env=None) -> tuple[subprocess.CompletedProcess, ...]:
    env = env or _env()
    plain = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    hs = subprocess.run([PY, "-m", "headstart", "run", "--", *cmd], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=60)
    return plain, hs


@pytest.fixture
def probe_tree(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    pkg = tmp_path / "probepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(PROBE)
    script = tmp_path / "bin" / "probe-cli"
    script.parent.mkdir()
    script.write_text(f"#!{PY}\nimport sys\nsys.path.insert(0, {str(tmp_path)!r})\n" + PROBE)
    script.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("form", ["script", "module", "code", "console_script"])
@pytest.mark.parametrize("exit_code", ["0", "3"])
def test_same_as_direct(probe_tree, form, exit_code):
    env = _env(PROBE_EXIT=exit_code, PATH=f"{probe_tree / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cmd = {
        "script": [PY, "probe.py", "a", "--flag"],
        "module": [PY, "-m", "probepkg", "a", "--flag"],
        "code": [PY, "-c", PROBE, "a", "--flag"],
        "console_script": ["probe-cli", "a", "--flag"],
    }[form]
    plain, hs = _pair(cmd, probe_tree, env)
    assert plain.returncode == int(exit_code), plain.stderr
    assert (hs.returncode, hs.stdout) == (plain.returncode, plain.stdout), hs.stderr


def test_console_script_runs_in_process(probe_tree):
    """The in-process path is taken (not a silent exec): headstart's trace sees the target."""
    env = _env(PATH=f"{probe_tree / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([PY, "-m", "headstart", "run", "-v", "--", "probe-cli"], cwd=probe_tree,
                         env=env, capture_output=True, text=True, timeout=60)
    assert "launch=console_script" in out.stderr
    out = subprocess.run([PY, "-m", "headstart", "run", "-v", "--", "sh", "-c", "exit 0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert "launch=exec" in out.stderr


def test_adapter_notes_reach_verbose(tmp_path):
    """What the adapter noted about its decisions is said under -v, after the plan."""
    out = subprocess.run([PY, "-m", "headstart", "run", "-v", "--no-prefetch", "--", PY, "-c",
                          "pass", "--port", "1"], env=_env(), capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "headstart: generic: -c: no model option recognised" in out.stderr.splitlines()


def test_uncaught_exception_same_status_and_traceback(tmp_path):
    (tmp_path / "boom.py").write_text("def f():\n    raise ValueError('boom-42')\nf()\n")
    plain, hs = _pair([PY, "boom.py"], tmp_path)
    assert plain.returncode == hs.returncode == 1
    assert plain.stderr.strip().splitlines()[-1] == hs.stderr.strip().splitlines()[-1]
    assert "ValueError: boom-42" in hs.stderr


def test_keyboard_interrupt_exits_by_sigint(tmp_path):
    (tmp_path / "ki.py").write_text("raise KeyboardInterrupt\n")
    plain, hs = _pair([PY, "ki.py"], tmp_path)
    assert plain.returncode == hs.returncode == -signal.SIGINT


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_passes_through(tmp_path, sig):
    (tmp_path / "sleep.py").write_text(
        "import sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    codes = []
    for prefix in ([], [PY, "-m", "headstart", "run", "--"]):
        proc = subprocess.Popen([*prefix, PY, "sleep.py"], cwd=tmp_path, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        codes.append(proc.wait(timeout=30))
    assert codes[0] == codes[1]


def test_exec_path_exit_code_and_missing_command():
    out = subprocess.run([PY, "-m", "headstart", "run", "--", "sh", "-c", "exit 7"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 7
    out = subprocess.run([PY, "-m", "headstart", "run", "--", "no-such-command-xyz"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 127
    assert "no-such-command-xyz" in out.stderr


def test_no_command_is_an_error():
    out = subprocess.run([PY, "-m", "headstart", "run"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "no command" in out.stderr


def test_disable_is_pass_through(tmp_path):
    (tmp_path / "p.py").write_text(PROBE)
    plain, hs = _pair([PY, "p.py", "x"], tmp_path, _env(HEADSTART_DISABLE="1"))
    assert (hs.returncode, hs.stdout) == (plain.returncode, plain.stdout)


def test_target_help_reaches_target(tmp_path):
    (tmp_path / "h.py").write_text(
        "import argparse\np = argparse.ArgumentParser(prog='h')\np.add_argument('--x')\n"
        "p.parse_args()\n")
    plain, hs = _pair([PY, "h.py", "--help"], tmp_path)
    assert plain.returncode == hs.returncode == 0
    assert hs.stdout == plain.stdout and "usage: h" in hs.stdout


def test_spawned_children_reimport_main(tmp_path):
    """multiprocessing spawn re-runs __main__ by path in children: must work in-process."""
    (tmp_path / "mp.py").write_text(textwrap.dedent("""
        import multiprocessing as mp
        def square(x):
            return x * x
        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(2) as pool:
                print(pool.map(square, range(5)))
    """))
    plain, hs = _pair([PY, "mp.py"], tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert (hs.returncode, hs.stdout) == (0, "[0, 1, 4, 9, 16]\n"), hs.stderr


def test_trace_file_written(tmp_path):
    trace = tmp_path / "t.json"
    out = subprocess.run([PY, "-m", "headstart", "run", "--trace", str(trace), "--", PY, "-c",
                          "print('hi')"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "hi\n"
    import json

    data = json.loads(trace.read_text())
    names = {e["name"] for e in data["traceEvents"]}
    assert {"plan", "target start"} <= names


def test_daemon_threads_do_not_delay_exit(tmp_path):
    """A slow preload must not hold the process open after the target exits."""
    (tmp_path / "slowpkg").mkdir()
    (tmp_path / "slowpkg" / "__init__.py").write_text("import time\ntime.sleep(120)\n")
    env = _env(PYTHONPATH=str(tmp_path))
    t0 = time.monotonic()
    out = subprocess.run([PY, "-m", "headstart", "run", "--preload", "slowpkg", "--", PY, "-c",
                          "print('done')"], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert out.returncode == 0 and out.stdout == "done\n", out.stderr
    assert elapsed < 60, "exit waited for the background import"


def test_fifo_on_path_is_exec_not_a_hang(tmp_path, monkeypatch):
    """An executable FIFO found on PATH: classify() (and bench's find_interpreter) read the
    shebang of what they find, and opening a FIFO for reading blocks until a writer comes."""
    import threading

    from headstart.bench.environment import find_interpreter
    from headstart.procs.launch import classify, read_shebang

    fifo = tmp_path / "fifo-server"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    results: list[object] = []

    def probe() -> None:
        results.append(classify(["fifo-server"]).kind)
        results.append(find_interpreter(["fifo-server"]))
        results.append(read_shebang(str(fifo)))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "opened a FIFO found on PATH"
    assert results == ["exec", None, None]


def test_read_shebang(tmp_path):
    from headstart.procs.launch import read_shebang

    script = tmp_path / "s"
    script.write_bytes(b"#!/usr/bin/env python3 -u\nprint(1)\n")
    assert read_shebang(str(script)) == ["/usr/bin/env", "python3", "-u"]
    script.write_bytes(b"\x7fELF\x02\x01")
    assert read_shebang(str(script)) is None
    assert read_shebang(str(tmp_path / "missing")) is None
    assert read_shebang(str(tmp_path)) is None  # a folder


def test_a_signal_during_headstarts_fork_is_delivered_after_it(tmp_path):
    """os.fork runs at-fork hooks and drops what they raise: a Ctrl-C arriving there must
    not be lost (it was: the target went on starting)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, signal, time
        from headstart.procs.launch import fork_deferring_signals
        os.register_at_fork(before=lambda: os.kill(os.getpid(), signal.SIGINT))
        try:
            pid, _ = fork_deferring_signals()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            time.sleep(1)
            print("lost")
        except KeyboardInterrupt:
            print("delivered")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "delivered", out.stderr
    plain = subprocess.run([sys.executable, "-c", code.replace(
        "pid, _ = fork_deferring_signals()", "pid = os.fork()")], capture_output=True,
        text=True, timeout=30)
    assert plain.stdout.strip() == "lost"  # what a plain fork does: the case being fixed


# --- one reading of a Python command line ----------------------------------------------------

# What classify() does with each way parse_invocation() reads a command of this interpreter.
_KIND_OF_VIA = {"module": "module", "code": "code", "script": "script"}


@pytest.mark.parametrize("args", [
    ["-m", "pkg.mod", "a"], ["-mpkg.mod"], ["-c", "print(1)", "a"], ["-cprint(1)"],
    ["probe.py", "a"], ["-um", "m"], ["-u", "probe.py"], ["-X", "importtime", "-m", "m"],
    ["--", "probe.py"], ["-"], ["-m"], ["--version"],
])
def test_launch_and_adapters_read_a_command_alike(args, tmp_path, monkeypatch):
    """classify() decides from parse_invocation(): it runs in-process exactly the module,
    code or script the adapters are told about, and execs whatever carries interpreter
    options or names no target."""
    from headstart.procs.launch import classify, parse_invocation

    monkeypatch.chdir(tmp_path)
    (tmp_path / "probe.py").write_text("pass\n")
    argv = [PY, *args]
    inv, launch = parse_invocation(argv), classify(argv)
    if inv.options or inv.via not in _KIND_OF_VIA:
        assert launch.kind == "exec" and launch.reason.startswith("interpreter option")
        return
    assert launch.kind == _KIND_OF_VIA[inv.via]
    assert list(launch.argv[1:]) == inv.args
    if inv.via == "module":
        assert launch.module == inv.name == launch.argv[0]
    elif inv.via == "code":
        assert launch.code == inv.code == "print(1)"
    else:
        assert launch.path == inv.path == "probe.py"


@pytest.mark.parametrize("name", ["pypy3", "python3.13t", "python3.12d", "python3", "python"])
def test_every_interpreter_name_is_one_to_both(name, tmp_path):
    """The names the adapters see through (pypy3, python3.13t) are interpreters to the launch
    too: another interpreter is exec-ed as such, and read by name (they disagreed)."""
    from headstart.procs.launch import classify, is_python_name, parse_invocation

    assert is_python_name(name)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nowhere\n")
    exe = venv / "bin" / name
    exe.symlink_to(os.path.realpath(PY))
    inv = parse_invocation([str(exe), "-m", "m", "a"])
    assert (inv.name, inv.args, inv.via) == ("m", ["a"], "module")
    launch = classify([str(exe), "-m", "m", "a"])
    assert (launch.kind, launch.reason) == ("exec", "another Python interpreter")
    # a script whose shebang names such an interpreter: not one of ours either
    script = tmp_path / "tool"
    script.write_text(f"#!{exe}\nprint(1)\n")
    script.chmod(0o755)
    assert classify([str(script)]).kind == "exec"


@pytest.mark.parametrize("name", ["python-config", "pythonista", "pypyserver", "ipython"])
def test_not_interpreter_names(name):
    from headstart.procs.launch import is_python_name, parse_invocation

    assert not is_python_name(name)
    assert parse_invocation([name, "-m", "x"]).via == "program"
