"""Race-free background imports: ``headstart.preload(["torch", "transformers"])``.

One daemon owner thread imports the listed modules in order. Until it has finished a
top-level package, every other thread that imports anything inside that package waits for
it first (see :mod:`headstart.imports.gate`), so no two threads ever run the package's
imports at the same time. When the last one is done the gate removes itself.

Guarantees:

* **Never raises into the target.** A failed preload is recorded in :attr:`Preload.errors`,
  the debug log and the trace; its waiters are released and get the genuine error (or
  success) from their own import, exactly as without headstart.
* **Never hangs the target.** Waiting stops when it would deadlock (see the gate module).
* **Never blocks interpreter exit.** The owner is a daemon thread; nothing joins it.
* **Across fork:** in a child the owner thread no longer exists; the gate is removed there
  and unfinished modules are reported as ``"lost-in-fork"``.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from headstart.imports import gate
from headstart.trace import tracer

__all__ = ["Preload", "preload"]

_log = logging.getLogger(__name__)

_DEFAULT_STALL_TIMEOUT = 10.0


class Preload:
    """Handle of one :func:`preload` call. Its attributes fill in as the owner progresses.

    ``results[name]`` is ``"imported"``, ``"already-imported"``, ``"failed"`` or
    ``"lost-in-fork"``; ``errors[name]`` the exception (traceback dropped, it is in the debug
    log); ``timings[name]`` seconds the import took; ``gate_events`` one dict per time
    another thread waited at the gate: ``module``, ``thread``, ``waited_s`` and ``outcome``
    (``"done"``, or why it stopped waiting early: ``"deadlock"``, ``"stalled"``,
    ``"owner-gone"``).
    """

    def __init__(self, modules: Iterable[str], stall_timeout: float,
                 on_done: Callable[[], object] | None = None) -> None:
        self.modules: tuple[str, ...] = tuple(modules)
        self._on_done = on_done
        self.stall_timeout = stall_timeout
        self.results: dict[str, str] = {}
        self.errors: dict[str, BaseException] = {}
        self.timings: dict[str, float] = {}
        self.gate_events: list[dict[str, Any]] = []
        self._finished = threading.Event()
        self._go = threading.Event()
        self._entries: dict[str, gate.GateEntry] = {}
        self._thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        """True once every module was imported or failed."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done or ``timeout`` seconds passed; return :attr:`done`.

        Do not call this while holding a module lock the preloaded modules need (that is,
        from module level of a module they import): it would wait forever.
        """
        return self._finished.wait(timeout)

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"<Preload {list(self.modules)} {state} results={self.results}>"

    # -- owner thread ------------------------------------------------------------------

    def _run(self) -> None:
        self._go.wait()
        # The gate releases a package after the last listed module under it.
        last: dict[str, str] = {_top(name): name for name in self.modules}
        try:
            for name in self.modules:
                try:
                    self._import_one(name)
                finally:
                    top = _top(name)
                    entry = self._entries.get(top)
                    if entry is not None and last.get(top) == name:
                        gate.release(entry)
        finally:
            for entry in self._entries.values():  # belt and braces: never leave a gate shut
                gate.release(entry)
            self._finished.set()
            self._call_on_done()

    def _call_on_done(self) -> None:
        callback, self._on_done = self._on_done, None
        if callback is not None:
            try:
                callback()
            except Exception as exc:  # best-effort: never into the owner thread's caller
                _log.debug("preload on_done: %r", exc)

    def _import_one(self, name: str) -> None:
        start_us = tracer.now()
        t0 = time.perf_counter()
        outcome = "imported"
        try:
            if _top(name) not in self._entries and _fully_imported(name):
                outcome = "already-imported"
            importlib.import_module(name)
        except BaseException as exc:  # a failed preload must never reach the target
            outcome = "failed"
            _log.debug("preload of %s failed:\n%s", name, "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)))
            exc.__traceback__ = None  # do not keep the failed modules' frames alive
            self.errors[name] = exc
        finally:
            self.timings[name] = time.perf_counter() - t0
            self.results[name] = outcome
            args = {"outcome": outcome}
            if name in self.errors:
                exc = self.errors[name]
                args["error"] = f"{type(exc).__name__}: {exc}"
            tracer.complete(f"preload {name}", start_us, cat="import", **args)

    def _lost_in_fork(self) -> None:
        for name in self.modules:
            self.results.setdefault(name, "lost-in-fork")
        self._finished = threading.Event()
        self._finished.set()


def _top(name: Any) -> str:
    return name.partition(".")[0] if isinstance(name, str) else ""


def _fully_imported(name: str) -> bool:
    import sys

    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and not getattr(spec, "_initializing", False)


_live: list[Preload] = []  # handles whose owner is running, for the fork hook


def _after_fork_in_child() -> None:
    for handle in _live:
        if not handle.done:
            handle._lost_in_fork()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def preload(modules: Iterable[str], *, stall_timeout: float = _DEFAULT_STALL_TIMEOUT,
            on_done: Callable[[], object] | None = None) -> Preload:
    """Import ``modules`` in order in one background daemon thread, race-free.

    Returns at once with a :class:`Preload` handle. Until the owner thread has finished a
    listed top-level package (``"torch"``; a dotted entry such as ``"torch.nn"`` gates its
    top-level package), other threads importing anything inside it wait for the owner first,
    then import normally. Packages already imported when this is called are not gated.

    ``stall_timeout``: a waiter stops waiting when the thread it depends on made no
    progress at all for this many seconds (it may be waiting for the waiter in a way the
    gate cannot see, such as a ``join``). ``on_done()`` is called once, in the owner
    thread, when every module is imported or failed (its exceptions are logged and dropped).
    Never raises; bad entries are recorded as failed.
    """
    handle = Preload([m for m in modules], stall_timeout, on_done)
    try:
        thread = threading.Thread(target=handle._run, name="headstart-preload", daemon=True)
        handle._thread = thread
        thread.start()  # waits for `go`, so its ident is known before the gate exists
        tops = [_top(m) for m in handle.modules if _top(m)]
        handle._entries = gate.register(tops, thread, stall_timeout, handle.gate_events)
        _live[:] = [h for h in _live if not h.done]
        _live.append(handle)
    except BaseException as exc:  # e.g. cannot start a thread: run the target unchanged
        _log.debug("preload could not start: %r", exc)
        for name in handle.modules:
            handle.results.setdefault(name, "failed")
        for entry in handle._entries.values():
            gate.release(entry)
        handle._finished.set()
        handle._call_on_done()
    finally:
        handle._go.set()
    return handle
