"""Runs inside the forkserver process only, never in the target; stdlib only.

``multiprocessing``'s forkserver imports its preload list with a bare ``__import__`` and
survives only ``ImportError``: any other exception (an ``OSError`` from a broken ``.so``, a
``RuntimeError`` at import time, ``KeyboardInterrupt`` from a Ctrl-C to the process group)
kills the server, and then every later worker start of the target fails. It also never
applies the ``sys_path`` it is handed (CPython 3.10-3.13), so it could not even import
headstart where only the target's runtime ``sys.path`` finds it.

So :func:`headstart.procs.forkserver.prewarm_forkserver` makes the forkserver *run this file*
as its ``__main__`` preload (by path: it needs no ``sys.path``), then import one encoded name,
``headstart-preload|<hex of a JSON plan>``, which the finder installed below resolves. That
"import" applies the target's ``sys.path``, does the real preloads one by one with every
failure swallowed and recorded, and then:

* reports to the prewarming process (a datagram to the abstract unix socket in the plan):
  which modules loaded, how long each took, what failed, whether CUDA got initialised here;
* until then runs a watchdog that exits the forkserver as soon as its parent (the target) is
  gone. Without it a target that exits at once (``--help``) would leave a forkserver holding
  the target's stdout/stderr pipes until a multi-second preload ends, and a caller that reads
  the pipe to EOF (``$(vllm --help)``) would wait for it.

The watchdog thread is joined before the forkserver forks its first child, so children never
inherit a second thread. Children re-import the target's real ``__main__`` as usual.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import json
import os
import signal
import socket
import sys
import threading
import time
from types import ModuleType

__all__ = ["PREFIX"]

# Must match headstart.procs.forkserver._GUARD_PREFIX (a test pins it). The target never
# runs or imports this file: doing so installs the finder.
PREFIX = "headstart-preload|"


def _decode(name: str) -> dict[str, object]:
    return json.loads(bytes.fromhex(name[len(PREFIX):]).decode())


def _watch_parent(stop: threading.Event) -> None:
    parent = os.getppid()
    while not stop.wait(0.05):
        if os.getppid() != parent:  # reparented: the target has exited
            os._exit(0)


def _cuda_initialised() -> bool:
    mod = sys.modules.get("torch.cuda")
    fn = getattr(mod, "is_initialized", None)
    try:
        return bool(fn()) if callable(fn) else False
    except Exception:
        return False


def _run(name: str) -> None:
    plan = _decode(name)
    address = str(plan.get("address") or "")
    modules = [str(m) for m in plan.get("modules", [])]  # type: ignore[attr-defined]
    if plan.get("sys_path"):
        sys.path[:] = plan["sys_path"]  # type: ignore[index]
    # The stdlib ignores SIGINT only after the preload; a Ctrl-C that reaches the whole
    # process group during a long preload must not kill the server either.
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    watchdog = threading.Thread(target=_watch_parent, args=(stop,), daemon=True,
                                name="headstart-forkserver-watchdog")
    watchdog.start()
    report: dict[str, object] = {"pid": os.getpid(), "modules": []}
    start = time.perf_counter()
    try:
        for mod in modules:
            t0 = time.perf_counter()
            error = ""
            try:
                importlib.import_module(mod)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            report["modules"].append([mod, time.perf_counter() - t0, error])  # type: ignore[union-attr]
        report["seconds"] = time.perf_counter() - start
        report["cuda_initialised"] = _cuda_initialised()
    finally:
        stop.set()
        watchdog.join()
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_Finder)
    if address:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(json.dumps(report).encode(), "\0" + address)
        except OSError:
            pass  # the prewarming thread is gone or timed out; nothing to tell


class _Loader:
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        _run(module.__name__)


class _Finder:
    @classmethod
    def find_spec(cls, name: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith(PREFIX):
            return None
        return importlib.machinery.ModuleSpec(name, _Loader())


# Running this file is what arms the guard; only the forkserver does (as its __main__).
if _Finder not in sys.meta_path:
    sys.meta_path.insert(0, _Finder)
