"""Spawned children forked from the zygote see what spawn would have given them.

Every scenario runs the same target twice on real processes, under ``headstart run
--no-zygote`` (real spawn) and ``--zygote``, and compares what the children reported, on each
supported CPython that is installed. The fallbacks (a variable read at import that changed,
an accelerator initialised in the zygote, a thread, a zygote not ready in time, another
executable, a fork of the owner) are checked to spawn for real and to say why under ``-v``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _pythons import python_id, supported_pythons

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
TARGET = REPO / "tests" / "zygote_targets" / "semantics.py"

PYTHONS = pytest.mark.parametrize("python", supported_pythons(), ids=python_id)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "HEADSTART_", "ZYG_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(SRC), str(tmp_path)]), ZYG_CWD=str(tmp_path),
               ZYG_REMOVED_BEFORE_SPAWN="1", HEADSTART_CACHE=str(tmp_path / "cache"))
    env.update(extra)
    return env


def _run(python: str, tmp_path: Path, args: list[str], *, zygote: bool,
         preload: str = "json", env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [python, "-m", "headstart", "run", "-v", "--zygote" if zygote else "--no-zygote",
           "--preload", preload, "--", python, *args]
    return subprocess.run(cmd, env=env or _env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)


def _report(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forked(out: subprocess.CompletedProcess) -> int:
    return out.stderr.count("headstart: zygote: forked ")


def _torch_or_json() -> str:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "json"
    return "json,torch"


@PYTHONS
def test_children_see_what_spawn_gives_them(python: str, tmp_path: Path) -> None:
    preload = _torch_or_json() if python == sys.executable else "json"
    env = _env(tmp_path, **({"ZYG_TORCH": "1"} if "torch" in preload else {}))
    real = _run(python, tmp_path, [str(TARGET), "semantics"], zygote=False, preload=preload,
                env=env)
    warm = _run(python, tmp_path, [str(TARGET), "semantics"], zygote=True, preload=preload,
                env=env)
    assert _forked(real) == 0
    assert _forked(warm) == 2, warm.stderr
    got, want = _report(warm), _report(real)
    # the same descriptors, not the same numbers: the zygote's socket takes one in the parent
    for report in (got, want):
        for child in ("child0", "child1"):
            report[child]["fds"] = len(report[child]["fds"])
    assert got == want
    # and what spawn gives is what the target set up just before the spawn
    child = got["child0"]
    assert child["env"] == "yes" and child["env_removed"] is False
    assert child["cwd"] == str(tmp_path) and child["umask"] == "0o27"
    assert child["path_tail"] == "/zyg/added/before/spawn"
    assert child["main_name"] == "__mp_main__" and child["main_marker"] == "main-module-global"
    assert child["extra_fd_open"] is False
    assert child["sigusr1"] == "ignore" and child["sigusr2"] == "default"
    assert child["sigint"] == "default_int_handler" and child["sigpipe"] == "ignore"
    assert signal.SIGWINCH in child["blocked"]
    assert got["children_random_differ"] and got.get("children_torch_differ", True)
    assert warm.stdout.count("child stdout line") == 2


@PYTHONS
def test_exit_codes_and_signals_as_spawn(python: str, tmp_path: Path) -> None:
    real = _run(python, tmp_path, [str(TARGET), "exits"], zygote=False)
    warm = _run(python, tmp_path, [str(TARGET), "exits"], zygote=True)
    assert _forked(warm) == 8, warm.stderr
    got = _report(warm)
    assert got == _report(real)
    assert got["sys.exit(7)"] == 7 and got["raise"] == 1 and got["os._exit(3)"] == 3
    assert got["SIGTERM self"] == -signal.SIGTERM and got["SIGKILL of pid"] == -signal.SIGKILL
    assert got["terminate"]["exitcode"] == -signal.SIGTERM and not got["terminate"]["alive_after"]
    assert got["kill"] == {"alive_before": True, "sentinel_before": False,
                           "exitcode": -signal.SIGKILL, "alive_after": False,
                           "sentinel_after": True}
    assert "RuntimeError: boom" in warm.stderr  # the child's traceback, as spawn prints it


def _session_left(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(sid)], capture_output=True,
                         text=True)
    return [line for line in out.stdout.splitlines() if line.strip()]


def _wait_empty(sid: int, seconds: float = 10) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _session_left(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("zygote", [False, True], ids=["spawn", "zygote"])
def test_child_notices_parent_death_and_nothing_stays(zygote: bool, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    cmd = [sys.executable, "-m", "headstart", "run", "--preload", "json",
           "--zygote" if zygote else "--no-zygote", "--", sys.executable, str(TARGET),
           "parent_death"]
    proc = subprocess.Popen(cmd, env=_env(tmp_path, ZYG_FLAG=str(flag)), cwd=tmp_path,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    child = json.loads(out.strip().splitlines()[-1])["child"]
    assert _wait_empty(proc.pid) == []  # the zygote is gone, the child noticed and left
    assert flag.read_text() == "parent gone"
    assert not os.path.exists(f"/proc/{child}")


SLEEPER = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    def watch():
        mp.parent_process().join()
    if __name__ == "__main__":
        ctx = mp.get_context("spawn")
        ps = [ctx.Process(target=watch) for _ in range(2)]
        for p in ps:
            p.start()
        print("started", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_signal_to_target_leaves_nothing(sig: int, tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    cmd = [sys.executable, "-m", "headstart", "run", "--zygote", "-v", "--preload", "json",
           "--", sys.executable, "sleeper.py"]
    proc = subprocess.Popen(cmd, env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        assert len(_session_left(proc.pid)) >= 4  # target, zygote, two children (+ zygotes)
        if sig == signal.SIGKILL:
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group
        proc.communicate(timeout=30)
        assert proc.returncode == -sig if sig == signal.SIGKILL else proc.returncode != 0
        assert _wait_empty(proc.pid) == []
    finally:  # a failed run must not leave its tree behind for the next tests
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


ENVMOD = "import os\nMODE = os.environ.get('ZYG_IMPORT_MODE', 'unset')\n"
ENV_TARGET = textwrap.dedent("""
    import multiprocessing as mp, os
    def child(q):
        import zyg_envmod
        q.put(zyg_envmod.MODE)
    if __name__ == "__main__":
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        os.environ["ZYG_IMPORT_MODE"] = "changed"
        p = ctx.Process(target=child, args=(q,))
        p.start()
        print(q.get())
        p.join()
""")


def test_variable_read_at_import_that_changed_spawns_for_real(tmp_path: Path) -> None:
    (tmp_path / "zyg_envmod.py").write_text(ENVMOD)
    (tmp_path / "t.py").write_text(ENV_TARGET)
    out = _run(sys.executable, tmp_path, ["t.py"], zygote=True, preload="zyg_envmod")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["changed"]  # the child imported it afresh
    assert "for real: ZYG_IMPORT_MODE differs (zygote: None, now: 'changed')" in out.stderr
    assert _forked(out) == 0


SETDEFAULT_TARGET = textwrap.dedent("""
    import multiprocessing as mp, os
    import zyg_defaults  # the target imports it too: its environment now has the default
    def child(q):
        q.put(os.environ["ZYG_DEFAULTED"])
    if __name__ == "__main__":
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        print(q.get())
        p.join()
""")


def test_a_variable_the_imports_set_themselves_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "zyg_defaults.py").write_text(
        "import os\nos.environ.setdefault('ZYG_DEFAULTED', 'from-import')\n")
    (tmp_path / "t.py").write_text(SETDEFAULT_TARGET)
    out = _run(sys.executable, tmp_path, ["t.py"], zygote=True, preload="zyg_defaults")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["from-import"] and _forked(out) == 1, out.stderr


PLAIN_TARGET = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    def child(q):
        q.put(os.getpid())
    if __name__ == "__main__":
        if len(sys.argv) > 1 and sys.argv[1] == "set_executable":
            mp.set_executable(os.path.realpath(sys.executable))
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        print("child", q.get() == p.pid)
        p.join()
        print("exit", p.exitcode)
""")


@pytest.mark.parametrize("case", ["accelerator", "thread", "slow", "set_executable"])
def test_fallbacks_spawn_for_real_and_say_why(case: str, tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(PLAIN_TARGET)
    (tmp_path / "libcuda.so.1").write_bytes(b"\0" * 4096)
    (tmp_path / "fake_accel.py").write_text(textwrap.dedent(f"""
        import mmap
        # what loading the CUDA driver leaves in /proc/self/maps
        _f = open({str(tmp_path / "libcuda.so.1")!r}, "rb")
        MAP = mmap.mmap(_f.fileno(), 4096, prot=mmap.PROT_READ)
    """))
    (tmp_path / "starts_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(30,)).start()\n")
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(3)\n")
    preload, env, args, reason = {
        "accelerator": ("fake_accel", {}, [], "off: refused: the CUDA driver is loaded"),
        "thread": ("starts_thread", {}, [], "off: refused: the imports started threads"),
        "slow": ("slow_import", {"HEADSTART_ZYGOTE_WAIT": "0.2"}, [], "off: not ready after"),
        "set_executable": ("json", {}, ["set_executable"], "for real: spawn's executable is"),
    }[case]
    out = _run(sys.executable, tmp_path, ["t.py", *args], zygote=True, preload=preload,
               env=_env(tmp_path, **env))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["child", "True", "exit", "0"]
    assert reason in out.stderr
    assert _forked(out) == 0


FORKING_TARGET = textwrap.dedent("""
    import multiprocessing as mp, os
    def child(q):
        q.put("ok")
    if __name__ == "__main__":
        pid = os.fork()
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        got = q.get()
        p.join()
        if pid == 0:
            os._exit(0 if got == "ok" and p.exitcode == 0 else 1)
        _, status = os.waitpid(pid, 0)
        print("fork child", os.waitstatus_to_exitcode(status), "parent", got, p.exitcode)
""")


def test_a_fork_of_the_owner_spawns_for_real(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(FORKING_TARGET)
    out = _run(sys.executable, tmp_path, ["t.py"], zygote=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["fork", "child", "0", "parent", "ok", "0"]
    assert _forked(out) == 1  # the owner's spawn only


BANNER = "import sys\nprint('banner on stdout')\nprint('warning on stderr', file=sys.stderr)\n"
BANNER_TARGET = textwrap.dedent("""
    import multiprocessing as mp
    def child():
        import zyg_banner  # noqa: F401
    if __name__ == "__main__":
        ctx = mp.get_context("spawn")
        for _ in range(2):
            p = ctx.Process(target=child)
            p.start()
            p.join()
""")


def test_what_the_imports_print_is_printed_by_each_child(tmp_path: Path) -> None:
    (tmp_path / "zyg_banner.py").write_text(BANNER)
    (tmp_path / "t.py").write_text(BANNER_TARGET)
    # the target's own background import prints it once, each child once
    real = _run(sys.executable, tmp_path, ["t.py"], zygote=False, preload="zyg_banner")
    warm = _run(sys.executable, tmp_path, ["t.py"], zygote=True, preload="zyg_banner")
    assert _forked(warm) == 2
    for out in (real, warm):
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("banner on stdout") == 3
        assert out.stderr.count("warning on stderr") == 3


def test_exit_status_of_target_passes_through(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(PLAIN_TARGET + "    raise SystemExit(5)\n")
    out = _run(sys.executable, tmp_path, ["t.py"], zygote=True)
    assert out.returncode == 5 and _forked(out) == 1


def test_plan_decides_the_zygote() -> None:
    from headstart.plan import RunOptions, build_plan

    def plan(argv: list[str], **opts: object):
        return build_plan(RunOptions(**opts), argv, env={})

    vllm = ["vllm", "serve", "/models/x"]
    served = plan(vllm)
    if served.launch.in_process:  # vLLM installed here: in-process, on by default
        assert served.zygote and "vllm.v1.engine.core" in served.zygote_preload
        assert plan(vllm, zygote=False).zygote_reason == "disabled (--no-zygote)"
    assert not plan(["vllm", "--help"]).zygote
    script = [sys.executable, str(TARGET)]
    assert not plan(script).zygote and "opt-in" in plan(script).zygote_reason
    assert plan(script, zygote=True).zygote
    assert plan(["/bin/true"], zygote=True).zygote_reason == "target is exec'd"


NESTED = textwrap.dedent("""
    import multiprocessing as mp, os
    def grandchild(q):
        q.put((os.getppid(), os.environ.get("OMP_NUM_THREADS")))
    def ancestors(pid):
        while pid > 1:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rpartition(")")[2].split()[1])
            yield pid
    def child(q, out):
        os.environ["OMP_NUM_THREADS"] = "3"  # read by native code when it loads
        inner = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(target=grandchild, args=(inner,))
        p.start()
        parent, threads = inner.get()
        mine = parent == os.getpid() or os.getpid() in ancestors(parent)
        p.join()
        out.put((threads, "descendant" if mine else "elsewhere"))
    if __name__ == "__main__":
        q = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(target=child, args=(None, q))
        p.start()
        print(*q.get())
        p.join()
""")



def test_grandchildren_spawned_with_new_variables_fork_from_a_learned_zygote(
        tmp_path: Path) -> None:
    """First start: the grandchild is spawned for real (OMP_NUM_THREADS changed) and the
    value is kept; the next start's grandchild forks from a zygote of the child started
    under it, still a descendant of the child."""
    (tmp_path / "t.py").write_text(NESTED)
    first = _run(sys.executable, tmp_path, ["t.py"], zygote=True)
    assert first.returncode == 0, first.stderr
    assert "for real: OMP_NUM_THREADS differs (zygote: None, now: '3')" in first.stderr
    assert first.stdout.split() == ["3", "descendant"]
    lessons = list((tmp_path / "cache" / "zygote").glob("*.json"))
    assert [json.loads(p.read_text()) for p in lessons] == [{"1": {"OMP_NUM_THREADS": "3"}}]
    second = _run(sys.executable, tmp_path, ["t.py"], zygote=True)
    assert second.returncode == 0, second.stderr
    assert _forked(second) == 2 and "for real" not in second.stderr
    assert second.stdout.split() == ["3", "descendant"]
