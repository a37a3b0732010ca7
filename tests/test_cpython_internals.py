"""``headstart._cpython``, the one door to CPython's internals, on every supported CPython.

Each check runs in a fresh interpreter: this Python and every other CPython 3.10-3.13
found under pyenv (as the import-gate tests do), so that a release that changes one of the
internals fails here, by name, before the gate or the forkserver prewarm misbehave.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from _pythons import python_id, supported_pythons

SRC = Path(__file__).resolve().parents[1] / "src"


PYTHONS = pytest.mark.parametrize("python", supported_pythons(), ids=python_id)


def _run(python: str, code: str, tmp_path: Path, flags: tuple[str, ...] = ()) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(tmp_path)])
    out = subprocess.run([python, *flags, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@PYTHONS
def test_gcd_import_is_what_import_module_calls(python, tmp_path):
    r = _run(python, """
        import importlib, json
        from headstart import _cpython
        owner, attr = _cpython.GCD_IMPORT
        original, seen = getattr(owner, attr), []
        def wrapper(name, package=None, level=0):
            seen.append(name)
            return original(name, package, level)
        setattr(owner, attr, wrapper)
        try:
            importlib.import_module("json")
            importlib.import_module(".decoder", "json")
        finally:
            setattr(owner, attr, original)
        print(json.dumps({"seen": seen,
                          "resolved": _cpython.resolve_name("decoder", "json", 1)}))
    """, tmp_path)
    # import_module resolves a relative name itself and hands the rest on
    assert r == {"seen": ["json", "decoder"], "resolved": "json.decoder"}


@PYTHONS
def test_blocking_on_names_the_lock_and_its_owner(python, tmp_path):
    (tmp_path / "slow_mod.py").write_text(
        "import builtins, time\nbuiltins.entered.set()\nbuiltins.release.wait(10)\n")
    r = _run(python, """
        import builtins, json, threading, time
        from headstart import _cpython
        builtins.entered, builtins.release = threading.Event(), threading.Event()
        owner = threading.Thread(target=lambda: __import__("slow_mod"))
        owner.start()
        builtins.entered.wait(10)
        waiter = threading.Thread(target=lambda: __import__("slow_mod"))
        waiter.start()
        locks, deadline = [], time.monotonic() + 10
        while not locks and time.monotonic() < deadline:
            locks = _cpython.blocking_on(waiter.ident)
            time.sleep(0.001)
        owners = [_cpython.lock_owner(lock) for lock in locks]
        builtins.release.set()
        owner.join(); waiter.join()
        print(json.dumps({"owners_ok": owners == [owner.ident],
                          "after": _cpython.blocking_on(waiter.ident)}))
    """, tmp_path)
    assert r == {"owners_ok": True, "after": []}


@PYTHONS
def test_threads_and_frames(python, tmp_path):
    r = _run(python, """
        import json, sys, threading
        from headstart import _cpython
        def where():
            return _cpython.caller_frame(0).f_code.co_name, _cpython.caller_frame(1).f_code.co_name
        def outer():
            return where()
        me = threading.get_ident()
        print(json.dumps({
            "native": _cpython.native_id(me) == threading.get_native_id(),
            "unknown": _cpython.native_id(-1),
            "frame": _cpython.current_frames()[me].f_back.f_code.co_name,
            "callers": outer()}))
    """, tmp_path)
    assert r == {"native": True, "unknown": None, "frame": "<module>",
                 "callers": ["where", "outer"]}


@PYTHONS
def test_inheriting_while_a_spawned_child_imports_main(python, tmp_path):
    (tmp_path / "parent.py").write_text(textwrap.dedent("""
        import json, multiprocessing, sys
        from headstart import _cpython
        if __name__ == "__mp_main__":  # the spawned child, re-importing this file
            with open(sys.argv[1] if len(sys.argv) > 1 else "child.json", "w") as fh:
                json.dump(_cpython.inheriting(), fh)
        def child():
            pass
        if __name__ == "__main__":
            p = multiprocessing.get_context("spawn").Process(target=child)
            p.start(); p.join()
            with open("child.json") as fh:
                print(json.dumps({"parent": _cpython.inheriting(), "child": json.load(fh)}))
    """))
    r = _run(python, "import runpy; runpy.run_path('parent.py', run_name='__main__')", tmp_path)
    assert r == {"parent": False, "child": True}


@PYTHONS
def test_forkserver_state_and_thread_only_preparation_data(python, tmp_path):
    r = _run(python, """
        import json, multiprocessing, sys, threading
        from multiprocessing import forkserver, spawn
        from headstart import _cpython
        before = _cpython.forkserver_pid()
        multiprocessing.set_forkserver_preload(["json"])
        preload = _cpython.forkserver_preload()
        original, other = spawn.get_preparation_data, {}
        def from_another_thread():
            other["keys"] = sorted(spawn.get_preparation_data("x"))
        with _cpython.preparation_data_for_this_thread(lambda: {"sys_path": list(sys.path)}):
            mine = spawn.get_preparation_data("x")
            forkserver.ensure_running()
            start_method = multiprocessing.get_start_method(allow_none=True)
            # the original, as another thread gets it, fixes the start method: last
            t = threading.Thread(target=from_another_thread); t.start(); t.join()
        print(json.dumps({
            "before": before, "preload": preload, "mine": sorted(mine),
            "other_has_authkey": "authkey" in other["keys"],
            "restored": spawn.get_preparation_data is original,
            "running": _cpython.forkserver_pid() is not None,
            "start_method": start_method}))
    """, tmp_path)
    assert r == {"before": None, "preload": ["json"], "mine": ["sys_path"],
                 "other_has_authkey": True, "restored": True, "running": True,
                 "start_method": None}


@PYTHONS
def test_run_module_as_main_is_python_dash_m(python, tmp_path):
    (tmp_path / "target_mod.py").write_text(
        "import json, sys\nprint(json.dumps({'name': __name__, 'argv0': sys.argv[0],"
        " 'main': sys.modules['__main__'].__dict__ is globals()}))\n")
    r = _run(python, """
        import sys
        from headstart import _cpython
        sys.argv[:] = ["-m", "arg"]
        _cpython.run_module_as_main("target_mod")
    """, tmp_path)
    assert r == {"name": "__main__", "argv0": str(tmp_path / "target_mod.py"), "main": True}


# --- what the zygote relies on ---------------------------------------------------------------


@PYTHONS
def test_exit_steps_and_interpreter_flags(python, tmp_path):
    r = _run(python, """
        import atexit, json, threading, time
        from headstart import _cpython
        ran = []
        atexit.register(ran.append, "inherited")
        _cpython.clear_exit_handlers()
        atexit.register(ran.append, "first")
        atexit.register(ran.append, "second")
        done = []
        threading.Thread(target=lambda: (time.sleep(0.3), done.append(1))).start()
        _cpython.join_non_daemon_threads()
        joined = done == [1]
        _cpython.run_exit_handlers()
        print(json.dumps({"ran": ran, "joined": joined,
                          "flags": _cpython.interpreter_flags()}))
    """, tmp_path, flags=("-O", "-W", "ignore"))
    assert r == {"ran": ["second", "first"], "joined": True, "flags": ["-O", "-Wignore"]}


@PYTHONS
def test_spawn_popen_launched_by_hand(python, tmp_path):
    """A spawn child started as the zygote starts one: spawn's payload written to a forked
    copy that enters through spawn_main; the handle adopted, its exit code from our poll."""
    (tmp_path / "mp_target.py").write_text(
        "import sys\ndef work(path):\n    open(path, 'w').write('ran')\n    sys.exit(3)\n")
    r = _run(python, """
        import importlib, json, multiprocessing, os, sys
        from headstart import _cpython
        import mp_target
        module = importlib.import_module(_cpython.SPAWN_POPEN_MODULE)
        seen = {}

        class Status:
            def __init__(self, pid):
                self.pid = pid
            def code(self, block):
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
                return os.waitstatus_to_exitcode(status) if pid else None

        def launch(popen, process_obj, spawn_launch):
            if process_obj.name == "real":
                spawn_launch(process_obj)
                return
            fds_before = list(_cpython.popen_fds(popen))
            tracker_fd, payload = _cpython.spawn_payload(popen, process_obj)
            seen["tracker_fd_passed"] = _cpython.popen_fds(popen) == [*fds_before, tracker_fd]
            r, w = os.pipe()
            sentinel_r, sentinel_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(w); os.close(sentinel_r)
                sys.argv[:] = ["-c", "--multiprocessing-fork"]
                code = 1
                try:
                    _cpython.spawn_main(r, tracker_fd)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                finally:
                    os._exit(code)
            os.close(r); os.close(sentinel_w)
            popen.status = Status(pid)
            _cpython.adopt_child(popen, pid, sentinel_r, os.close, (sentinel_r,))
            with open(w, "wb") as f:
                f.write(payload)

        Popen = _cpython.spawn_popen_subclass(module.Popen, launch,
                                              lambda p: getattr(p, "status", None))
        module.Popen = Popen  # as the zygote patches it: spawn's Process looks it up here
        out = {}
        for name in ("by-hand", "real"):
            p = multiprocessing.get_context("spawn").Process(
                target=mp_target.work, args=(name + ".txt",), name=name)
            p.start(); p.join(30)
            out[name] = [p.exitcode, open(name + ".txt").read()]
        print(json.dumps({**out, **seen,
                          "executable": _cpython.spawn_executable() == sys.executable}))
    """, tmp_path)
    assert r == {"by-hand": [3, "ran"], "real": [3, "ran"], "tracker_fd_passed": True,
                 "executable": True}


def test_zygote_spells_the_spawn_module_as_cpython_does():
    from headstart import _cpython
    from headstart.procs import zygote

    assert zygote._SPAWN_MODULE == _cpython.SPAWN_POPEN_MODULE


@PYTHONS
def test_environ_reads_by_name_not_by_walking(python, tmp_path):
    r = _run(python, """
        import json, os
        from headstart import _cpython
        os.environ["HS_A"] = "1"
        reads = {}
        with _cpython.environ_reads(reads):
            os.environ["HS_A"]
            os.environ.get("HS_B")
            "HS_C" in os.environ
            os.getenv("HS_D")
            try:
                os.environ["HS_E"]
            except KeyError:
                pass
            os.environ["HS_A"] = "2"
            os.environ["HS_A"]  # the value at the first read is kept
            walked = (list(os.environ.items()), list(os.environ.values()), os.environ.copy())
            walked_all = {len(w) for w in walked} == {len(os.environ)}
        os.environ["HS_F"] = "x"; os.environ["HS_F"]  # after the block: not watched
        print(json.dumps({"reads": reads, "restored": type(os.environ) is os._Environ,
                          "walked_all": walked_all}))
    """, tmp_path)
    assert r == {"reads": {"HS_A": "1", "HS_B": None, "HS_C": None, "HS_D": None, "HS_E": None},
                 "restored": True, "walked_all": True}
