"""spawn's ``Popen`` with one change: the child comes from the zygote when it can.

Everything else is spawn's own: preparation data, pickling, the parent-death pipe, the
sentinel, ``kill``/``terminate`` on the real pid. Only ``poll`` differs for a zygote child,
which is the zygote's child: its exit status arrives on a status socket instead of from
``waitpid`` (the zygote keeps it a zombie until this side lets go, so its pid stays taken).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from headstart import _cpython
from headstart.trace import tracer

__all__ = ["make_popen"]


def make_popen(base: type, get_zygote: Callable[[], Any]) -> type:
    """A subclass of spawn's ``Popen`` (``base``) that asks ``get_zygote()`` first."""

    def launch(popen: Any, process_obj: Any, spawn_launch: Callable[[Any], None]) -> None:
        popen._zygote_status = None
        zygote = get_zygote()
        t0 = time.perf_counter()
        why = "no zygote in this process" if zygote is None else _refusal(zygote)
        if why is None:
            fds = list(_cpython.popen_fds(popen))
            try:
                _launch_from(popen, process_obj, zygote)
                zygote.forks += 1
                _note(zygote, process_obj, popen.pid, None, t0)
                return
            except Exception as exc:
                _cpython.set_popen_fds(popen, fds)
                popen._zygote_status = None
                why = f"{type(exc).__name__}: {exc}"
        if zygote is not None:
            zygote.fallbacks.append(why)
        spawn_launch(process_obj)
        if zygote is not None:
            _note(zygote, process_obj, popen.pid, why, t0)

    popen = _cpython.spawn_popen_subclass(
        base, launch, lambda p: getattr(p, "_zygote_status", None))
    popen._headstart_zygote = True  # type: ignore[attr-defined]
    return popen


def _refusal(zygote: Any) -> str | None:
    try:
        return zygote.refusal()
    except Exception as exc:
        return f"cannot ask the zygote: {type(exc).__name__}: {exc}"


def _note(zygote: Any, process_obj: Any, pid: int | None, why: str | None, t0: float) -> None:
    """Trace and ``-v`` line of one spawn; never raises (the child is started already)."""
    try:
        took = (time.perf_counter() - t0) * 1000
        name = getattr(process_obj, "name", "?")
        tracer.instant("zygote.spawn", cat="zygote", child=name, pid=pid,
                       via="spawn" if why else "zygote", reason=why or "",
                       took_ms=round(took, 1))
        if zygote.verbose:
            from headstart.procs.zygote import _say

            _say(f"spawned {name} (pid {pid}) for real: {why}" if why else
                 f"forked {name} (pid {pid}) in {took:.0f} ms")
        if zygote.trace and zygote.owner != zygote.trace_writer:
            tracer.write(zygote.trace)  # a zygote's child: nobody writes its events at exit
    except Exception:
        pass


def _launch_from(popen: Any, process_obj: Any, zygote: Any) -> None:
    """spawn's ``_launch``, with the zygote forking instead of ``spawnv_passfds``."""
    tracker_fd, payload = _cpython.spawn_payload(popen, process_obj)
    parent_r, child_w = os.pipe()
    child_r, parent_w = os.pipe()
    try:
        passed = list(dict.fromkeys([*_cpython.popen_fds(popen), child_r, child_w]))
        stdio = [fd for fd in (0, 1, 2) if _is_open(fd)]
        if len(passed) + len(stdio) > 60:
            raise OSError(f"{len(passed)} descriptors to pass")
        pid, status = zygote.request(_request(process_obj, passed, stdio, tracker_fd, child_r),
                                     stdio + passed)
    except BaseException:
        for fd in (parent_r, child_w, child_r, parent_w):
            os.close(fd)
        raise
    os.close(child_r)
    os.close(child_w)
    popen._zygote_status = _Status(status, pid)
    _cpython.adopt_child(popen, pid, parent_r, _close, (parent_r, parent_w, popen._zygote_status))
    with open(parent_w, "wb", closefd=False) as f:
        f.write(payload)


def _close(parent_r: int, parent_w: int, status: _Status) -> None:
    for fd in (parent_r, parent_w):
        with contextlib.suppress(OSError):
            os.close(fd)
    status.close()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _request(process_obj: Any, passed: list[int], stdio: list[int], tracker_fd: int,
             child_r: int) -> dict[str, Any]:
    return {"name": getattr(process_obj, "name", None), "env": dict(os.environ),
            "cwd": os.getcwd(), "umask": _umask(), "sigign": _ignored_signals(),
            "sigmask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
            "stdio": stdio, "fds": passed, "tracker_fd": tracker_fd, "pipe_handle": child_r}


def _status_field(name: str) -> str:
    from headstart.watch.procfs import status_field

    value = status_field("self", name)
    if value is None:
        raise OSError(f"no {name} in /proc/self/status")
    return value


def _umask() -> int:
    """Read, not set: ``os.umask`` would change it for every thread for a moment."""
    return int(_status_field("Umask"), 8)


def _ignored_signals() -> list[int]:
    mask = int(_status_field("SigIgn"), 16)
    return [sig for sig in range(1, 65) if mask & (1 << (sig - 1))]


class _Status:
    """The zygote's reports about one child: its exit code, once it has exited."""

    def __init__(self, sock: Any, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self._code: int | None = None

    def code(self, block: bool) -> int | None:
        if self._code is not None:
            return self._code
        from headstart.procs._zygote_server import receive

        try:
            self.sock.setblocking(block)
            message, _ = receive(self.sock)
        except BlockingIOError:
            return None
        except OSError:
            message = None
        if message is None:  # the zygote is gone: it can no longer tell
            return self._lost(block)
        self._code = int(message["exit"])
        return self._code

    def _lost(self, block: bool) -> int | None:
        from headstart.watch.procfs import running

        while running(self.pid):
            if not block:
                return None
            time.sleep(0.05)
        self._code = 255  # as multiprocessing's forkserver says when its server is gone
        return self._code

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
