"""One timed run of a target: launch, wait for readiness, tear down completely.

Guarantees, each checked by tests:

* The target runs in its own session and process group, so a Ctrl-C at the terminal
  reaches the bench, not the target, and the whole tree can be signalled at once.
* Whatever happens (ready, crash, timeout, Ctrl-C), the group is sent SIGTERM, then
  SIGKILL after ``grace`` seconds, and the leader is reaped before :func:`run_once` returns.
* The target's stdout and stderr go to files in the run folder (never pipes: a chatty
  target could fill a pipe and stall, which would be measured as slow startup).
* When the probe knows the port, the port is free before the target starts and again
  before :func:`run_once` returns, so one run cannot answer another run's probe.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field

from headstart.bench.probes import Probe, wait_port_free
from headstart.watch import procfs

__all__ = ["RunResult", "group_members", "run_once", "terminate_group"]

log = logging.getLogger(__name__)

# outcome values
READY = "ready"
EXITED = "exited"  # exited before ready (or, with --until-exit, with a non-zero status)
TIMEOUT = "timeout"
PORT_IN_USE = "port-in-use"
LAUNCH_FAILED = "launch-failed"
INTERRUPTED = "interrupted"


@dataclass
class RunResult:
    """What one run did. ``seconds`` is launch -> ready, set only when ``ok``."""

    argv: list[str]
    run_dir: str
    ok: bool = False
    outcome: str = ""
    seconds: float | None = None
    reason: str | None = None
    exit_code: int | None = None
    ready_detail: str | None = None
    started_at: float | None = None  # wall clock, for the JSON
    stdout: str | None = None
    stderr: str | None = None
    response: str | None = None
    killed: list[int] = field(default_factory=list)  # pids that needed SIGKILL
    port_free_after: bool | None = None
    # filled in by the harness
    variant: str = ""
    mode: str = ""
    index: int = 0
    warmup: bool = False
    eviction: dict | None = None
    trace: str | None = None
    phases: list[dict] = field(default_factory=list)  # from the server's log lines
    coverage: dict | None = None  # a replayed start's coverage (headstart.profiles.coverage)

    def to_dict(self) -> dict:
        return asdict(self)


def group_members(leader: int) -> list[int]:
    """Live (non-zombie) processes in the process group or session that ``leader`` started.

    A target's children may call setpgid() (uvicorn reloaders, some launchers do) and
    leave the group; they stay in the session unless they call setsid() too.
    """
    pids = []
    for pid in procfs.pids():
        st = procfs.read_stat(pid)
        if st is None or st.state in ("Z", "X"):
            continue
        if leader in (st.pgrp, st.session):
            pids.append(pid)
    return pids


def _signal_all(leader: int, sig: int) -> list[int]:
    members = group_members(leader)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for pid in members:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return members


def terminate_group(proc: subprocess.Popen, grace: float = 10.0,
                    stop_signal: int = signal.SIGTERM) -> list[int]:
    """Signal the target's group and session (``stop_signal``, SIGTERM by default), SIGKILL
    what is left after ``grace`` seconds, reap.

    Returns the pids that had to be killed with SIGKILL. Never raises for processes that
    are already gone.
    """
    leader = proc.pid
    _signal_all(leader, stop_signal)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it stops counting as a member
        if proc.returncode is not None and not group_members(leader):
            return []
        time.sleep(0.02)
    killed = _signal_all(leader, signal.SIGKILL)
    proc.wait()
    # SIGKILL cannot be ignored; give the kernel a moment to finish the exits.
    end = time.monotonic() + 5.0
    while group_members(leader) and time.monotonic() < end:
        time.sleep(0.02)
    left = group_members(leader)
    if left:
        log.warning("processes %s of run %d survived SIGKILL", left, leader)
    return killed


@contextmanager
def _deferred_signals() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM during cleanup, then raise KeyboardInterrupt if one came.

    A second Ctrl-C in the middle of a teardown would otherwise leave the target running.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    pending: list[int] = []

    def remember(signum, _frame):
        pending.append(signum)

    old = {s: signal.signal(s, remember) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if pending:
        raise KeyboardInterrupt


def _save_response(run_dir: str, body: bytes) -> str:
    try:
        json.loads(body)
        name = "response.json"
    except ValueError:
        name = "response.body"
    path = os.path.join(run_dir, name)
    with open(path, "wb") as f:
        f.write(body)
    return path


def _wait_exit(proc: subprocess.Popen, result: RunResult, t0: float, timeout: float) -> None:
    """``--until-exit``: ready when the target exits with status 0 within ``timeout``."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = None
    if rc is None:
        result.outcome, result.reason = TIMEOUT, f"did not exit within {timeout:g} s"
        return
    result.exit_code = rc
    if rc == 0:
        result.ok, result.outcome = True, READY
        result.seconds = time.monotonic() - t0
        result.ready_detail = "exit status 0"
    else:
        result.outcome, result.reason = EXITED, f"exited with status {rc}"


def _wait_ready(proc: subprocess.Popen, probe: Probe, result: RunResult, t0: float,
                timeout: float, poll_interval: float) -> None:
    """Poll ``probe`` until it says ready, the target exits, or ``timeout`` passes."""
    deadline = t0 + timeout
    while True:
        rc = proc.poll()
        hit = probe.check(deadline)
        now = time.monotonic()
        if hit is not None:
            result.ok, result.outcome, result.seconds = True, READY, now - t0
            result.ready_detail = hit.detail
            if hit.body is not None:
                result.response = _save_response(result.run_dir, hit.body)
            return
        if rc is not None:
            result.exit_code = rc
            result.outcome = EXITED
            result.reason = f"exited with status {rc} before it was ready"
            return
        if now >= deadline:
            result.outcome, result.reason = TIMEOUT, f"not ready within {timeout:g} s"
            return
        time.sleep(min(poll_interval, max(0.0, deadline - now)))


def run_once(
    argv: Sequence[str],
    probe: Probe,
    run_dir: str,
    *,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    poll_interval: float = 0.05,
    grace: float = 10.0,
    port_wait: float = 30.0,
    preexec_fn: Callable[[], None] | None = None,
    stop_signal: int = signal.SIGTERM,
    on_start: Callable[[subprocess.Popen, float], None] | None = None,
) -> RunResult:
    """Launch ``argv``, time it until ``probe`` says ready, then tear the whole tree down.

    A run that crashes, times out or cannot start is returned with ``ok=False`` and a
    ``reason``; only KeyboardInterrupt propagates, after the teardown. ``on_start(proc,
    t0)`` runs right after the launch (``t0``: the monotonic launch time), before any
    readiness check: watchers attach there.
    """
    os.makedirs(run_dir, exist_ok=True)
    result = RunResult(argv=list(argv), run_dir=run_dir)
    result.stdout = os.path.join(run_dir, "stdout.log")
    result.stderr = os.path.join(run_dir, "stderr.log")
    address = probe.port()
    if address and not wait_port_free(*address, timeout=port_wait):
        result.outcome = PORT_IN_USE
        result.reason = (f"port {address[1]} on {address[0]} was already in use before the run "
                         f"(waited {port_wait:g} s); not started")
        open(result.stdout, "wb").close()
        open(result.stderr, "wb").close()
        return result

    out = open(result.stdout, "wb")  # noqa: SIM115 - closed in finally
    err = open(result.stderr, "wb")  # noqa: SIM115
    proc: subprocess.Popen | None = None
    try:
        result.started_at = time.time()
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                cwd=cwd, start_new_session=True, preexec_fn=preexec_fn,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            result.outcome = LAUNCH_FAILED
            result.reason = f"could not start {argv[0]!r}: {exc}"
            return result
        if on_start is not None:
            on_start(proc, t0)
        probe.start(result.stdout, result.stderr)
        if probe.waits_for_exit:
            _wait_exit(proc, result, t0, timeout)
        else:
            _wait_ready(proc, probe, result, t0, timeout, poll_interval)
        return result
    except KeyboardInterrupt as exc:
        result.ok, result.seconds = False, None
        result.outcome, result.reason = INTERRUPTED, "interrupted (Ctrl-C or SIGTERM)"
        exc.run_result = result  # type: ignore[attr-defined]  # the harness reports it
        raise
    finally:
        with _deferred_signals():
            if proc is not None:
                result.killed = terminate_group(proc, grace, stop_signal)
                if result.exit_code is None and proc.returncode is not None and not result.ok:
                    result.exit_code = proc.returncode
            out.close()
            err.close()
            if address:
                result.port_free_after = wait_port_free(*address, timeout=port_wait)
                if not result.port_free_after:
                    log.warning("port %d still in use %g s after run %s", address[1],
                                port_wait, run_dir)
