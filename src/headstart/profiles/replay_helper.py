"""``python -m headstart.profiles.replay_helper SPEC``: the replay helper, a process that
replays a target's startup profile or prefetches its model's whole files (and records a
profile meanwhile); detached for exec'd targets, a fork for in-process ones.

SPEC is JSON: ``{"refs": [[ref, revision], ...], "cache_dir": ..., "hub": ..., "parent": pid}``,
plus ``"profile": KEY`` and, for a helper forked from an in-process target, ``"imports_fd"``
(the read end of a pipe the target writes to when its preloads are done).
Stops early when ``parent`` (the exec'd target) is gone. Never prints; exit status 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from headstart._say import say as say_on_stderr

__all__ = ["main"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fd_signal(fd: int):
    """``wait(timeout) -> bool``: True once ``fd`` (a pipe the target writes to, or closes,
    when its imports are done) is readable; stays True after."""
    import select

    fired = False

    def wait(timeout: float) -> bool:
        nonlocal fired
        if not fired:
            try:
                fired = bool(select.select([fd], [], [], timeout)[0])
            except (OSError, ValueError):
                fired = True  # no signal to wait for: full speed
        return fired

    return wait


def _lower_cpu_priority(target: int) -> None:
    """The target comes first: this process only runs ahead of it, at nice 10, and a warm
    start costs it one residency check (benchmarks/design_measurements.md). A replay drops
    to nice 10 only once it has asked for the profile's libraries (``lead_cpu`` of
    :func:`headstart.settings.replay_options`): thousands of small files that need a little
    CPU right when the target and its zygote import on every core, and behind which the disk
    stood idle at nice 10; the target waits for those libraries then anyway. A nice value
    only weighs against threads of the same autogroup (``kernel.sched_autogroup_enabled``,
    on by default in most distributions' kernels): the helper left the target's session,
    so it got an autogroup of its own at nice 0, an equal share of the CPU with the target
    whatever its threads' nice. That group holds nothing but this helper: it gets nice 10
    as well."""
    from headstart.trace import tracer
    from headstart.watch import procfs

    with contextlib.suppress(OSError):
        os.nice(10)
    with contextlib.suppress(OSError):
        if os.getsid(0) != os.getsid(target):
            procfs.set_autogroup_nice(10)
    tracer.instant("helper niced", cat="prefetch", nice=os.getpriority(os.PRIO_PROCESS, 0))


def _once(fn):
    """``fn`` as a callable that runs it the first time only."""
    done = []

    def call() -> None:
        if not done:
            done.append(True)
            fn()

    return call


def _lower_io_priority() -> None:
    """The replay's reads go after the target's where the disk's scheduler orders by I/O
    class (``HEADSTART_REPLAY_IOPRIO``: ``low`` best-effort level 7, the default; ``idle``;
    ``none``). A cgroup throttle queues before the scheduler, so there it changes nothing;
    ``idle`` can make a target that faults a page our read holds wait for the aging of the
    idle queue, which is why it is not the default."""
    from headstart.pagecache import syscalls
    from headstart.settings import replay_options

    choice = replay_options()["ioprio"]
    with contextlib.suppress(OSError):
        if choice == "low":
            syscalls.set_io_priority(syscalls.IOPRIO_CLASS_BE, 7)
        elif choice == "idle":
            syscalls.set_io_priority(syscalls.IOPRIO_CLASS_IDLE)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    parent = int(spec["parent"])
    key = spec.get("profile")
    why, profile = _why_record(key, bool(spec.get("record"))) if key else (None, None)
    # A start that records: listen first, at the target's priority (unless headstart run
    # already opened the group). The target imports meanwhile, and what it opens before the
    # recorder listens is lost unless still mapped at readiness (a recorder armed after this
    # helper's own imports, on a cold disk and at nice 10, missed the first 1.8 s: the
    # stdlib and all of torch's libraries).
    group = spec.get("recorder")  # a fanotify group headstart run opened for us
    if key and why is not None and spec.get("record"):
        armed = _arm(parent, group)
    else:
        armed = None
        if group:
            with contextlib.suppress(OSError):
                os.close(int(group["fd"]))
    from headstart.profiles.model_prefetch import prefetch_refs, replay_profile
    from headstart.settings import replay_options

    replaying = bool(key) and why is None
    lower_cpu_priority = _once(lambda: _lower_cpu_priority(parent))
    if not replaying or replay_options()["lead_cpu"] != "target":
        lower_cpu_priority()
    _lower_io_priority()
    if spec.get("trace"):
        import atexit

        from headstart.trace import tracer

        atexit.register(tracer.write, spec["trace"])
    refs = [tuple(r) for r in spec["refs"]]
    where = {"cache_dir": spec.get("cache_dir"), "hub": spec.get("hub") or "auto",
             "keep_going": lambda: _alive(parent)}
    imports_fd = spec.get("imports_fd")
    imports_done = _fd_signal(imports_fd) if isinstance(imports_fd, int) else None
    # the target's stderr, kept open for the helper only with -v
    say = say_on_stderr if spec.get("verbose") else (lambda _m: None)
    if replaying and replay_profile(
            key, refs, imports_done=imports_done, target=parent, profile=profile,
            on_coverage=lambda cov: say(cov.describe()), after_lead=lower_cpu_priority,
            **where):
        lower_cpu_priority()
        return 0
    lower_cpu_priority()
    recording = None
    if key and spec.get("record"):
        recording = _record_in_background(spec, refs, why or "the profile was not usable",
                                          where, say, armed)
    from headstart.watch.tree_io import TreeReads

    reads = TreeReads(parent)
    reads.start()
    prefetch_refs(refs, target_reads=reads, imports_done=imports_done,
                  on_error=lambda ref, exc: say(f"prefetch of {ref} not done: "
                                                f"{type(exc).__name__}: {exc}"), **where)
    if recording is not None:
        recording.join()
    return 0


def _why_record(key: str, records: bool = True):
    """Why this start records a new profile instead of replaying (none stored yet, the
    last replayed start found it poor, see :mod:`headstart.profiles.coverage`, or, when it
    ``records``, its recording was odd, see :mod:`headstart.profiles.doubt`: with
    recording off, an odd profile still beats none) or None; and the profile when it was
    loaded to tell (the replay uses it, not read twice)."""
    from headstart.profiles.coverage import rerecord_reason
    from headstart.profiles.doubt import distrusted
    from headstart.profiles.key import profile_file
    from headstart.profiles.store import load_profile

    if not os.path.isfile(profile_file(key)):
        return "no profile yet", None
    reason = rerecord_reason(key)
    if reason or not records:
        return reason, None
    profile = load_profile(key)
    return (distrusted(profile.stats) if profile is not None else None), profile


def _arm(target: int, group: dict | None):
    """The recorder, listening (``autorecord.arm``, adopting ``group`` when given); None
    when it cannot start (the recording then tries again, and says why)."""
    try:
        from headstart.profiles.autorecord import arm

        return arm(target, adopt=group)
    except Exception:
        if group:
            with contextlib.suppress(OSError):
                os.close(int(group["fd"]))
        return None


def _record_in_background(spec: dict, refs: list, why: str, where: dict, say, armed=None):
    """Start recording this start's profile in a thread of this helper (the target is not
    ours: it is watched by pid)."""
    import threading

    from headstart.profiles.autorecord import record_live

    def work() -> None:
        snapshot = None
        if refs:
            from headstart.models.resolve import resolve_model

            try:
                snapshot = resolve_model(refs[0][0], revision=refs[0][1],
                                         cache_dir=where["cache_dir"], hub=where["hub"])
            except Exception as exc:  # recorded without the model: its files are libraries
                say(f"recording without the model ({exc})")
        record_live(int(spec["parent"]), key=spec["profile"], identity=spec["identity"],
                    command=list(spec.get("command") or []), snapshot=snapshot,
                    keep_going=where["keep_going"], say=say, armed=armed, because=why)

    say(f"recording a startup profile during this start ({why})")
    thread = threading.Thread(target=work, name="headstart-record", daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
