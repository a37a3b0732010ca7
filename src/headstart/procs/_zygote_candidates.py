"""A child made ready before it is asked for, its own zygote already importing.

Some servers set variables in a spawned child before it spawns its own (vLLM's EngineCore
sets ``OMP_NUM_THREADS`` and ``GOMP_CPU_AFFINITY`` for its worker), and native libraries read
them when they load: a zygote forked from one that imported without them cannot serve those
grandchildren, so they were spawned for real. The zygote then keeps the values it saw
(:func:`learn`, a small JSON file in headstart's cache). At the next start, as soon as its
imports are done, the zygote forks a *candidate*: a pristine child that starts its own zygote
at once, a fresh interpreter importing under the learned values, and waits. The first spawn
request becomes that candidate; by the time it spawns its children its zygote is warm, and
they are still its descendants, as with spawn. A value learned wrong only means a real spawn
again (and a corrected lesson).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from typing import Any

from headstart import _cpython
from headstart.procs import _zygote_server as server

__all__ = ["Candidate", "exec_main", "learn", "learned", "start_candidate"]


def learned(path: str | None) -> dict[str, dict[str, str | None]]:
    """What :func:`learn` kept at ``path``; {} when nothing (or nothing readable) is there."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def learn(path: str, level: int, changed: dict[str, str | None]) -> None:
    """Keep that children of level-``level`` zygotes were spawned with ``changed``."""
    data = learned(path)
    merged = dict(data.get(str(level), {}))
    merged.update(changed)
    if data.get(str(level)) == merged:
        return
    data[str(level)] = merged
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, sort_keys=True)
    os.replace(tmp, path)


class Candidate:
    """A forked child that imports, reports, then waits for its spawn request on ``sock``."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    def ready(self) -> dict[str, Any]:
        """Its ready report (the zygote passes it on as its own), once its imports are done."""
        try:
            message, _ = server.receive(self.sock)
        except OSError as exc:
            message = {"ok": False, "reason": f"candidate failed: {exc}"}
        return message or {"ok": False, "reason": "candidate exited"}


def start_candidate(state: server.ZygoteState) -> Candidate | None:
    """Fork a candidate, before any import, when a lesson says what its children will be
    spawned with; None when there is no lesson for them."""
    env = state.learned.get(str(state.level + 1))
    if not env or state.level + 1 >= state.max_level:
        return None
    return Candidate(*server.fork_connected(
        lambda sock, parent: _candidate_main(sock, state, env, parent)))


def _candidate_main(sock: socket.socket, state: server.ZygoteState,
                    env: dict[str, str | None], parent: int) -> None:
    try:
        server._die_with(parent)
        server._close_all_but({0, 1, 2, sock.fileno()})
        sub = _exec_zygote(state, env)  # first: its imports run beside ours
        ready = server._import_all(state.preload, state)
        server.send(sock, ready)
        if not ready.get("ok"):
            os._exit(0)
        request, fds = server.receive(sock, max_fds=64)
        sock.close()
        if request is None:
            os._exit(0)
        _drain_pending()  # what reached the candidate before it was asked for is not its
    except BaseException:
        os._exit(1)
    server.run_child(request, fds, state, sub=sub)  # never returns


def _drain_pending() -> None:
    import signal

    pending = signal.sigpending()
    while pending and signal.sigtimedwait(pending, 0) is not None:
        pending = signal.sigpending()


def _exec_zygote(state: server.ZygoteState, env: dict[str, str | None]) -> socket.socket | None:
    """A fresh interpreter, child of this process, importing under ``env``."""
    import subprocess

    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child_env = dict(os.environ)  # called before this process imported anything
    for key, value in env.items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    config = {"level": state.level + 1, "max_level": state.max_level, "trace": state.trace,
              "verbose": state.verbose, "wait": state.wait, "preload": state.preload,
              "learn_path": state.learn_path, "path0": sys.path[0] if sys.path else None,
              "parent": os.getpid()}
    code = "from headstart.procs._zygote_candidates import exec_main; exec_main()"
    try:
        subprocess.Popen(
            [sys.executable, *_cpython.interpreter_flags(), "-c", code,
             str(theirs.fileno()), json.dumps(config)],
            pass_fds=[theirs.fileno()], env=child_env, stdin=subprocess.DEVNULL)
    except OSError:
        mine.close()
        return None
    finally:
        theirs.close()
    return mine


def exec_main() -> None:
    """Entry of a zygote started as a fresh interpreter. Never returns."""
    with contextlib.suppress(BaseException):
        fd, config = int(sys.argv[1]), json.loads(sys.argv[2])
        del sys.argv[1:]
        if config["path0"] is not None:
            sys.path[0:1] = [config["path0"]]
        state = server.ZygoteState(config["level"], config["max_level"], config["trace"],
                                   verbose=config["verbose"], wait=config["wait"],
                                   preload=config["preload"],
                                   learn_path=config["learn_path"])
        server.zygote_main(socket.socket(fileno=fd), state, config["preload"],
                           config["parent"])
    os._exit(1)


def hand_over(candidate: Candidate, request: dict[str, Any], fds: list[int]) -> bool:
    """Give ``request`` to ``candidate``; False when it is gone (fork one then)."""
    try:
        server.send(candidate.sock, request, fds)
        return True
    except OSError:
        return False
    finally:
        candidate.sock.close()
