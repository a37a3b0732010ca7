"""The real vLLM (its CPU build, ``benchmarks/vllm_cpu_env.sh``) with and without
``headstart run``, on real processes: the CLI's output and exit status, a first chat
completion with the same greedy answer, bad arguments, Ctrl-C at three moments, and what
headstart reads from vLLM's command line (a repo id served from a Hugging Face cache with
``HF_HUB_OFFLINE=1``, ``--revision``, ``--download-dir`` offline (vLLM resolves in the
default cache then), API-only and engine-only flags, and no weights replayed for an API-only
command).

vLLM lives in its own venv (torch 2.13.0+cpu, no torchvision): ``HEADSTART_TEST_VLLM_VENV``
names it, default ``/work/vllm-venv``. Without one the tests are skipped, unless the venv
was named explicitly or ``CI=true``: then a missing or broken venv fails them. headstart
runs from this checkout's ``src`` (``PYTHONPATH``) whatever the venv has installed.

One small model (20 MB, float32: this CPU has no native bf16) serves every test, and one
start of each server (baseline, headstart) serves the comparison, the resolution checks
and Ctrl-C after the first answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _ports_util import free_port
from _procs_util import process_table

pytestmark = pytest.mark.slow

VENV_ENV = "HEADSTART_TEST_VLLM_VENV"
DEFAULT_VENV = "/work/vllm-venv"
TAG_ENV = "HEADSTART_TEST_VLLM_TAG"  # marks every process a test starts, helpers included
REPO = Path(__file__).resolve().parents[1]
REPO_ID = "hs-test/tiny"
REVISION = "v1"  # the only ref of the cache: without --revision nothing resolves
READY_TIMEOUT = 420.0  # seconds to a first completion (about 45 s here)
GONE_TIMEOUT = 60.0  # seconds for a tree to be gone after Ctrl-C (about 3 s here)
SERVE_FLAGS = ("--max-model-len", "512", "--enforce-eager", "--dtype", "float32",
               "--host", "127.0.0.1")
PROMPT = [{"role": "user", "content": "Tell me about the weather."}]
_RUN_ID = uuid.uuid4().hex[:12]


# --- the vLLM venv ------------------------------------------------------------------------


def _venv_problem(venv: Path) -> str | None:
    for name in ("python", "vllm", "headstart"):
        if not os.access(venv / "bin" / name, os.X_OK):
            return f"{venv}/bin/{name} is missing (build it: bash benchmarks/vllm_cpu_env.sh)"
    probe = ("import importlib.metadata as m, importlib.util as u, headstart\n"
             "assert u.find_spec('vllm'), 'vllm is not importable'\n"
             "print(m.version('vllm')); print(headstart.__file__)")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", probe], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        return f"{venv} has no working vLLM: {proc.stderr.strip()[-500:]}"
    version, where = proc.stdout.split()
    if "cpu" not in version:
        return f"{venv} has vLLM {version}, not the CPU build"
    if not Path(where).resolve().is_relative_to(REPO / "src"):
        return f"{venv} imports headstart from {where}, not from this checkout"
    return None


@dataclass
class Vllm:
    venv: Path
    root: Path
    snapshot: Path  # the model's snapshot in the HF_HOME cache
    commit: str

    @property
    def download_dir(self) -> Path:
        return self.root / "download-dir"  # empty

    def env(self, tag: str) -> dict[str, str]:
        drop = ("HEADSTART_", "VLLM_", "HF_", "TRANSFORMERS_", "PYTHON")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(
            PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONPATH=str(REPO / "src"),
            VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
            VLLM_CACHE_ROOT=str(self.root / "vllm-cache"),
            HF_HOME=str(self.root / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
            HEADSTART_CACHE=str(self.root / "headstart-cache"),
        )
        env[TAG_ENV] = f"{_RUN_ID}-{tag}"
        return env

    def serve_args(self, port: int, *extra: str) -> list[str]:
        """``vllm serve`` by repo id from the HF_HOME cache at ``--revision``, offline."""
        return ["serve", REPO_ID, "--revision", REVISION, *SERVE_FLAGS, "--port", str(port),
                *extra]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory):
    explicit = os.environ.get(VENV_ENV)
    venv = Path(explicit or DEFAULT_VENV)
    problem = _venv_problem(venv)
    if problem is not None:
        if explicit or os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{VENV_ENV}={explicit}: {problem}" if explicit
                        else f"CI=true and no vLLM venv: {problem}")
        pytest.skip(f"no vLLM venv ({VENV_ENV} or {DEFAULT_VENV}): {problem}")

    root = tmp_path_factory.mktemp("vllm")
    hub = root / "hf" / "hub"
    made = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "headstart", "demo-model", str(hub), "--hf-cache",
         "--repo-id", REPO_ID, "--size", "20M", "--dtype", "float32"],
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")), capture_output=True, text=True,
        timeout=300, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    repo = hub / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "refs" / "main").rename(repo / "refs" / REVISION)
    commit = (repo / "refs" / REVISION).read_text().strip()
    vllm = Vllm(venv=venv, root=root, snapshot=repo / "snapshots" / commit, commit=commit)
    vllm.download_dir.mkdir()
    yield vllm
    _kill_all()


# --- processes ----------------------------------------------------------------------------


def _members(tag: str, sid: int | None = None, *, prefix: bool = False) -> dict[int, str]:
    """pid -> comm of what a run left running: processes with its tag in their environment,
    in its session, and their descendants. The environment alone is not enough: vLLM's
    setproctitle (``VLLM::EngineCore``, ``VLLM::Worker``) overwrites it."""
    want = f"{TAG_ENV}={tag}".encode()
    procs = process_table(TAG_ENV)
    found = {pid for pid, (_pp, psid, _c, tags) in procs.items()
             if (sid is not None and psid == sid)
             or any(t.startswith(want) if prefix else t == want for t in tags)}
    while True:
        more = {pid for pid, (pp, *_rest) in procs.items() if pp in found} - found
        if not more:
            break
        found |= more
    found.discard(os.getpid())
    return {pid: procs[pid][2] for pid in sorted(found)}


def _describe(pid: int, comm: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        cmd = "(gone)"
    return f"{pid} {comm}: {cmd}"


def _kill(members: dict[int, str]) -> None:
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


_SESSIONS: list[int] = []  # of every command started here, for the final clean-up


def _kill_all() -> None:
    _kill(_members(_RUN_ID, prefix=True))
    for sid in _SESSIONS:
        _kill(_members(f"{_RUN_ID}-none", sid))


@dataclass
class Run:
    """A command in a session of its own (as a terminal gives it), output into ``log``."""

    tag: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen
    port: int | None = None
    answer: dict | None = None
    ready_s: float | None = None
    status: int | None = None
    gone_s: float | None = None
    left: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, vllm: Vllm, tag: str, argv: list[str], port: int | None = None) -> Run:
        log = vllm.root / f"{tag}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, env=vllm.env(tag), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        _SESSIONS.append(proc.pid)
        return cls(tag=f"{_RUN_ID}-{tag}", argv=argv, log=log, proc=proc, port=port)

    def members(self) -> dict[int, str]:
        return _members(self.tag, self.proc.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, n: int = 4000) -> str:
        return f"\n--- {' '.join(self.argv)}\n{self.output()[-n:]}"

    def wait_ready(self, model: str) -> None:
        body = json.dumps({"model": model, "messages": PROMPT, "temperature": 0,
                           "max_tokens": 8}).encode()
        url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        deadline = self.started + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}" + self.tail()
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    self.answer = json.loads(response.read())
                    self.ready_s = time.monotonic() - self.started
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise AssertionError(f"no completion in {READY_TIMEOUT} s" + self.tail())

    def interrupt(self) -> None:
        """Ctrl-C as a terminal sends it: SIGINT to the foreground process group; then wait
        for the command and for every process started under its tag (spawned engine cores
        and workers, headstart's detached helper) to be gone."""
        t0 = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.status = self.proc.wait(GONE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.status = None
        while time.monotonic() - t0 < GONE_TIMEOUT and self.members():
            time.sleep(0.2)
        self.gone_s = time.monotonic() - t0
        left = self.members()
        self.left = [_describe(pid, comm) for pid, comm in left.items()]
        _kill(left)
        print(f"{self.tag}: ready in {self.ready_s} s; Ctrl-C: exit status {self.status}, "
              f"{len(left)} left after {self.gone_s:.1f} s")
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _run_pair(vllm: Vllm, name: str, args: list[str], *, verbose: bool = False
              ) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """``vllm ARGS`` and ``headstart run -- vllm ARGS``, side by side."""
    head = ["headstart", "run", *(["-v"] if verbose else []), "--", "vllm", *args]
    procs = [subprocess.Popen(argv, env=vllm.env(f"{name}-{i}"), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
             for i, argv in enumerate((["vllm", *args], head))]
    _SESSIONS.extend(proc.pid for proc in procs)
    done = []
    for argv, proc in zip((["vllm", *args], head), procs, strict=True):
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done[0], done[1]


# --- the CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["--help"]], ids=["version", "help"])
def test_cli_same_output_and_status(vllm: Vllm, args: list[str]) -> None:
    base, head = _run_pair(vllm, args[0].strip("-"), args)
    assert base.returncode == 0, base.stderr[-3000:]
    assert head.returncode == base.returncode, head.stderr[-3000:]
    assert base.stdout.strip()
    assert head.stdout == base.stdout
    assert "headstart" not in head.stderr  # without -v headstart says nothing


@pytest.mark.parametrize("case", ["unknown-flag", "missing-model"])
def test_bad_argument_same_status(vllm: Vllm, case: str) -> None:
    if case == "unknown-flag":
        args = ["serve", str(vllm.snapshot), *SERVE_FLAGS, "--no-such-flag"]
    else:
        args = ["serve", str(vllm.root / "no-such-model"), *SERVE_FLAGS]
    base, head = _run_pair(vllm, case, args, verbose=True)
    assert base.returncode != 0, base.stderr[-3000:]
    assert head.returncode == base.returncode, base.stderr[-2000:] + head.stderr[-3000:]
    # the target's own last word (argparse's usage error, the traceback's last line)
    last = base.stderr.strip().splitlines()[-1]
    assert last in head.stderr.splitlines(), head.stderr[-3000:]
    if case == "unknown-flag":
        assert "unrecognized arguments: --no-such-flag" in last


# --- serve: the same answer; Ctrl-C after the first answer ---------------------------------


@pytest.fixture(scope="module")
def served(vllm: Vllm):
    """A baseline server, then one under ``headstart run -v`` (one after the other: side by
    side on 2 cores each took about 115 s instead of 45 s), each answering one greedy
    completion, then interrupted (headstart's once it said what it recorded: a Ctrl-C
    within a poll of the listen() leaves the recording nothing to see it by)."""
    runs = {}
    for name, head in (("baseline", []), ("headstart", ["headstart", "run", "-v", "--"])):
        port = free_port()
        run = runs[name] = Run.start(vllm, f"serve-{name}",
                                     [*head, "vllm", *vllm.serve_args(port)], port)
        try:
            run.wait_ready(REPO_ID)
            if head:
                _wait_for(lambda r=run: "recorded startup profile" in r.output()
                          or "no profile recorded" in r.output(), 120, run)
        finally:
            run.interrupt()
    return runs


def test_serve_same_greedy_answer(served: dict[str, Run]) -> None:
    base, head = (served[k].answer for k in ("baseline", "headstart"))
    assert base is not None and head is not None
    choice = base["choices"][0]
    assert choice["message"]["content"], base
    # the chat template was applied: the prompt is longer than its six words
    assert base["usage"]["prompt_tokens"] > 10, base
    assert choice["finish_reason"] == "length" and base["usage"]["completion_tokens"] == 8
    assert head["choices"][0]["message"] == choice["message"]
    assert head["usage"] == base["usage"]


def test_ctrl_c_after_ready_leaves_nothing(served: dict[str, Run]) -> None:
    for run in served.values():
        assert not run.left, f"left after Ctrl-C: {run.left}" + run.tail()
        assert run.status is not None, run.tail()
    assert served["headstart"].status == served["baseline"].status


def _prefetch_stats(out: str) -> str | None:
    found = re.search(rf"prefetch of {re.escape(REPO_ID)}: PrefetchStats\((.*)\)", out)
    return found[1] if found else None


def _snapshot_files(vllm: Vllm) -> tuple[int, int]:
    files = [p for p in vllm.snapshot.iterdir() if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_resolves_repo_id_at_revision_offline(vllm: Vllm, served: dict[str, Run]) -> None:
    """headstart found the snapshot vLLM serves (a repo id in the HF_HOME cache at
    --revision: the cache has no `main`; offline), read all its files and recorded a profile
    of the whole process tree with its weights, which only the spawned worker reads."""
    out = served["headstart"].output()
    plan = next((ln for ln in out.splitlines() if ln.startswith("headstart: adapter=")), "")
    assert f"adapter=vllm launch=console_script model={REPO_ID} prefetch=on" in plan, out[:3000]
    count, total = _snapshot_files(vllm)
    stats = _prefetch_stats(out)
    assert stats is not None, out[-4000:]
    assert f"bytes_planned={total}," in stats and f"files={count}," in stats, (stats, total)
    assert "bytes_failed=0," in stats

    profiles = list((vllm.root / "headstart-cache" / "profiles").glob("vllm-*[0-9a-f].json"))
    assert len(profiles) == 1, (profiles, out[-3000:])
    doc = json.loads(profiles[0].read_text())
    assert doc["snapshot"]["commit"] == vllm.commit, doc["snapshot"]
    assert Path(doc["snapshot"]["root"]).resolve() == vllm.snapshot.resolve(), doc["snapshot"]
    weights = [f["path"] for f in doc["files"] if f["role"] == "weights"]
    assert weights, "the worker's weight reads are not in the profile"
    repo = vllm.snapshot.parents[1].resolve()
    assert all(Path(w).resolve().is_relative_to(repo) for w in weights), weights


# --- Ctrl-C during startup; --download-dir; API-only and engine-only commands -------------


def _wait_for(pred, timeout: float, run: Run) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert run.proc.poll() is None, f"exited {run.proc.returncode}" + run.tail()
        assert time.monotonic() < deadline, f"not seen in {timeout} s" + run.tail()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def interrupted(vllm: Vllm, served: dict[str, Run]) -> Run:
    """``headstart run -v --no-profile -- vllm serve ... --download-dir EMPTY``, interrupted
    once vLLM's spawned worker exists (API server -> EngineCore -> Worker). ``--no-profile``:
    the helper reads the model's files and says so, where it found them."""
    port = free_port()
    run = Run.start(vllm, "ctrl-c-startup",
                    ["headstart", "run", "-v", "--no-profile", "--", "vllm",
                     *vllm.serve_args(port, "--download-dir", str(vllm.download_dir))], port)
    try:
        _wait_for(lambda: "VLLM::Worker" in run.members().values(), READY_TIMEOUT, run)
    finally:
        run.interrupt()
    return run


def test_ctrl_c_while_the_worker_starts_leaves_nothing(interrupted: Run) -> None:
    assert not interrupted.left, f"left after Ctrl-C: {interrupted.left}" + interrupted.tail()
    assert interrupted.status is not None, interrupted.tail()


def test_offline_download_dir_resolves_where_vllm_reads(vllm: Vllm, interrupted: Run) -> None:
    _, total = _snapshot_files(vllm)
    out = interrupted.output()
    stats = _prefetch_stats(out)
    assert stats is not None and f"bytes_planned={total}," in stats, interrupted.tail()


API_ONLY = {  # id: (flags, what `headstart run -v` plans)
    "dp-local-0": (["--data-parallel-size-local", "0"],
                   "prefetch=off (this command loads no weights)"),
    "headless": (["--headless"], "prefetch=on"),  # engine cores only: they load the weights
    # API servers in processes of their own; the engine core in this tree loads the weights
    "api-server-count-2": (["--api-server-count", "2"], "prefetch=on"),
}


_HELPER_SAID = ("headstart: profile replay: ", "headstart: prefetch of ",
                "headstart: recording a startup profile", " not used: ")


@pytest.fixture(scope="module")
def api_only(vllm: Vllm, served: dict[str, Run]) -> dict[str, Run]:
    """``headstart run -v -- vllm serve ... FLAGS`` for vLLM's data-parallel flags, each
    interrupted while vLLM imports: 1 s after the plan line, once the helper has said what
    it read (it replays the profile ``served`` recorded), 10 s at most.

    (A SIGINT that arrived while headstart forked its helper or its zygote, right after the
    plan line, used to be lost: the KeyboardInterrupt was raised in logging's after-fork
    hook, which CPython drops; headstart now holds those signals across its forks.)"""
    runs = {}
    for name, (flags, _plan) in API_ONLY.items():
        run = runs[name] = Run.start(vllm, f"flags-{name}",
                                     ["headstart", "run", "-v", "--", "vllm",
                                      *vllm.serve_args(free_port(), *flags)])
        try:
            _wait_for(lambda run=run: "headstart: adapter=" in run.output(), 60, run)
            t0 = time.monotonic()
            _wait_for(lambda run=run, t0=t0: time.monotonic() - t0 > 1.0 and (
                time.monotonic() - t0 > 10.0 or any(s in run.output() for s in _HELPER_SAID)),
                60, run)
        finally:
            run.interrupt()
    return runs


# vLLM 0.32's API-only server (--data-parallel-size-local 0) ignores SIGINT from its
# argument parsing on, with or without headstart: plain `vllm serve M
# --data-parallel-size-local 0`, interrupted at its "non-default args" line or later, was
# still waiting for its engines 30 s after the SIGINT in 5 of 5 tries. Its Ctrl-C is
# checked only when the interrupt came before that line.
IGNORES_CTRL_C_AFTER = {"dp-local-0": "non-default args"}


def _interrupt_discarded(output: str) -> bool:
    """CPython threw the KeyboardInterrupt away: raised inside the weakref callback of an
    importlib module lock, it is printed as "Exception ignored in: ..." and the main thread
    imports on, with or without headstart (one CI dry run of the headless variant)."""
    lines = output.splitlines()
    return any(ln.startswith("Exception ignored in: <function _get_module_lock")
               and any(x.startswith("KeyboardInterrupt") for x in lines[i + 1:i + 6])
               for i, ln in enumerate(lines))


@pytest.mark.parametrize("name", list(API_ONLY))
def test_api_only_flags_plan_and_ctrl_c(api_only: dict[str, Run], name: str) -> None:
    """What ``headstart run -v`` plans (its first line, printed before vLLM starts); Ctrl-C
    while vLLM imports leaves nothing either (where vLLM alone honours it then)."""
    run = api_only[name]
    plan = next(ln for ln in run.output().splitlines() if ln.startswith("headstart: adapter="))
    assert f"model={REPO_ID} {API_ONLY[name][1]} " in plan, plan
    vllm_ignores = IGNORES_CTRL_C_AFTER.get(name)
    if vllm_ignores is not None and vllm_ignores in run.output():
        return  # vLLM's own behaviour there, the same without headstart
    if _interrupt_discarded(run.output()):
        return  # CPython's: the interrupt never reached vLLM
    assert not run.left, f"left after Ctrl-C: {run.left}" + run.tail()


def test_api_only_replays_no_weights(vllm: Vllm, api_only: dict[str, Run]) -> None:
    out = api_only["dp-local-0"].output()
    if "headstart: recording a startup profile" in out or " not used: " in out:
        pytest.skip("the profile was stale (a recorded file changed): nothing to check")
    planned = re.search(r"headstart: profile replay: PrefetchStats\(bytes_planned=(\d+),", out)
    if planned is None:
        return  # nothing replayed at all
    profile = next((vllm.root / "headstart-cache" / "profiles").glob("vllm-*[0-9a-f].json"))
    stats = json.loads(profile.read_text())["stats"]
    assert int(planned[1]) <= stats["bytes"] - stats["weight_bytes"], (planned[1], stats)
