"""The CPython internals headstart relies on, behind one door.

Everything here is private to CPython (a leading underscore, or behaviour no document
promises) and may change in any release; the rest of headstart calls these functions and
touches none of it itself. Every entry was verified on CPython 3.10.13, 3.11.7, 3.12.1 and
3.13.0 (``VERIFIED_ON``) by ``tests/test_cpython_internals.py``, which runs each check on
this Python and on every other CPython 3.10-3.13 found under pyenv; the import-gate and
forkserver tests exercise the same calls end to end on the same interpreters.

* ``importlib._bootstrap._gcd_import`` (:data:`GCD_IMPORT`): what ``importlib.import_module``
  and ``importlib.__import__`` call, with the relative part already resolved; the import
  gate replaces it. ``_bootstrap._resolve_name`` (:func:`resolve_name`) for relative names.
* ``importlib._bootstrap._blocking_on`` (:func:`blocking_on`, :func:`lock_owner`): the module
  locks a thread is acquiring, for the gate's wait-for graph: a dict of one lock per thread
  on 3.10/3.11, a weak dict of lists of locks on 3.12/3.13; a lock's ``owner`` is a thread id.
* ``threading._active`` (:func:`native_id`): a Python thread's kernel thread id.
* ``sys._current_frames``, ``sys._getframe`` (:func:`current_frames`, :func:`caller_frame`):
  documented, but CPython's own: the gate's stall probe and caller check.
* ``multiprocessing.process.current_process()._inheriting`` (:func:`inheriting`): set while a
  spawned child unpickles its process object and re-imports the parent's ``__main__``.
* ``multiprocessing.forkserver._forkserver``, its ``_forkserver_pid`` and
  ``_preload_modules`` (:func:`forkserver_pid`, :func:`forkserver_preload`).
* ``multiprocessing.spawn.get_preparation_data``, patched for one thread
  (:func:`preparation_data_for_this_thread`): ``forkserver.ensure_running()`` calls it when a
  preload list is set, and the original fixes the global start method as a side effect.
* ``runpy._run_module_as_main`` (:func:`run_module_as_main`): what ``python -m`` calls.

Where an internal is missing, a function degrades as its docstring says (no wait-for edges,
no native id, no preload list) instead of raising, unless it says otherwise. Importing this
module imports nothing beyond ``sys``, ``threading`` and ``contextlib``; ``multiprocessing``
and ``runpy`` are imported by the functions that need them.
"""

from __future__ import annotations

import contextlib
import sys
import threading

try:  # the same module object as importlib._bootstrap
    import _frozen_importlib as _bootstrap
except ImportError:  # pragma: no cover - every CPython has it
    import importlib._bootstrap as _bootstrap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType
    from typing import Any

__all__ = [
    "GCD_IMPORT",
    "VERIFIED_ON",
    "blocking_on",
    "caller_frame",
    "current_frames",
    "forkserver_pid",
    "forkserver_preload",
    "inheriting",
    "lock_owner",
    "native_id",
    "preparation_data_for_this_thread",
    "resolve_name",
    "run_module_as_main",
]

VERIFIED_ON = ("3.10.13", "3.11.7", "3.12.1", "3.13.0")

# (owner, attribute) of the function ``importlib.import_module`` and ``importlib.__import__``
# call, including references to it bound before anyone patched it: what the gate replaces.
GCD_IMPORT = (_bootstrap, "_gcd_import")


def resolve_name(name: str, package: Any, level: int) -> str:
    """The absolute name of a relative import (raises as the import system would)."""
    return _bootstrap._resolve_name(name, package, level)  # type: ignore[attr-defined]


def blocking_on(tid: int) -> list[Any]:
    """Module locks thread ``tid`` is acquiring now (3.10/3.11: one lock; 3.12+: a list);
    [] when none, when CPython keeps no such table, or when it changed under us (3.12+:
    a weak dict another thread mutates; ask again on the next slice)."""
    table = getattr(_bootstrap, "_blocking_on", None)
    if table is None:
        return []
    try:
        value = table.get(tid)
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]
    except Exception:
        return []


def lock_owner(lock: Any) -> int | None:
    """The thread id holding a module lock from :func:`blocking_on`; None when free."""
    return getattr(lock, "owner", None)


def native_id(ident: int) -> int | None:
    """The kernel thread id of the Python thread ``ident``; None when it is not (or no
    longer) a thread ``threading`` knows."""
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    return getattr(thread, "native_id", None)


def current_frames() -> dict[int, FrameType]:
    """The topmost frame of every thread, by ident (``sys._current_frames``)."""
    return sys._current_frames()


def caller_frame(depth: int) -> FrameType:
    """The frame ``depth`` calls above the caller of this function (``sys._getframe``)."""
    return sys._getframe(depth + 1)


def inheriting() -> bool:
    """True in a ``multiprocessing`` child that is still bootstrapping (unpickling its
    process object, re-importing the parent's ``__main__``)."""
    import multiprocessing.process

    return bool(getattr(multiprocessing.process.current_process(), "_inheriting", False))


def _forkserver() -> Any:
    from multiprocessing import forkserver

    return forkserver._forkserver  # type: ignore[attr-defined]


def forkserver_pid() -> int | None:
    """The pid of this process's ``multiprocessing`` forkserver; None when none runs."""
    return getattr(_forkserver(), "_forkserver_pid", None)


def forkserver_preload() -> list[str]:
    """The preload list set for this process's forkserver (``set_forkserver_preload``)."""
    return list(getattr(_forkserver(), "_preload_modules", None) or [])


@contextlib.contextmanager
def preparation_data_for_this_thread(make: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """While the block runs, ``multiprocessing.spawn.get_preparation_data()`` called from
    this thread returns ``make()`` (``forkserver.ensure_running()`` calls it when a preload
    list is set); other threads call straight through to the original. Restored on exit
    unless someone replaced it meanwhile."""
    from multiprocessing import spawn

    original = spawn.get_preparation_data
    me = threading.get_ident()

    def get_preparation_data(name: str) -> dict[str, Any]:
        if threading.get_ident() != me:
            return original(name)
        return make()

    spawn.get_preparation_data = get_preparation_data
    try:
        yield
    finally:
        if spawn.get_preparation_data is get_preparation_data:
            spawn.get_preparation_data = original


def run_module_as_main(module: str) -> None:
    """Run ``module`` as ``python -m`` does: in ``__main__``'s namespace, ``sys.argv[0]``
    set to its file. Its exceptions propagate unchanged."""
    import runpy

    runpy._run_module_as_main(module, alter_argv=True)  # type: ignore[attr-defined]
