"""Spawned children that fork from a warm zygote instead of starting a fresh interpreter.

``start_zygote`` forks the target at its entry, before any thread exists; the fork (the
zygote) imports the heavy modules while the target starts, beside it on another core. From
then on every ``multiprocessing`` child the target starts with the ``spawn`` method is
forked from the zygote, already past those imports, and then made into what ``spawn`` would
have started:

* the spawning process's environment, working directory, umask, ``sys.path``, ``sys.argv``
  and main module as of the moment of the spawn (spawn's own preparation data does the last
  three); exactly its stdio and the descriptors spawn passes, nothing else;
* signal dispositions as exec leaves them, then a fresh interpreter's (SIGINT raising
  ``KeyboardInterrupt``, SIGPIPE ignored), and the spawning thread's signal mask;
* fresh random state (``random``, numpy's global generator, torch's default generator);
* what the imports printed, printed again by the child, as a fresh import would.

The parent sees spawn's own ``Popen``: the real pid (``kill``, ``terminate`` and SIGKILL
reach the child itself), spawn's sentinel and parent-death pipe, the exit code or
``-signal``. Each child forks its own zygote first while it is still a pristine copy, so
that what it spawns is its descendant, as with spawn (``HEADSTART_ZYGOTE_LEVELS``).

A child is spawned for real, and ``-v`` says why, when: the zygote is not ready in time,
refused (CUDA initialised by an import, a thread started by one) or failed; spawn's
executable is not this interpreter; a variable the imports read (through ``os.environ``, or
one of :data:`IMPORT_TIME_PREFIXES`, read by libraries and the loader) has another value now
than the zygote had (``LD_PRELOAD`` counts as equal when its libraries are already loaded
in the zygote); the spawning process's ``sys.path`` would import a preloaded package from
somewhere else. Differences that remain: the child's parent process is the zygote (a
descendant of the spawning process), its command line is the target's until it sets its
own title, and it shares the zygote's hash seed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any

from headstart.trace import tracer

__all__ = ["IMPORT_TIME_PREFIXES", "Zygote", "adopt_subzygote", "start_zygote"]

# Variables read by native libraries or the loader when they load, not through os.environ.
IMPORT_TIME_PREFIXES = ("LD_", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "BLIS_",
                        "MALLOC_", "GLIBC_TUNABLES", "PYTHON", "CUDA_", "HIP_", "ROCR_",
                        "NCCL_", "TORCH_CUDA_ARCH")
_MAX_FDS = 60

_zygote: Zygote | None = None  # this process's, set by start_zygote / adopt_subzygote


def _say(msg: str) -> None:
    try:
        sys.stderr.write(f"headstart: zygote: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


class Zygote:
    """This process's handle of its zygote. ``ready`` is the zygote's report once read."""

    def __init__(self, sock: Any, pid: int | None, *, verbose: int, wait: float,
                 level: int = 0, learn_path: str | None = None, trace: str | None = None,
                 trace_writer: int | None = None) -> None:
        self.sock = sock
        self.trace = trace
        self.trace_writer = trace_writer  # the process that writes the trace at its exit
        self.pid = pid
        self.owner = os.getpid()
        self.verbose = verbose
        self.wait_s = wait
        self.level = level  # of the zygote: 0 is the target's own
        self.learn_path = learn_path
        self.ready: dict[str, Any] | None = None
        self.refused = ""
        self.late = ""
        self.deadline = time.monotonic() + wait
        self.forks = 0
        self.fallbacks: list[str] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = ("ready" if self.ready and self.ready.get("ok") else
                 self.refused or "starting")
        return (f"Zygote(pid={self.pid}, {state}, forks={self.forks}, "
                f"real spawns={len(self.fallbacks)})")

    def refusal(self) -> str | None:
        """Why the next child cannot come from the zygote, or None when it can."""
        if os.getpid() != self.owner:
            return "this process is a fork of the zygote's owner"
        ready = self._await_ready()
        if ready is None:
            return self.refused or self.late
        from headstart import _cpython

        executable = _cpython.spawn_executable()
        if not _same_interpreter(executable, ready["executable"]):
            return f"spawn's executable is {executable}"
        changed = env_changes(ready)
        if changed:
            self._learn(changed)
            return "; ".join(f"{key} differs (zygote: {ready['env'].get(key)!r}, now: {new!r})"
                             for key, new in sorted(changed.items()))
        return _path_difference(ready)

    def _learn(self, changed: dict[str, str | None]) -> None:
        """Keep what this level's children are spawned with, for the next start (a level
        above 0 then starts its zygote under these values, see _zygote_candidates)."""
        if not self.learn_path or self.level < 1:
            return
        try:
            from headstart.procs._zygote_candidates import learn

            learn(self.learn_path, self.level, changed)
        except Exception:
            pass

    def _await_ready(self) -> dict[str, Any] | None:
        if self.ready is not None or self.refused:
            return self.ready
        with self._lock:
            if self.ready is None and not self.refused:
                self._read_ready()
        return self.ready

    def _read_ready(self) -> None:
        """Wait for the zygote's report until ``wait`` seconds after it started; a spawn
        after that only looks whether it has come meanwhile."""
        from headstart.procs._zygote_server import receive

        t0 = time.monotonic()
        late = ""
        message = None
        try:
            self.sock.settimeout(max(self.deadline - t0, 0.0))
            message, _ = receive(self.sock)
            self.sock.settimeout(None)
            if message is None:
                self.refused = "zygote exited"
            elif not message.get("ok"):
                self.refused = message.get("reason") or "zygote refused"
            else:
                self.ready = message
        except TimeoutError:
            late = f"not ready after {self.wait_s:g} s"
        except OSError as exc:
            self.refused = f"zygote unreachable: {exc}"
        waited = time.monotonic() - t0
        tracer.instant("zygote.ready", cat="zygote", ok=self.ready is not None,
                       reason=self.refused or late, waited_s=round(waited, 3),
                       modules=(message or {}).get("modules"))
        if self.verbose and not (late and self.late):
            _say(f"ready: {len(self.ready['modules'])} modules in "
                 f"{self.ready['elapsed']:.2f} s (waited {waited:.2f} s)" if self.ready
                 else f"off: {self.refused or late}")
        self.late = late

    def request(self, message: dict[str, Any], fds: list[int]) -> tuple[int, Any]:
        """Ask the zygote for a child; its pid and the status socket. Raises OSError."""
        import socket

        from headstart.procs._zygote_server import receive, send

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                send(self.sock, message, [theirs.fileno(), *fds])
            theirs.close()
            reply, _ = receive(mine)
        except BaseException:
            mine.close()
            theirs.close()
            raise
        if not reply or "pid" not in reply:
            mine.close()
            raise OSError((reply or {}).get("error") or "the zygote did not fork")
        return int(reply["pid"]), mine


def _same_interpreter(a: str, b: str) -> bool:
    """The same file in the same folder (``python`` and ``python3.11`` of one venv); a venv's
    link and the interpreter it points to are not the same (another ``sys.prefix``)."""
    a, b = os.path.abspath(a), os.path.abspath(b)
    return a == b or (os.path.dirname(a) == os.path.dirname(b)
                      and os.path.realpath(a) == os.path.realpath(b))


def env_changes(ready: dict[str, Any]) -> dict[str, str | None]:
    """Variables the child would see with another value than the zygote imported under:
    name -> value now (None: unset now). A variable the imports set themselves counts as
    equal when it still has the value they gave it (the spawning process imported the same
    modules); the loader's (``LD_*``) are compared with what the zygote started with."""
    then: dict[str, str | None] = ready["env"]
    after: dict[str, str | None] = ready.get("env_after", {})
    now = os.environ
    keys = set(then) | {k for k in now if k.startswith(IMPORT_TIME_PREFIXES)}
    found: dict[str, str | None] = {}
    for key in keys:
        old, new = then.get(key), now.get(key)
        if old == new:
            continue
        if new == after.get(key, old) != old and not key.startswith("LD_"):
            continue  # the imports set it themselves (setdefault): a fresh child's would too
        if key == "LD_PRELOAD" and _already_loaded(new, old, ready.get("libraries", ())):
            continue
        if key == "LD_LIBRARY_PATH" and _no_other_libraries(new, old, ready.get("libraries", ())):
            continue
        found[key] = new
    return found


def _already_loaded(new: str | None, old: str | None, libraries: Any) -> bool:
    """True when every library ``new`` adds to ``old`` is already mapped in the zygote."""
    def names(value: str | None) -> set[str]:
        return {p for p in (value or "").replace(":", " ").split() if p}

    loaded = {os.path.realpath(p) for p in libraries}
    added = names(new) - names(old)
    return bool(added) and names(old) <= names(new) and all(
        os.path.realpath(p) in loaded for p in added)


def _no_other_libraries(new: str | None, old: str | None, libraries: Any) -> bool:
    """True when no folder ``new`` adds to the library path holds a library the zygote
    has loaded (by file name): the loader would resolve what it loaded the same way. A
    folder that does not exist adds nothing (cv2 adds ``cv2/../../lib64`` at import)."""
    def folders(value: str | None) -> list[str]:
        return [p for p in (value or "").split(":") if p]

    names = {os.path.basename(p) for p in libraries}
    for folder in set(folders(new)) - set(folders(old)):
        try:
            if names & set(os.listdir(folder)):
                return False
        except OSError:
            continue  # missing or unreadable: the loader finds nothing there either
    return True


def _path_difference(ready: dict[str, Any]) -> str | None:
    if list(sys.path) == ready["sys_path"]:
        return None
    from importlib.machinery import PathFinder

    for name, origin in ready["files"].items():
        if not origin:
            continue
        spec = PathFinder.find_spec(name, sys.path)
        if spec is None or spec.origin != origin:
            return f"sys.path would import {name} from {getattr(spec, 'origin', None)}"
    return None


# -- starting the zygote -------------------------------------------------------------------

def start_zygote(preload: list[str], *, path0: str | None = None, env_from: str | None = None,
                 trace: str | None = None, verbose: int = 0, wait: float = 120.0,
                 levels: int = 2, learn_path: str | None = None) -> Zygote | None:
    """Fork the zygote now (call before any thread exists); None when it cannot start.

    ``path0``: what the target's ``sys.path[0]`` will be. ``env_from``: ``module:function``
    returning the variables the target will set before it spawns (an adapter's fact), run
    in the zygote, which imports with them set. ``wait``: how long a spawn waits for the
    zygote's imports before it spawns for real. ``levels``: generations of children that
    fork from zygotes (1: the target's children only). ``learn_path``: a JSON file in
    headstart's cache that keeps, from one start to the next, the variables the children's
    own children were spawned with.
    """
    global _zygote
    import socket

    if threading.active_count() > 1:
        return None  # forking with threads alive is what the zygote exists to avoid
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    from headstart.procs.launch import fork_deferring_signals

    pid, _ = fork_deferring_signals()  # the zygote keeps them held: Ctrl-C is the target's
    if pid == 0:  # the zygote; never returns
        mine.close()
        _become_zygote(theirs, preload, path0, env_from, trace, levels, verbose, wait,
                       learn_path)
    theirs.close()
    _zygote = Zygote(mine, pid, verbose=verbose, wait=wait, trace=trace,
                     trace_writer=os.getpid())
    tracer.instant("zygote.start", cat="zygote", pid=pid, preload=list(preload))
    os.register_at_fork(after_in_child=_forget_in_fork)
    _patch_spawn_when_imported()
    return _zygote


def _become_zygote(sock: Any, preload: list[str], path0: str | None, env_from: str | None,
                   trace: str | None, levels: int, verbose: int, wait: float,
                   learn_path: str | None) -> None:
    try:
        from headstart.procs import _zygote_server as server

        parent = os.getppid()
        if path0 is not None:
            sys.path[0:1] = [path0]
        if env_from:
            os.environ.update(_predicted_env(env_from))
        from headstart.procs._zygote_candidates import learned

        state = server.ZygoteState(0, levels, trace, verbose=verbose, wait=wait,
                                   preload=preload, learn_path=learn_path,
                                   learned=learned(learn_path))
        server.zygote_main(sock, state, list(preload), parent)
    finally:
        os._exit(1)


def _predicted_env(env_from: str) -> dict[str, str]:
    import importlib

    module, _, func = env_from.partition(":")
    try:
        return dict(getattr(importlib.import_module(module), func)())
    except Exception:
        return {}


def adopt_subzygote(sock: Any, state: Any) -> None:
    """In a zygote's child: route this process's spawns to its own (already warm) zygote."""
    global _zygote
    _zygote = Zygote(sock, None, verbose=state.verbose, wait=state.wait,
                     level=state.level + 1, learn_path=state.learn_path, trace=state.trace)
    _patch_spawn()


def _forget_in_fork() -> None:
    """A fork of the owner (``fork`` children, the prefetch helper) spawns for real."""
    global _zygote
    z = _zygote
    if z is not None and os.getpid() != z.owner:
        _zygote = None
        with contextlib.suppress(OSError):
            z.sock.close()


# = _cpython.SPAWN_POPEN_MODULE (pinned by a test): spelled here, as importing _cpython at the
# target's entry is not needed for a string
_SPAWN_MODULE = "multiprocessing.popen_spawn_posix"


def _patch_spawn_when_imported() -> None:
    """Patch spawn's Popen when multiprocessing imports it (at the first spawn), not now:
    importing multiprocessing here would cost the target ~15 ms at its entry."""
    if _SPAWN_MODULE in sys.modules:
        _patch_spawn()
        return
    sys.meta_path.insert(0, _PatchOnImport())


class _PatchOnImport:
    """A one-shot meta path finder: lets the real finders find the module, patches it after
    it has run."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _SPAWN_MODULE:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader:
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        with contextlib.suppress(Exception):
            _patch_spawn(module)


def _patch_spawn(module: Any = None) -> None:
    if module is None:
        import importlib

        module = importlib.import_module(_SPAWN_MODULE)
    if getattr(module.Popen, "_headstart_zygote", False):
        return
    from headstart.procs._zygote_popen import make_popen

    module.Popen = make_popen(module.Popen, lambda: _zygote)
