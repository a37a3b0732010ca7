"""The zygote process itself, and the first steps of every child it forks.

Runs only in processes made by :mod:`headstart.procs.zygote` (``os.fork`` of the target at its
entry, or of a zygote's child): nothing here runs in the target. Every path ends in
``os._exit``; nothing returns into the stack the fork was made from.

Protocol, over ``AF_UNIX`` ``SOCK_SEQPACKET`` pairs (one message per ``sendmsg``, file
descriptors attached):

* control pair, target <-> zygote: the zygote sends one ``ready`` message when its imports
  are done (or one ``refused`` message and exits); the target sends one ``spawn`` request per
  child, with a status socket, its stdio and the descriptors the child must hold;
* status pair, one per child: the zygote sends ``{"pid": N}`` after the fork, then
  ``{"exit": code}`` (``-signal`` when killed) when the child has exited. The child stays a
  zombie of the zygote until the target closes its end, so its pid cannot be reused while
  the target may still signal it (as with a real child of the target).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from headstart import _cpython
from headstart.procs.zygote import IMPORT_TIME_PREFIXES
from headstart.trace import tracer

__all__ = ["MAX_MESSAGE", "ZygoteState", "fork_connected", "receive", "run_child", "send",
           "zygote_main"]

MAX_MESSAGE = 1 << 20
_CAPTURE_LIMIT = 1 << 20
# Signals the zygote blocks: Ctrl-C or a group SIGTERM is for the target and its children;
# the zygote leaves with the target. Blocked, not ignored: one that reaches a child while it
# is still being set up stays pending and acts when the child's own dispositions are in
# place, as it would on a freshly spawned one.
_BLOCKED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


class ZygoteState:
    """What a zygote knows about itself; copied into every child by the fork."""

    def __init__(self, level: int, max_level: int, trace: str | None, *, verbose: int = 0,
                 wait: float = 120.0, preload: list[str] = (), learn_path: str | None = None,
                 learned: dict[str, dict[str, str | None]] | None = None) -> None:
        self.level = level
        self.max_level = max_level
        self.trace = trace
        self.verbose = verbose
        self.wait = wait
        self.preload = list(preload)
        # variables the children of level-N zygotes had at their spawns in earlier starts
        self.learn_path = learn_path
        self.learned = dict(learned or {})
        self.candidate: Any = None  # a child made ready in advance (_zygote_candidates)
        self.env_at_start: dict[str, str] = {}
        self.imported = False  # this process has run the preload imports
        self.ready: dict[str, Any] = {}
        self.output = (b"", b"")  # stdout, stderr written by the imports
        self.torch_rng: Any = None


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and its descriptors; ``(None, [])`` on EOF (a peer that exited with
    unread messages reads as ECONNRESET)."""
    try:
        if max_fds:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, max_fds)
        else:
            data, fds = sock.recv(MAX_MESSAGE), []
    except ConnectionResetError:
        return None, []
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


# -- the zygote --------------------------------------------------------------------------

def zygote_main(ctl: socket.socket, state: ZygoteState, preload: list[str],
                parent: int) -> None:
    """Body of a fresh zygote: import, report, serve spawn requests. Never returns."""
    code = 0
    try:
        _die_with(parent)
        _detach_from_target(ctl)
        if not state.ready:
            from headstart.procs._zygote_candidates import start_candidate

            # a lesson from an earlier start: the first child is forked now, before any
            # import, and imports beside its own zygote; this one imports when asked again
            state.candidate = start_candidate(state)
            if state.candidate is not None:
                state.ready = state.candidate.ready()
            else:
                state.ready = _import_all(preload, state)
            if not state.ready.get("ok"):
                send(ctl, state.ready)
                return
        send(ctl, state.ready)
        _serve(ctl, state, parent)
    except BaseException as exc:  # the zygote's failure is the target's fallback, never more
        code = 1
        with contextlib.suppress(OSError):
            send(ctl, {"ok": False, "reason": f"zygote failed: {type(exc).__name__}: {exc}"})
    finally:
        _write_trace(state)
        os._exit(code)


def _die_with(parent: int) -> None:
    """SIGKILL when the process that forked us ends, even mid-import; a zygote never
    outlives its owner."""
    from headstart.pagecache.syscalls import libc

    libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def _detach_from_target(ctl: socket.socket) -> None:
    """Drop what the zygote inherited from the target's entry and must not act on."""
    _cpython.clear_exit_handlers()  # the target's exit handlers (its trace writer) are not ours
    signal.pthread_sigmask(signal.SIG_BLOCK, [getattr(signal, n) for n in _BLOCKED])
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    keep = {0, 1, 2, ctl.fileno()}
    _close_all_but(keep)


def _close_all_but(keep: set[int]) -> None:
    fds = sorted(keep)
    low = 0
    for fd in fds:
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _import_all(preload: list[str], state: ZygoteState) -> dict[str, Any]:
    """Import ``preload``; refuse on CUDA or a Python thread. The ready message."""
    import importlib
    import threading

    from headstart.procs.forkserver import cuda_initialised

    t0 = time.perf_counter()
    trace_t0 = tracer.now()
    state.env_at_start = dict(os.environ)  # what a fresh zygote of a child's starts from
    state.imported = True
    watched = _EnvReads(state.env_at_start)
    modules: dict[str, float] = {}
    failed: dict[str, str] = {}
    with _CapturedOutput(state), watched:
        for name in preload:
            t = time.perf_counter()
            try:
                importlib.import_module(name)
                modules[name] = round(time.perf_counter() - t, 4)
            except BaseException as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
    ready: dict[str, Any] = {"ok": True, "pid": os.getpid(), "modules": modules,
                             "failed": failed, "elapsed": round(time.perf_counter() - t0, 3),
                             "env": watched.values(prefixes=IMPORT_TIME_PREFIXES),
                             "env_after": watched.after(prefixes=IMPORT_TIME_PREFIXES),
                             "sys_path": list(sys.path),
                             "executable": sys.executable,
                             "files": _module_files(preload),
                             "threads": len(os.listdir("/proc/self/task")),
                             "libraries": _mapped_libraries()}
    cuda = cuda_initialised()
    if cuda:
        ready.update(ok=False, reason=f"refused: {cuda} in the zygote")
    elif threading.active_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        ready.update(ok=False, reason=f"refused: the imports started threads {names}")
    torch = sys.modules.get("torch")
    if torch is not None and ready["ok"]:
        try:
            state.torch_rng = torch.random.get_rng_state()
        except Exception:
            state.torch_rng = None
    tracer.complete("zygote.imports", trace_t0, cat="zygote", modules=modules, failed=failed,
                    ok=ready["ok"], reason=ready.get("reason", ""))
    return ready


def _mapped_libraries() -> list[str]:
    """Shared objects mapped in this process (for ``LD_PRELOAD`` comparisons)."""
    from headstart.watch.procfs import read_maps

    paths = (os.fsdecode(parts[5]) for parts in read_maps("self") if len(parts) == 6)
    return list(dict.fromkeys(p for p in paths if p.startswith("/") and ".so" in p))


def _module_files(preload: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in preload:
        mod = sys.modules.get(name.partition(".")[0])
        out[name.partition(".")[0]] = getattr(mod, "__file__", None)
    return out


class _EnvReads:
    """Which variables the imports read through ``os.environ`` (and their values).

    A read by name counts (``os.environ[k]``, ``get``, ``in``, ``os.getenv``); walking the
    whole environment (``items()``, ``values()``, ``copy()``) does not: that is how modules
    pick their own prefix (tqdm's ``TQDM_*``), and counting it would tie every child to
    every variable."""

    def __init__(self, at_start: dict[str, str]) -> None:
        self.read: dict[str, str | None] = {}  # name -> value at its first read
        self.at_start = at_start  # the environment before the imports

    def __enter__(self) -> _EnvReads:
        self._watch = _cpython.environ_reads(self.read)
        self._watch.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watch.__exit__(*exc)

    def values(self, prefixes: tuple[str, ...]) -> dict[str, str | None]:
        """The variables read, with the value each had when first read, and those named by
        ``prefixes`` with their values before the imports (the loader and native libraries
        read them when the process starts or a library loads, not later)."""
        out = dict(self.read)
        out.update((k, v) for k, v in self.at_start.items() if k.startswith(prefixes))
        return out

    def after(self, prefixes: tuple[str, ...]) -> dict[str, str | None]:
        """The same variables' values once the imports are done (some set their own)."""
        keys = set(self.values(prefixes)) | {k for k in os.environ if k.startswith(prefixes)}
        return {k: os.environ.get(k) for k in sorted(keys)}


class _CapturedOutput:
    """Keep what the imports print (warnings, banners): each child prints it, as a fresh
    interpreter importing the same modules would, and the target's output stays its own."""

    def __init__(self, state: ZygoteState) -> None:
        self.state = state
        self.saved: list[int] = []
        self.files: list[int] = []

    def __enter__(self) -> _CapturedOutput:
        for fd in (1, 2):
            _flush()
            self.saved.append(os.dup(fd))
            mem = os.memfd_create(f"headstart-zygote-{fd}", os.MFD_CLOEXEC)
            self.files.append(mem)
            os.dup2(mem, fd)
        return self

    def __exit__(self, *exc: object) -> None:
        _flush()
        out = []
        for fd, saved, mem in zip((1, 2), self.saved, self.files, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
            out.append(os.pread(mem, _CAPTURE_LIMIT, 0))
            os.close(mem)
        self.state.output = (out[0], out[1])


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()


def _serve(ctl: socket.socket, state: ZygoteState, parent: int) -> None:
    """Fork one child per request until the control socket reads EOF."""
    children: dict[int, _Child] = {}
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    by_fd: dict[int, tuple[str, int]] = {}
    while True:
        events = poller.poll(1000)
        if not events and os.getppid() != parent:
            return  # the target is gone and something still holds its socket
        for fd, _mask in events:
            if fd == ctl.fileno():
                request, fds = receive(ctl, max_fds=64)
                if request is None:
                    return
                child = _fork_child(request, fds, state)
                if child is not None:
                    children[child.pid] = child
                    for kind, cfd in (("exit", child.pidfd), ("closed", child.status.fileno())):
                        by_fd[cfd] = (kind, child.pid)
                        poller.register(cfd, select.POLLIN)
                continue
            kind, pid = by_fd.pop(fd)
            poller.unregister(fd)
            child = children[pid]
            if kind == "exit":
                child.exited()
            else:
                child.closed_by_target()
            if child.done:
                for cfd in child.fds():
                    if cfd in by_fd:
                        poller.unregister(cfd)
                        del by_fd[cfd]
                child.reap()
                del children[pid]


class _Child:
    """One forked child, as the zygote tracks it until the target lets go of it."""

    def __init__(self, pid: int, status: socket.socket) -> None:
        self.pid = pid
        self.status = status
        self.pidfd = os.pidfd_open(pid)
        self.code: int | None = None
        self.target_closed = False

    @property
    def done(self) -> bool:
        return self.target_closed and self.code is not None

    def fds(self) -> tuple[int, int]:
        return self.pidfd, self.status.fileno()

    def exited(self) -> None:
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self.code = (info.si_status if info.si_code == os.CLD_EXITED
                     else -info.si_status)
        if not self.target_closed:
            try:
                send(self.status, {"exit": self.code})
            except OSError:
                self.target_closed = True
        tracer.instant("zygote.child exit", cat="zygote", pid=self.pid, code=self.code)

    def closed_by_target(self) -> None:
        try:
            message, _ = receive(self.status)
        except OSError:
            message = None
        if message is None:
            self.target_closed = True

    def reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        self.status.close()


def _fork_child(request: dict[str, Any], fds: list[int], state: ZygoteState) -> _Child | None:
    status = socket.socket(fileno=fds[0])
    passed = fds[1:]
    t0 = tracer.now()
    _flush()
    candidate, state.candidate = state.candidate, None
    if candidate is not None:
        from headstart.procs._zygote_candidates import hand_over

        if hand_over(candidate, request, passed):
            return _forked(candidate.pid, status, passed, request, state, t0, "candidate")
    if not state.imported:  # the candidate had the imports; now this zygote needs them
        _import_all(state.preload, state)
    try:
        pid = os.fork()
    except OSError as exc:
        send(status, {"error": f"fork failed: {exc}"})
        status.close()
        for fd in passed:
            os.close(fd)
        return None
    if pid == 0:
        status.close()
        run_child(request, passed, state)  # never returns
    return _forked(pid, status, passed, request, state, t0, "fork")


def _forked(pid: int, status: socket.socket, passed: list[int], request: dict[str, Any],
            state: ZygoteState, t0: float, how: str) -> _Child:
    for fd in passed:
        os.close(fd)
    child = _Child(pid, status)
    send(status, {"pid": pid})
    tracer.complete("zygote.fork", t0, cat="zygote", pid=pid, child=request.get("name"),
                    how=how)
    _write_trace(state)
    return child


def _write_trace(state: ZygoteState) -> None:
    if state.trace:
        with contextlib.suppress(Exception):
            tracer.write(state.trace)


# -- a child, before spawn's own code runs ------------------------------------------------

def run_child(request: dict[str, Any], fds: list[int], state: ZygoteState,
              sub: socket.socket | None = None) -> None:
    """Turn this fork of the zygote into what ``spawn`` would have started. Never returns.

    ``sub``: this child's own zygote when one is already starting (a candidate's)."""
    code = 1
    try:
        if sub is None:
            sub = _start_subzygote(state)
        layout = dict(zip(request["stdio"] + request["fds"], fds, strict=True))
        if sub is not None:
            layout[_free_fd(layout, sub.fileno())] = os.dup(sub.fileno())
            sub_fd = max(layout)
            sub.close()
        else:
            sub_fd = None
        _place_fds(layout)
        for fd in {0, 1, 2} - set(request["stdio"]):
            os.close(fd)  # closed in the spawning process: closed here as well
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        _reset_signals(request)
        _reseed(state)
        _replay_output(state)
        if sub_fd is not None:
            os.set_inheritable(sub_fd, False)
            from headstart.procs import zygote

            zygote.adopt_subzygote(socket.socket(fileno=sub_fd), state)
        code = _spawn_main(request)
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException:
        with contextlib.suppress(BaseException):
            sys.excepthook(*sys.exc_info())
        code = 1
    finally:
        _interpreter_exit(code)


def _start_subzygote(state: ZygoteState) -> socket.socket | None:
    """This child's own zygote, forked while the child is still a pristine copy, so that
    what it spawns are its children, as with spawn."""
    if state.level + 1 >= state.max_level:
        return None

    def subzygote(sock: socket.socket, parent: int) -> None:
        sub = ZygoteState(state.level + 1, state.max_level, state.trace,
                          verbose=state.verbose, wait=state.wait, preload=state.preload,
                          learn_path=state.learn_path, learned=state.learned)
        sub.ready = dict(state.ready, pid=os.getpid())
        sub.output, sub.torch_rng = state.output, state.torch_rng
        sub.env_at_start, sub.imported = state.env_at_start, True
        zygote_main(sock, sub, [], parent)

    return fork_connected(subzygote)[1]


def fork_connected(body: Callable[[socket.socket, int], None]) -> tuple[int, socket.socket]:
    """Fork a child connected to this process by a socket pair. The child runs
    ``body(its end, this pid)``, which must not return (it ``os._exit``-s if it does); this
    process gets ``(child pid, its end)``."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            mine.close()
            body(theirs, parent)
        finally:
            os._exit(1)
    theirs.close()
    return pid, mine


def _free_fd(layout: dict[int, int], avoid: int) -> int:
    """A descriptor number above every one the child must hold."""
    return max([*layout, avoid, 2]) + 1


def _place_fds(layout: dict[int, int]) -> None:
    """Make fd ``target`` a copy of received fd ``source`` for each pair; close the rest.

    Through free numbers above all of them first, so that no placement overwrites a source
    still to be placed."""
    high = max([*layout, *layout.values(), 2]) + 1
    moved = {target: os.dup2(source, high + i, inheritable=False)
             for i, (target, source) in enumerate(layout.items())}
    for source in set(layout.values()):
        os.close(source)
    for target, tmp in moved.items():
        os.dup2(tmp, target, inheritable=True)
        os.close(tmp)
    _close_all_but(set(layout))


def _reset_signals(request: dict[str, Any]) -> None:
    """Dispositions as exec leaves them (ignored stays ignored, handlers reset), then what
    a fresh interpreter installs; the spawning thread's mask."""
    ignored = set(request["sigign"])
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if signal.SIGINT not in ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, request["sigmask"])


def _reseed(state: ZygoteState) -> None:
    """Fresh random state, as a new interpreter has: ``random`` was reseeded by the fork;
    numpy's legacy global generator and torch's default one are reseeded here."""
    nprandom = sys.modules.get("numpy.random")
    if nprandom is not None:
        with contextlib.suppress(Exception):
            nprandom.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if state.torch_rng is not None:
                torch.random.set_rng_state(state.torch_rng)
            torch.seed()
        except Exception:
            pass


def _replay_output(state: ZygoteState) -> None:
    for fd, data in zip((1, 2), state.output, strict=True):
        while data:
            try:
                data = data[os.write(fd, data):]
            except OSError:
                break


def _spawn_main(request: dict[str, Any]) -> int:
    import types

    main = types.ModuleType("__main__")  # what `python -c` runs in, before spawn's prepare
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.argv[:] = ["-c", "--multiprocessing-fork", f"tracker_fd={request['tracker_fd']}",
                   f"pipe_handle={request['pipe_handle']}"]
    _cpython.spawn_main(request["pipe_handle"], tracker_fd=request["tracker_fd"])
    return 0


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(BaseException):
        print(code, file=sys.stderr)
    return 1


def _interpreter_exit(code: int) -> None:
    """What the interpreter does when ``spawn_main`` raises SystemExit, then leave."""
    with contextlib.suppress(BaseException):
        _cpython.join_non_daemon_threads()
    with contextlib.suppress(BaseException):
        _cpython.run_exit_handlers()
    _flush()
    os._exit(code)
