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

The zygote (``procs/zygote.py``, ``_zygote_server.py``, ``_zygote_popen.py``,
``_zygote_candidates.py``) stands in for an interpreter's start and end, and for spawn's
``Popen``:

* ``threading._shutdown`` and ``atexit._run_exitfuncs`` (:func:`join_non_daemon_threads`,
  :func:`run_exit_handlers`): what the interpreter does at exit, in that order, for a child
  that ends with ``os._exit``; ``atexit._clear`` (:func:`clear_exit_handlers`) for a fork
  whose inherited handlers are not its own.
* ``subprocess._args_from_interpreter_flags`` (:func:`interpreter_flags`): the ``-X``/``-W``
  and other options that start an interpreter as this one was started.
* ``multiprocessing.popen_spawn_posix`` (:data:`SPAWN_POPEN_MODULE`) and its ``Popen``:
  ``__init__`` calls ``_launch(process_obj)``, which appends the resource tracker's fd to
  ``_fds``, pickles ``spawn.get_preparation_data(process_obj._name)`` and the process object
  under ``context.set_spawning_popen``, and sets ``pid``, ``sentinel`` and ``finalizer``;
  ``poll(flag)`` sets ``returncode`` (:func:`spawn_popen_subclass`, :func:`spawn_payload`,
  :func:`popen_fds`, :func:`set_popen_fds`, :func:`adopt_child`). ``spawn.spawn_main`` and
  ``spawn.get_executable`` (:func:`spawn_main`, :func:`spawn_executable`): a spawned child's
  entry (``-c ... --multiprocessing-fork``) and the interpreter spawn starts.
* ``os.environ``'s class ``os._Environ`` (:func:`environ_reads`): swapped for a subclass
  that sees reads by name; ``get``, ``in`` and ``os.getenv`` reach its ``__getitem__``
  through ``collections.abc``'s mixins, and a walk over the mapping is told by the caller's
  frame (``_collections_abc``'s view ``__iter__``, ``os``'s ``copy``).

Where an internal is missing, a function degrades as its docstring says (no wait-for edges,
no native id, no preload list) instead of raising, unless it says otherwise. Importing this
module imports nothing beyond ``os``, ``sys``, ``threading`` and ``contextlib``;
``multiprocessing``, ``atexit``, ``subprocess`` and ``runpy`` are imported by the functions that
need them.
"""

from __future__ import annotations

import contextlib
import os
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
    "SPAWN_POPEN_MODULE",
    "VERIFIED_ON",
    "adopt_child",
    "blocking_on",
    "caller_frame",
    "clear_exit_handlers",
    "current_frames",
    "environ_reads",
    "forkserver_pid",
    "forkserver_preload",
    "inheriting",
    "interpreter_flags",
    "join_non_daemon_threads",
    "lock_owner",
    "native_id",
    "popen_fds",
    "preparation_data_for_this_thread",
    "resolve_name",
    "run_exit_handlers",
    "run_module_as_main",
    "set_popen_fds",
    "spawn_executable",
    "spawn_main",
    "spawn_payload",
    "spawn_popen_subclass",
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


# --- the interpreter's exit, for a process that leaves with os._exit --------------------------


def clear_exit_handlers() -> None:
    """Drop every ``atexit`` handler registered so far (a fork's inherited ones)."""
    import atexit

    atexit._clear()  # type: ignore[attr-defined]


def run_exit_handlers() -> None:
    """Run the ``atexit`` handlers as the interpreter does at exit (last registered first)."""
    import atexit

    atexit._run_exitfuncs()  # type: ignore[attr-defined]


def join_non_daemon_threads() -> None:
    """Wait for the non-daemon threads, as the interpreter does before ``atexit``."""
    threading._shutdown()  # type: ignore[attr-defined]


def interpreter_flags() -> list[str]:
    """The command-line options (``-X``, ``-W``, ``-O``, ...) that start a Python as this one
    was started, as ``subprocess`` and ``multiprocessing`` pass them on."""
    import subprocess

    return list(subprocess._args_from_interpreter_flags())  # type: ignore[attr-defined]


# --- multiprocessing's spawn: its Popen and a spawned child's entry ---------------------------

SPAWN_POPEN_MODULE = "multiprocessing.popen_spawn_posix"


def spawn_popen_subclass(base: type, launch: Callable[[Any, Any, Callable[[Any], None]], None],
                         child_status: Callable[[Any], Any]) -> type:
    """A subclass of spawn's ``Popen`` (``base``, from :data:`SPAWN_POPEN_MODULE`).

    Its ``__init__`` calls ``launch(popen, process_obj, spawn_launch)`` where spawn's own
    ``_launch`` would run (``spawn_launch(process_obj)`` runs that). ``poll`` asks
    ``child_status(popen)`` first: None leaves it to spawn's ``poll``; otherwise an object
    whose ``code(block)`` gives the exit code (None: still running).
    """

    class Popen(base):  # type: ignore[misc, valid-type]
        def _launch(self, process_obj: Any) -> None:
            launch(self, process_obj, lambda obj: base._launch(self, obj))  # type: ignore[attr-defined]

        def poll(self, flag: int = os.WNOHANG) -> int | None:
            status = child_status(self)
            if status is None:
                return base.poll(self, flag)  # type: ignore[attr-defined, no-any-return]
            if self.returncode is None:
                self.returncode = status.code(block=flag == 0)
            return self.returncode  # type: ignore[no-any-return]

    return Popen


def popen_fds(popen: Any) -> list[int]:
    """The descriptors spawn's ``Popen`` passes to the child (the live list)."""
    return popen._fds  # type: ignore[no-any-return]


def set_popen_fds(popen: Any, fds: list[int]) -> None:
    popen._fds = fds


def spawn_payload(popen: Any, process_obj: Any) -> tuple[int, bytes]:
    """What spawn's ``_launch`` sends a child: ``(resource tracker fd, pickled preparation
    data + process object)``; the tracker fd is added to :func:`popen_fds`, as spawn does."""
    import io
    from multiprocessing import resource_tracker, spawn
    from multiprocessing.context import reduction, set_spawning_popen  # type: ignore[attr-defined]

    tracker_fd = resource_tracker.getfd()  # type: ignore[attr-defined]
    popen._fds.append(tracker_fd)
    prep_data = spawn.get_preparation_data(process_obj._name)
    fp = io.BytesIO()
    set_spawning_popen(popen)
    try:
        reduction.dump(prep_data, fp)
        reduction.dump(process_obj, fp)
    finally:
        set_spawning_popen(None)
    return tracker_fd, fp.getvalue()


def adopt_child(popen: Any, pid: int, sentinel: int, close: Callable[..., None],
                args: tuple[Any, ...]) -> None:
    """Make ``popen`` the handle of child ``pid``, as spawn's ``_launch`` ends: its
    ``sentinel`` and a finalizer calling ``close(*args)`` when the handle goes."""
    from multiprocessing import util

    popen.pid = pid
    popen.sentinel = sentinel
    popen.finalizer = util.Finalize(popen, close, args)


def spawn_main(pipe_handle: int, tracker_fd: int) -> None:
    """A spawned child's entry, as ``python -c '...spawn_main(...)' --multiprocessing-fork``
    runs it (``sys.argv`` and ``__main__`` set by the caller)."""
    from multiprocessing import spawn

    spawn.spawn_main(pipe_handle, tracker_fd=tracker_fd)  # type: ignore[call-arg]


def spawn_executable() -> str:
    """The interpreter spawn starts children with (``multiprocessing.set_executable``)."""
    from multiprocessing import spawn

    return os.fsdecode(spawn.get_executable())  # type: ignore[attr-defined]


# --- os.environ, watched -----------------------------------------------------------------------


@contextlib.contextmanager
def environ_reads(reads: dict[str, str | None]) -> Iterator[None]:
    """While the block runs, the first read of each variable by name (``os.environ[k]``,
    ``get``, ``in``, ``os.getenv``) puts its value then (None: not set) into ``reads``;
    walking the whole mapping (``items()``, ``values()``, ``copy()``) does not count."""
    base = type(os.environ)

    class Watching(base):  # type: ignore[misc, valid-type]
        def __getitem__(self, key: str) -> str:
            try:
                value = base.__getitem__(self, key)
            except KeyError:
                value = None
                raise
            finally:
                if (isinstance(key, str) and key not in reads
                        and not _walking(sys._getframe(1).f_code)):
                    reads[key] = value
            return value  # type: ignore[return-value]

    os.environ.__class__ = Watching
    try:
        yield
    finally:
        os.environ.__class__ = base


def _walking(code: Any) -> bool:
    """Is this ``os.environ[key]`` part of a walk over the whole mapping?"""
    name, where = code.co_name, code.co_filename  # "<frozen os>" when frozen (3.11+)
    return ((name == "__iter__" and where.endswith(("_collections_abc.py",
                                                    "<frozen _collections_abc>")))
            or (name == "copy" and where.endswith(("/os.py", "<frozen os>"))))
