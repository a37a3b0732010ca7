"""Start ``multiprocessing``'s forkserver early, in the background, with modules preloaded.

A server that starts its engine/workers with the ``forkserver`` method pays, at the first
worker start, for one fresh interpreter plus the imports of its preload list. Starting that
interpreter at process entry, from a daemon thread, overlaps it with the target's own startup
(what vLLM PR #40331 measured: ``benchmarks/design_measurements.md``).

Guarantees of :func:`prewarm_forkserver`:

* **Never raises into the target**, and never sets, forces or fixes the global start method.
  ``multiprocessing.forkserver.ensure_running()`` with a preload list calls
  ``spawn.get_preparation_data()``, which calls ``multiprocessing.get_start_method()`` -- and
  that *fixes* the global context to the platform default as a side effect, so the target's
  own later ``set_start_method("spawn")`` would raise "context has already been set". The
  prewarm thread therefore runs ``ensure_running()`` with ``spawn.get_preparation_data``
  replaced by a wrapper that, *for the prewarm thread only*, returns the two keys the
  forkserver uses (the guard's path as ``main_path``, and ``sys_path``) without touching the
  start method, and delegates unchanged for every other thread; the original is restored
  right after. The target may call ``set_start_method`` with any method afterwards (or
  concurrently) and gets what it asked for; only a target that uses ``forkserver`` uses the
  prewarmed server.
* **Never blocks interpreter exit**: one daemon thread, nothing joins it. A forkserver still
  preloading when the target exits leaves at once (a watchdog in the forkserver notices that
  its parent is gone), so it does not hold the target's stdout/stderr pipes open either.
* **A bad preload cannot kill the forkserver**: the stdlib survives only ``ImportError`` in
  preloads; headstart makes the forkserver run a guard file
  (:mod:`headstart.procs._forkserver_guard`, by path, as its ``__main__`` preload) that
  imports the list itself, with the target's ``sys.path`` (the stdlib forkserver ignores the
  ``sys_path`` it is handed), and swallows and reports every failure. A ``__main__`` entry in
  a preload list is therefore dropped (children import the target's ``__main__`` as usual).
* **Refuses**, with ``ok=False`` and a ``reason``, when: forkserver is unavailable; the
  target already set another global start method; ``start_method_env`` names a variable set
  to another method; CUDA is already initialised in this process (then the startup is past
  the point where a prewarm helps, and vLLM switches to ``spawn`` anyway).

What the caller must know:

* **The preload runs in the forkserver process and must not initialise CUDA**: a forkserver
  with a CUDA context forks broken children. ``import torch`` is fine (CUDA initialises
  lazily); anything that calls ``torch.cuda.*`` device functions at import time is not. The
  handle reports ``cuda_initialised_in_forkserver`` after the preload.
* **Environment and stdio are captured at prewarm time**: the forkserver is a fresh
  interpreter started now; its children (the target's workers) inherit *its* environment,
  working directory and stdout/stderr, not changes the target makes later. Apply environment
  changes first -- pass them as ``environ=`` (applied to ``os.environ`` in the calling thread
  before the forkserver starts) -- and check :meth:`ForkserverPrewarm.environ_changes` when in
  doubt. ``sys.path`` and ``__main__`` are not affected: every child receives those from the
  process that starts it.
* Across ``fork``: the handle and the forkserver belong to the process that prewarmed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from headstart import _cpython
from headstart.trace import tracer

if TYPE_CHECKING:
    import socket

    from headstart.adapters.facts import TargetFacts

# multiprocessing, socket and json are imported in the prewarm thread, not here: the call
# itself sits on the target's critical path.

__all__ = [
    "ForkserverPrewarm",
    "cuda_initialised",
    "forkserver_environ",
    "prewarm_forkserver",
    "should_prewarm",
]

log = logging.getLogger(__name__)

_GUARD_PREFIX = "headstart-preload|"  # = _forkserver_guard.PREFIX (pinned by a test)


class ForkserverPrewarm:
    """Handle of one prewarm. Attributes are final once :meth:`wait` returns True.

    ``ok``: None while running; True when the forkserver is up and its preload finished
    (individual module failures are in ``failed``); False when refused or failed, see
    ``reason``. ``elapsed``: seconds from the call until then. ``pid``: the forkserver's pid.
    ``preloaded``: module -> import seconds in the forkserver.
    """

    def __init__(self, preload: list[str]) -> None:
        self.preload = preload
        self.ok: bool | None = None
        self.reason = ""
        self.elapsed: float | None = None
        self.pid: int | None = None
        self.preloaded: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.cuda_initialised_in_forkserver: bool | None = None
        self._environ = dict(os.environ)
        self._t0 = time.perf_counter()
        self._trace_t0 = tracer.now()
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the prewarm finished (ready, refused or failed); True if it has."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def environ_changes(self) -> dict[str, tuple[str | None, str | None]]:
        """Variables changed in ``os.environ`` since the forkserver took its copy:
        name -> (value the forkserver's children see, value this process has now)."""
        now = dict(os.environ)
        return {k: (self._environ.get(k), now.get(k))
                for k in self._environ.keys() | now.keys()
                if self._environ.get(k) != now.get(k)}

    def _finish(self, ok: bool, reason: str = "") -> None:
        self.ok = ok
        self.reason = reason
        self.elapsed = time.perf_counter() - self._t0
        (log.debug if ok else log.info)("forkserver prewarm %s%s after %.3fs",
                                        "ready" if ok else "not done",
                                        f": {reason}" if reason else "", self.elapsed)
        tracer.complete("forkserver.prewarm", self._trace_t0, cat="forkserver", ok=ok,
                        reason=reason, pid=self.pid, preload=self.preload)
        self._done.set()  # last: whoever waits sees the final attributes and trace

    def __repr__(self) -> str:
        return (f"ForkserverPrewarm(ok={self.ok}, pid={self.pid}, reason={self.reason!r}, "
                f"elapsed={self.elapsed})")


def cuda_initialised() -> str | None:
    """Why CUDA counts as initialised in this process, or None. Never imports torch.

    ``torch.cuda.is_initialized()`` is asked only when ``torch.cuda`` is already imported,
    and then its answer is final (a CUDA build of torch may map the driver without
    initialising it). Otherwise a mapped ``libcuda.so`` means some other library did.
    """
    mod = sys.modules.get("torch.cuda")
    fn = getattr(mod, "is_initialized", None)
    if callable(fn):
        try:
            return "torch.cuda is initialised" if fn() else None
        except Exception as exc:  # torch half-imported by another thread, or odd builds
            log.debug("torch.cuda.is_initialized() failed: %r", exc)
    from headstart.watch.procfs import read_maps

    for parts in read_maps("self"):
        if len(parts) == 6 and b"libcuda.so" in parts[5]:
            return f"the CUDA driver is loaded ({os.fsdecode(parts[5]).split()[-1]})"
    return None


def should_prewarm(facts: TargetFacts, env: Mapping[str, str],
                   requested: bool | None) -> tuple[bool, str]:
    """Decide whether ``headstart run`` prewarms a forkserver for the target ``facts``
    describe, and say why.

    ``requested``: True/False from ``--forkserver``/``--no-forkserver`` (or
    ``HEADSTART_FORKSERVER``, merged by the caller), None when not given. A target that picks
    its worker start method through a variable (``facts.forkserver_env``: vLLM's
    ``VLLM_WORKER_MULTIPROC_METHOD``) gets the default on, but only if its installed version
    accepts forkserver there (``facts.forkserver_check``; vLLM releases after the revert of
    PR #40331 reject it) and the user has not chosen another method. Everywhere else it is
    opt-in. Use :func:`forkserver_environ` for the variables to set (pass them as
    ``environ=`` to :func:`prewarm_forkserver`).
    """
    if requested is False:
        return False, "disabled (--no-forkserver)"
    var = facts.forkserver_env
    if var:
        user = env.get(var)
        if user:
            if user == "forkserver":
                return True, f"{var}=forkserver set by the user"
            return False, f"{var}={user} set by the user"
        accepts = _accepts_forkserver(facts)
        if accepts is True:
            return True, f"installed {facts.adapter} accepts {var}=forkserver"
        if accepts is False:
            return False, f"installed {facts.adapter} rejects {var}=forkserver"
        if requested:
            return True, (f"requested (--forkserver); {facts.adapter}'s support for "
                          "forkserver is unknown")
        return False, f"cannot tell whether the installed {facts.adapter} accepts forkserver"
    if requested:
        return True, "requested (--forkserver)"
    return False, "opt-in (--forkserver) for this target"


def forkserver_environ(facts: TargetFacts, env: Mapping[str, str]) -> dict[str, str]:
    """Variables that make the target use the forkserver (set only what the user has not)."""
    var = facts.forkserver_env
    if var and not env.get(var):
        return {var: "forkserver"}
    return {}


def _accepts_forkserver(facts: TargetFacts) -> bool | None:
    """The answer of the adapter's ``forkserver_check``; None when it has none or fails."""
    from headstart.adapters.facts import answer_check

    return answer_check(facts.forkserver_check)


def prewarm_forkserver(preload: Iterable[str] = (), *, start_method_env: str | None = None,
                       environ: Mapping[str, str] | None = None,
                       ready_timeout: float = 600.0) -> ForkserverPrewarm:
    """Start the forkserver in a daemon thread with ``preload`` imported in it.

    Returns at once with a handle; see the module docstring for the guarantees.
    ``start_method_env``: the variable through which the target picks its worker start
    method (``VLLM_WORKER_MULTIPROC_METHOD`` for vLLM); when it is set to another method the
    prewarm refuses, as nobody would use the server. ``environ``: variables set in
    ``os.environ`` (in the calling thread) before the forkserver starts, so that its children
    see them. ``ready_timeout``: how long the thread waits for the preload to report.
    """
    handle: ForkserverPrewarm | None = None
    try:
        modules = [m for m in dict.fromkeys(preload) if isinstance(m, str) and m]
        if environ:
            os.environ.update(environ)
        handle = ForkserverPrewarm(modules)
        threading.Thread(target=_prewarm, args=(handle, start_method_env, ready_timeout),
                         name="headstart-forkserver", daemon=True).start()
    except Exception as exc:  # never raise into the target
        log.debug("forkserver prewarm not started: %r", exc)
        if handle is None:
            handle = ForkserverPrewarm([])
        handle._finish(False, f"not started: {type(exc).__name__}: {exc}")
    return handle


def _refusal(start_method_env: str | None) -> str | None:
    import multiprocessing

    if _cpython.inheriting():
        return "this is a multiprocessing child still bootstrapping"
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "the forkserver start method is not available on this platform"
    # the variable first: it is fixed from the process's start, while the target may set the
    # global method (to what the variable asks) at any moment after this thread began
    if start_method_env:
        value = os.environ.get(start_method_env)
        if value and value != "forkserver":
            return f"{start_method_env}={value}"
    current = multiprocessing.get_start_method(allow_none=True)
    if current not in (None, "forkserver"):
        return f"the start method is already set to {current!r}"
    cuda = cuda_initialised()
    if cuda:
        return f"CUDA already initialised in this process: {cuda}"
    return None


def _guarded_preparation_data(guard_path: str) -> contextlib.AbstractContextManager[None]:
    """For this thread only, ``spawn.get_preparation_data()`` returns what the forkserver
    uses (``main_path``, ``sys_path``) without fixing the global start method.

    Other threads keep the original behaviour: they call straight through.
    """
    return _cpython.preparation_data_for_this_thread(
        lambda: {"main_path": guard_path, "sys_path": list(sys.path)})


def _prewarm(handle: ForkserverPrewarm, start_method_env: str | None,
             ready_timeout: float) -> None:
    try:
        _prewarm_steps(handle, start_method_env, ready_timeout)
    except Exception as exc:  # a daemon thread must not die with a traceback on stderr
        log.debug("forkserver prewarm failed", exc_info=True)
        if not handle.done:
            handle._finish(False, f"{type(exc).__name__}: {exc}")
    finally:
        if not handle.done:
            handle._finish(False, "prewarm thread ended unexpectedly")


def _prewarm_steps(handle: ForkserverPrewarm, start_method_env: str | None,
                   ready_timeout: float) -> None:
    import json
    import multiprocessing
    import socket
    from multiprocessing import forkserver

    reason = _refusal(start_method_env)
    if reason:
        tracer.instant("forkserver.refused", cat="forkserver", reason=reason)
        handle._finish(False, reason)
        return
    guard_path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "_forkserver_guard.py")
    if not os.path.isfile(guard_path):  # e.g. installed in a zip: run_path would kill it
        handle._finish(False, f"guard file not found: {guard_path}")
        return
    if _cpython.forkserver_pid() is not None:
        handle.pid = _cpython.forkserver_pid()
        handle._finish(True, "a forkserver was already running; its preload list was kept")
        return

    sock: socket.socket | None = None
    address = ""
    if sys.platform.startswith("linux"):
        address = f"headstart-forkserver-{os.getpid()}-{os.urandom(8).hex()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind("\0" + address)
    try:
        # A preload list the target set itself goes through the guard too, after ours.
        kept = [m for m in _cpython.forkserver_preload()
                if m != "__main__" and not m.startswith(_GUARD_PREFIX)]
        plan = {"address": address, "modules": list(dict.fromkeys([*handle.preload, *kept])),
                "sys_path": list(sys.path)}
        encoded = _GUARD_PREFIX + json.dumps(plan).encode().hex()
        multiprocessing.set_forkserver_preload(["__main__", encoded])
        before = multiprocessing.get_start_method(allow_none=True)
        t0 = tracer.now()
        with _guarded_preparation_data(guard_path):
            forkserver.ensure_running()
        handle.pid = _cpython.forkserver_pid()
        tracer.complete("forkserver.start", t0, cat="forkserver", pid=handle.pid)
        after = multiprocessing.get_start_method(allow_none=True)
        if after != before:  # someone else set it meanwhile; recorded, not undone
            log.debug("start method changed during prewarm: %r -> %r", before, after)
        if sock is None or handle.pid is None:
            handle._finish(True, "started; readiness is not observable on this platform")
            return
        _await_report(handle, sock, ready_timeout)
    finally:
        if sock is not None:
            sock.close()


def _await_report(handle: ForkserverPrewarm, sock: socket.socket,
                  ready_timeout: float) -> None:
    import json

    from headstart.watch.procfs import running

    deadline = time.monotonic() + ready_timeout
    sock.settimeout(0.25)
    while True:
        try:
            data = sock.recv(1 << 20)
            break
        except TimeoutError:
            if handle.pid is not None and not running(handle.pid):
                handle._finish(False, "the forkserver exited during its preload")
                return
            if time.monotonic() > deadline:
                handle._finish(False, f"no preload report within {ready_timeout:.0f}s")
                return
    report: dict[str, Any] = json.loads(data)
    for name, seconds, error in report.get("modules", []):
        if error:
            handle.failed[name] = error
        else:
            handle.preloaded[name] = seconds
    handle.cuda_initialised_in_forkserver = bool(report.get("cuda_initialised"))
    tracer.instant("forkserver.ready", cat="forkserver", pid=handle.pid,
                   preloaded=handle.preloaded, failed=handle.failed,
                   seconds=report.get("seconds"))
    reason = ""
    if handle.failed:
        reason = "some preloads failed: " + ", ".join(sorted(handle.failed))
    if handle.cuda_initialised_in_forkserver:
        reason = (reason + "; " if reason else "") + "the preload initialised CUDA"
        handle._finish(False, reason)
        return
    handle._finish(True, reason)
