"""The import gate: other threads wait for a package's owner thread before importing from it.

Why: CPython 3.10-3.13 are not safe when two threads import the same package at once
(package/submodule lock inversion -> ``_DeadlockError``; a package that replaces itself in
``sys.modules`` as transformers' ``_LazyModule`` does -> ``cannot import name X``). The fix is
a barrier: while the owner thread imports package ``P``, any other thread that imports
``P`` or ``P.anything`` waits *before* it enters the import system, then imports normally.

What is patched, only while something is pending:

* ``builtins.__import__``: import statements, ``__import__()``, ``PyImport_Import`` (C code).
* ``importlib._bootstrap._gcd_import``: what ``importlib.import_module`` and
  ``importlib.__import__`` call, including references bound before the gate was installed.
  (A ``sys.meta_path`` finder cannot do this: it is not consulted for modules already in
  ``sys.modules``.)

When nothing is pending the originals are put back if nobody replaced them meanwhile;
otherwise our wrapper stays in the other wrapper's chain as a pass-through (one dict check).

Never hang. A waiting thread stops waiting and lets the import system proceed when:

* the owner thread is gone (exited, or lost in ``fork``);
* the owner is (transitively) blocked on a module lock held by the waiter, or on a gate wait
  of a thread that is: a wait-for graph over ``importlib._bootstrap._blocking_on`` (thread id
  -> lock(s); a lock's ``owner`` is a thread id) and our own waits. Holding module locks is
  normal for a waiter (it is usually inside some module's body), so only an actual cycle
  counts;
* the thread at the end of the owner's wait chain made no progress (same Python frame and
  instruction, no CPU time, faults or reads in ``/proc/self/task/N``) for ``stall_timeout``
  seconds: it waits for something we cannot see (a join, an event) that may be us.

Imports made by the package's own code in another thread (a thread its ``__init__`` started)
are never gated: they are part of the owner's work, and waiting would deadlock a ``join``.
Relative imports are such imports by construction.
"""

from __future__ import annotations

import builtins
import logging
import os
import sys
import threading
import time
from typing import Any

from headstart import _cpython
from headstart.trace import tracer
from headstart.watch import procfs

__all__ = ["GateEntry", "pending", "register", "release"]

_log = logging.getLogger(__name__)

_MAX_SLICE = 0.05  # seconds; how often a waiter re-checks for a deadlock while waiting


class GateEntry:
    """One pending top-level package: who owns it, and when it is done."""

    __slots__ = ("done", "events", "name", "owner", "stall_timeout")

    def __init__(self, name: str, owner: threading.Thread, stall_timeout: float,
                 events: list[dict[str, Any]]) -> None:
        self.name = name
        self.owner = owner  # started; .ident is set
        self.stall_timeout = stall_timeout
        self.done = threading.Event()
        self.events = events  # shared with the Preload handle: one dict per wait


# Registry. Read without the lock in the hot path (dict.get is atomic under the GIL);
# written under _lock.
_lock = threading.Lock()
_pending: dict[str, GateEntry] = {}
_waiting: dict[int, GateEntry] = {}  # thread id -> entry it waits for right now


class _Patch:
    """Replace ``owner.attr`` by ``wrapper``; undo only if still ours."""

    def __init__(self, owner: Any, attr: str, wrapper: Any) -> None:
        self.owner, self.attr, self.wrapper = owner, attr, wrapper
        self.original: Any = None
        self.in_chain = False  # our wrapper is reachable (installed, or under another wrapper)

    def install(self) -> None:
        if self.in_chain:  # still under someone else's wrapper: it gates again by itself
            return
        self.original = getattr(self.owner, self.attr)
        setattr(self.owner, self.attr, self.wrapper)
        self.in_chain = True

    def uninstall(self) -> None:
        if self.in_chain and getattr(self.owner, self.attr) is self.wrapper:
            setattr(self.owner, self.attr, self.original)
            self.in_chain = False
        # else: someone wrapped on top of us; we stay as a pass-through (nothing pending)


def _gated_import(name: Any, globals: Any = None, locals: Any = None, fromlist: Any = (),
                  level: int = 0) -> Any:
    if _pending and level == 0 and type(name) is str:
        entry = _pending.get(name.partition(".")[0])
        if entry is not None:
            _wait_for(entry, globals.get("__name__") if type(globals) is dict else None)
    return _import_patch.original(name, globals, locals, fromlist, level)


def _gated_gcd_import(name: Any, package: Any = None, level: int = 0) -> Any:
    if _pending and type(name) is str:
        absolute = name
        if level > 0:
            try:
                absolute = _cpython.resolve_name(name, package, level)
            except Exception:  # let the real function raise the real error
                absolute = ""
        entry = _pending.get(absolute.partition(".")[0])
        if entry is not None:
            _wait_for(entry, None)
    return _gcd_patch.original(name, package, level)


_import_patch = _Patch(builtins, "__import__", _gated_import)
_gcd_patch = _Patch(*_cpython.GCD_IMPORT, _gated_gcd_import)


def _caller_module() -> str | None:
    """Name of the first module on this thread's stack outside the import machinery."""
    frame = _cpython.caller_frame(2)
    while frame is not None:
        mod = frame.f_globals.get("__name__")
        if not (isinstance(mod, str) and (mod.startswith(("importlib", "_frozen_importlib"))
                                          or mod == __name__)):
            return mod if isinstance(mod, str) else None
        frame = frame.f_back
    return None


def _wait_for(entry: GateEntry, caller: str | None) -> None:
    tid = threading.get_ident()
    if tid == entry.owner.ident or entry.done.is_set():
        return
    if caller is None:
        caller = _caller_module()
    if caller is not None and (caller == entry.name or caller.startswith(entry.name + ".")):
        return  # the package's own code in a thread it started: part of the owner's work
    start_us = tracer.now()
    t0 = time.perf_counter()
    previous = _waiting.get(tid)
    _waiting[tid] = entry
    outcome = "done"
    probe = _StallProbe()
    try:
        delay = 0.001
        while not entry.done.wait(delay):
            delay = min(delay * 2, _MAX_SLICE)
            reason = _reason_to_stop(entry, tid, probe)
            if reason is not None and not entry.done.is_set():
                outcome = reason
                break
    finally:
        if previous is None:
            _waiting.pop(tid, None)
        else:
            _waiting[tid] = previous
    waited = time.perf_counter() - t0
    thread = threading.current_thread().name
    entry.events.append({"module": entry.name, "thread": thread, "waited_s": waited,
                         "outcome": outcome})
    tracer.complete(f"import wait {entry.name}", start_us, cat="import", thread=thread,
                    outcome=outcome)
    if outcome != "done":
        _log.debug("stopped waiting for %s after %.3fs: %s", entry.name, waited, outcome)


def _edges(tid: int) -> list[int]:
    """Threads ``tid`` waits for: module lock owners, or the owner of a gate it waits at."""
    out = []
    gate = _waiting.get(tid)
    if gate is not None and not gate.done.is_set() and gate.owner.ident is not None:
        out.append(gate.owner.ident)
    for lock in _cpython.blocking_on(tid):
        owner = _cpython.lock_owner(lock)
        if owner is not None and owner != tid:
            out.append(owner)
    return out


def _reason_to_stop(entry: GateEntry, me: int, probe: _StallProbe) -> str | None:
    if not entry.owner.is_alive():
        return "owner-gone"
    # Depth-first over the wait-for graph from the owner; reaching `me` is a deadlock.
    start = entry.owner.ident
    stack, seen, runner = [start], set(), None
    while stack:
        t = stack.pop()
        if t == me:
            return "deadlock"
        if t in seen:
            continue
        seen.add(t)
        nxt = _edges(t)
        if not nxt and runner is None:
            runner = t  # the thread that should be making progress
        stack.extend(nxt)
    if runner is not None and probe.stalled(runner, entry.stall_timeout):
        return "stalled"
    return None


def _progress(ident: int) -> tuple[Any, ...] | None:
    """Something that changes whenever thread ``ident`` makes progress."""
    frame = _cpython.current_frames().get(ident)
    if frame is None:
        return None
    sig: tuple[Any, ...] = (id(frame), frame.f_code, frame.f_lasti)
    nid = _cpython.native_id(ident)
    st = procfs.read_stat(os.getpid(), nid) if nid is not None else None
    if st is not None:
        sig += (st.minflt, st.majflt, st.utime_s, st.stime_s)
    return sig


class _StallProbe:
    """Tracks whether one thread keeps the same progress signature for too long."""

    __slots__ = ("samples", "sig", "since", "tid")

    def __init__(self) -> None:
        self.tid: int | None = None
        self.sig: tuple[Any, ...] | None = None
        self.since = 0.0
        self.samples = 0

    def stalled(self, tid: int, timeout: float) -> bool:
        sig = _progress(tid)
        now = time.monotonic()
        if tid != self.tid or sig is None or sig != self.sig:
            self.tid, self.sig, self.since, self.samples = tid, sig, now, 0
            return False
        self.samples += 1
        # Several samples: a long C call that holds the GIL lets us sample only once.
        return self.samples >= 10 and now - self.since >= timeout


def register(names: list[str], owner: threading.Thread, stall_timeout: float,
             events: list[dict[str, Any]]) -> dict[str, GateEntry]:
    """Gate each top-level package in ``names`` for ``owner``; install the patches.

    Packages already in ``sys.modules`` or already pending are not gated again (returned
    map lacks them).
    """
    entries: dict[str, GateEntry] = {}
    with _lock:
        for name in names:
            if name in sys.modules or name in _pending or name in entries:
                continue
            entries[name] = GateEntry(name, owner, stall_timeout, events)
        if entries:
            _pending.update(entries)
            _import_patch.install()
            _gcd_patch.install()
    return entries


def release(entry: GateEntry) -> None:
    """The owner is done with ``entry`` (imported or failed): let its waiters in."""
    with _lock:
        if _pending.get(entry.name) is entry:
            del _pending[entry.name]
        entry.done.set()
        if not _pending:
            _import_patch.uninstall()
            _gcd_patch.uninstall()


def pending() -> list[str]:
    """Top-level packages currently gated (for tests and diagnostics)."""
    return sorted(_pending)


def _after_fork_in_child() -> None:
    # The owner threads did not survive the fork: nothing will ever release their gates.
    global _lock
    _lock = threading.Lock()
    entries = list(_pending.values())
    _pending.clear()
    _waiting.clear()
    for entry in entries:
        entry.done = threading.Event()  # the old one's lock may be held by a lost thread
        entry.done.set()
    _import_patch.uninstall()
    _gcd_patch.uninstall()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
