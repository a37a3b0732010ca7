"""Start a StartupPlan's background work: import gate + preload, forkserver, prefetch.

Every step is best-effort: an exception is logged and traced, and the target starts as it
would without headstart. Order matters:

1. The import gate is installed (synchronously, microseconds) before the target's first
   import, then the preload thread starts.
2. Environment changes (``VLLM_WORKER_MULTIPROC_METHOD``) are applied before the forkserver
   is started, because its children inherit *its* environment.
3. Modules our own threads need are imported here, in the main thread, so no import of ours
   runs in a background thread while the target imports (two threads importing one
   package at once is the race :mod:`headstart.imports.gate` exists for).
"""

from __future__ import annotations

import contextlib
import os
import threading

from headstart._say import say
from headstart._struct import Struct
from headstart.trace import tracer

TYPE_CHECKING = False  # `typing` and `logging` cost milliseconds on the hot path
if TYPE_CHECKING:
    from typing import Any

    from headstart.plan import StartupPlan

__all__ = ["Started", "preload_now", "profile_exists", "start_background",
           "start_detached_prefetch"]



def _log(msg: str, *args: object) -> None:
    """Info log, importing ``logging`` only when something is said (off the hot path)."""
    import logging

    logging.getLogger(__name__).info(msg, *args)


class Started(Struct):
    """Handles of what was started (for tests and ``--verbose``)."""

    preload: Any
    forkserver: Any
    zygote: Any
    prefetch_thread: threading.Thread | None
    prefetches: list[Any]
    errors: list[str]

    FIELDS = (("preload", None), ("forkserver", None), ("zygote", None),
              ("prefetch_thread", None), ("prefetches", []), ("errors", []))


def _note_failure(started: Started, what: str, exc: BaseException) -> None:
    msg = f"{what} failed: {type(exc).__name__}: {exc}"
    started.errors.append(msg)
    _log("%s", msg)
    tracer.instant("error", what=what, error=msg)


def start_background(plan: StartupPlan) -> Started:
    """Start everything the plan asks for; returns at once, never raises."""
    started = Started()
    replaying = False
    imports = preload_now(plan)  # this process's; a forkserver's own preload stays
    # The helper replays the profile, or reads the model's whole files (and records a
    # profile meanwhile, unless that is off). From a helper process both stand back while
    # the target reads; a thread of ours could not tell its reads from the target's.
    helper_reads = plan.prefetch or (bool(plan.profile_key)
                                     and profile_exists(plan.profile_key))
    if helper_reads:
        # A startup profile is replayed by a helper process, started before any thread of
        # ours: thousands of small library reads from a thread of this process would wait
        # for the GIL behind the imports they are meant to run ahead of
        # (benchmarks/design_measurements.md). The helper checks the profile, falls back to the
        # whole-file plan when it is stale, and stops when this process exits.
        try:
            # the helper reads weights gently until the preloads are done (see settings)
            imports_r, imports_w = os.pipe2(os.O_CLOEXEC)
            try:
                start_detached_prefetch(plan, exec_helper=False, imports_fd=imports_r,
                                        close_in_helper=imports_w)
            except BaseException:
                os.close(imports_w)
                raise
            finally:
                os.close(imports_r)
            replaying = True
            tracer.instant("profile replay", cat="prefetch", key=plan.profile_key,
                           where="helper process")
        except Exception as exc:
            _note_failure(started, "profile replay", exc)
    if plan.zygote:
        _start_zygote(plan, started)  # before any thread of ours: it forks
    if imports:
        try:
            from headstart.imports.preload import preload

            started.preload = preload(list(imports), on_done=(
                (lambda: _signal_imports_done(imports_w)) if replaying else None))
        except Exception as exc:
            _note_failure(started, "preload", exc)
    if replaying and started.preload is None:
        _signal_imports_done(imports_w)  # nothing to wait for: full speed
    if plan.forkserver:
        try:
            # The prewarm thread needs these; import them here (point 3 above).
            import json  # noqa: F401
            import multiprocessing.forkserver
            import multiprocessing.spawn  # noqa: F401
            import socket  # noqa: F401

            from headstart.procs.forkserver import prewarm_forkserver

            # environ is applied before the forkserver starts: workers inherit *its* env.
            started.forkserver = prewarm_forkserver(
                list(plan.preload), start_method_env=plan.start_method_env,
                environ=plan.forkserver_env)
        except Exception as exc:
            _note_failure(started, "forkserver prewarm", exc)
    if (plan.prefetch or helper_reads) and not replaying:
        try:
            _start_prefetch_thread(plan, started)
        except Exception as exc:
            _note_failure(started, "prefetch", exc)
    return started


def _start_zygote(plan: StartupPlan, started: Started) -> None:
    try:
        from headstart.procs.launch import sys_path0
        from headstart.procs.zygote import start_zygote
        from headstart.settings import zygote_lessons, zygote_options

        opts = zygote_options()
        started.zygote = start_zygote(
            list(plan.zygote_preload), path0=sys_path0(plan.launch), env_from=plan.zygote_env,
            trace=os.path.abspath(plan.trace) if plan.trace else None, verbose=plan.verbose,
            wait=float(opts["wait"]), levels=int(opts["levels"]),
            learn_path=zygote_lessons(plan.profile_key or plan.argv))
        if started.zygote is None:
            _note_failure(started, "zygote", RuntimeError("threads already running"))
    except Exception as exc:
        _note_failure(started, "zygote", exc)


def preload_now(plan: StartupPlan) -> tuple[str, ...]:
    """The packages this process imports in the background: the plan's, but none where
    they are the adapter's default and the profile's library pages are resident (a warm
    start: the imports are CPU work a second thread cannot overlap, see profiles/probe.py).
    Packages asked for (``--preload``, ``HEADSTART_PRELOAD``) are always imported."""
    if not (plan.preload and plan.preload_default and plan.profile_key):
        return plan.preload
    try:
        from headstart.profiles.probe import libraries_resident

        warm = libraries_resident(plan.profile_key)
    except Exception:  # never harm the target: preload as before
        warm = False
    if not warm:
        return plan.preload
    tracer.instant("preload skipped", cat="import", reason="libraries resident")
    if plan.verbose:
        say("preload skipped: the profile's library pages are resident")
    return ()


def _signal_imports_done(fd: int) -> None:
    """Tell the replay helper the preloads are done: one byte, then close (idempotent)."""
    with contextlib.suppress(OSError):
        os.write(fd, b"1")
    with contextlib.suppress(OSError):
        os.close(fd)


def _start_prefetch_thread(plan: StartupPlan, started: Started) -> None:
    # Imported here, in the calling (main) thread: see the module docstring, point 3.
    from headstart.profiles.model_prefetch import prefetch_refs, replay_profile

    refs = [(plan.model, plan.revision), *plan.extra_refs] if plan.prefetch else []
    if plan.profile_key:
        from headstart.pagecache import budget, readahead  # noqa: F401  (point 3 above)
        from headstart.profiles.replay import replay  # noqa: F401
        from headstart.profiles.store import load_profile, validate  # noqa: F401

    def work() -> None:
        where = {"cache_dir": plan.cache_dir, "hub": plan.hub,
                 "on_handle": started.prefetches.append,
                 "on_error": lambda what, exc: _note_failure(started, f"prefetch of {what}", exc)}
        if plan.profile_key and replay_profile(plan.profile_key, refs, **where):
            return  # the profile covered the model too: no whole-file plan
        prefetch_refs(refs, **where)

    thread = threading.Thread(target=work, name="headstart-prefetch", daemon=True)
    thread.start()
    started.prefetch_thread = thread


def _records_profile(plan: StartupPlan) -> bool:
    """Whether a start without a profile records one (its helper decides when, see
    ``replay_helper``): a target with a model, unless ``HEADSTART_AUTO_RECORD=0``."""
    from headstart.settings import auto_record

    return bool(plan.profile_key) and plan.prefetch and auto_record()


def _open_recorder(plan: StartupPlan) -> dict | None:
    """On a start that records its first profile, as root: a fanotify group watching the
    filesystems of this interpreter's installation and the working folder, opened here so
    that the helper's recorder misses none of the target's opens (armed in the helper, on
    a cold disk, it listened only after torch's libraries were loaded). ~1 ms, ctypes and
    os only; None otherwise (the helper arms its own)."""
    if not (_records_profile(plan) and not profile_exists(plan.profile_key)):
        return None
    import sys
    import time

    from headstart.profiles.fanotify_fd import open_marked

    t_start_ns, t0 = time.time_ns(), time.monotonic()
    got = open_marked(["/", sys.prefix, os.getcwd()])
    if got is None:
        return None
    tracer.instant("recorder listening", cat="prefetch", where="headstart run")
    return {"fd": got[0], "devs": sorted(got[1]), "t0": t0, "t_start_ns": t_start_ns}


def _identity(plan: StartupPlan) -> dict | None:
    if not plan.profile_key:
        return None
    from headstart.profiles.key import profile_key

    return profile_key(plan)[1]


def profile_exists(key: str) -> bool:
    """Whether a startup profile is stored under ``key``: one stat in the calling thread (the
    helper reads and checks it)."""
    from headstart.profiles.key import profile_file

    try:
        return os.path.isfile(profile_file(key))
    except (OSError, ValueError):
        return False


def start_detached_prefetch(plan: StartupPlan, *, exec_helper: bool = True,
                            imports_fd: int | None = None,
                            close_in_helper: int | None = None) -> None:
    """For an exec'd target: prefetch in a helper process that outlives the exec.

    Double fork: the helper is not a child of the target (a server that reaps unknown
    children, or waits for all of them, never sees it). It watches the target's pid (ours,
    kept across exec) and stops when the target exits, so Ctrl-C leaves no reader behind.
    ``exec_helper=False`` (an in-process target's profile replay, called before any thread
    of ours exists): the helper is the forked copy itself, no new interpreter, so it starts
    reading ~0.1 s earlier, before the target's first imports fault the files in;
    ``imports_fd`` is then passed on to it (see ``replay_helper``) and
    ``close_in_helper`` (the pipe's write end) closed there.
    """
    import json
    import sys

    spec = {"refs": [(plan.model, plan.revision), *plan.extra_refs] if plan.prefetch else [],
            "cache_dir": plan.cache_dir, "hub": plan.hub, "parent": os.getpid(),
            "profile": plan.profile_key, "imports_fd": imports_fd,
            "verbose": bool(plan.verbose), "record": _records_profile(plan),
            "identity": _identity(plan), "command": list(plan.argv),
            # the same file: each writer merges what the other wrote (see trace.py)
            "trace": os.path.abspath(plan.trace) if plan.trace else None}
    # a forked helper inherits a recorder listening from before the target's first import
    spec["recorder"] = None if exec_helper else _open_recorder(plan)
    argv = [sys.executable, "-m", "headstart.profiles.replay_helper", json.dumps(spec)]
    from headstart.procs.launch import fork_deferring_signals

    try:
        pid, mask = fork_deferring_signals()
    except BaseException:
        if spec["recorder"]:
            os.close(spec["recorder"]["fd"])
        raise
    if pid != 0 and spec["recorder"]:
        os.close(spec["recorder"]["fd"])  # the helper's now: the target must not hold it
    if pid == 0:  # pragma: no cover - runs in the forked child
        try:
            import signal

            os.setsid()  # out of the terminal's group first: its Ctrl-C is the target's
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if os.fork() == 0:
                if close_in_helper is not None:
                    os.close(close_in_helper)
                devnull = os.open(os.devnull, os.O_RDWR)
                # with -v the helper keeps stderr to say what the replay did
                for fd in (0, 1) if plan.verbose else (0, 1, 2):
                    os.dup2(devnull, fd)
                if exec_helper:
                    os.execv(sys.executable, argv)
                from headstart.profiles import replay_helper

                replay_helper.main(argv[-1:])
                if spec["trace"]:
                    tracer.write(spec["trace"])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
