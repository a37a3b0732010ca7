"""Record what a cold start reads: ``headstart record [READY-OPTIONS] -- CMD``.

How, and why this combination (measured on ``transformers serve``, see README):

1. The model's files and the target's Python installation are evicted from the page cache
   (the same eviction and environment discovery as ``headstart bench`` cold runs).
2. **Order** -- :class:`~headstart.profiles.fanotify.OpenRecorder` (root): the first open of
   every regular file by the target's process tree, including exec, dlopen and
   mmap-only files. Without root, :class:`~headstart.profiles.recorders.MapsSampler` sees
   only mapped files (shared libraries, mmap-ed weights); the other resident files of the
   Python installation follow in path order, which replays them, but late.
3. **Ranges** -- a residency diff (:mod:`headstart.profiles.capture`): when the target is
   ready, the page-granular ``mincore`` map of every file in step 2 (and, without root,
   every file of the Python installation and the model) gives the byte ranges that are
   resident (:func:`~headstart.pagecache.residency.resident_runs`). The files started
   cold, so these are the pages the startup read (its reads plus the kernel's readahead,
   which is what a cold start pays for anyway).
4. **Touched pages** -- for files the tree still maps at readiness (shared libraries, and
   weights a loader keeps mapped), only the pages its page tables show as present (plus the
   first 64 KiB, read with ``read()``) are kept: residency there is inflated by read-around
   (:mod:`headstart.profiles.pagemap`); files no longer mapped keep their residency.
5. **Loader order** -- the weight files' page maps are sampled every 50 ms while the
   target starts; each 4 MiB chunk is replayed in the order it first became resident
   (:mod:`headstart.profiles.weights`, :mod:`headstart.profiles.layout`).

What each part misses:

* fanotify: byte ranges (notification events carry none); files opened by a process that
  exited before its event was read, or that left the tree (double fork); it needs root.
* ``/proc/PID/maps`` sampling (no root): every file that is read and closed without being
  mapped (``.py``, ``.pyc``, JSON, tokenizers) -- those come from the residency scan of
  the Python installation and the model, in path order, not first-touch order -- and
  mappings shorter than the 10 ms sampling period.
* Python audit hooks (considered, not used): they see ``open`` of Python code only, not
  ``dlopen``/``mmap`` or child processes that are not Python, and need code injected
  into the target (sitecustomize), which changes what it imports.
* Residency diff: pages evicted again before readiness, pages other processes read
  meanwhile, and files outside the evicted set (recorded with every resident page), see
  :mod:`headstart.profiles.capture`.
* Pagemap trimming: pages of processes that exited before readiness, pages unmapped again.
* Loader order: order inside a 4 MiB chunk, and reads faster than the 50 ms sampling.

Files the tree *wrote* during startup (mtime or ctime changed) are left out: they are
outputs, not inputs (on a first run that includes freshly written ``__pycache__``).

This module is the orchestration: it runs the target itself (``bench.runner.run_once``)
and calls :func:`~headstart.profiles.capture.capture` the moment it is ready.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from headstart.pagecache.residency import resident_runs
from headstart.profiles.store import Profile, dist_names

if TYPE_CHECKING:
    from headstart.profiles.capture import Captured

# resident_runs lives in headstart.pagecache.residency; still importable from here.
__all__ = ["RecordResult", "record_startup", "resident_runs"]


@dataclass
class RecordResult:
    """The outcome of :func:`record_startup` (what `headstart record` saves and prints)."""

    profile: Profile | None
    run: object  # headstart.bench.runner.RunResult
    path: str | None = None
    notes: list[str] = field(default_factory=list)


class _ReadyHook:
    """Wraps a readiness probe: captures the recording the moment the target is ready,
    before the bench runner tears the process tree down (shutdown reads are not startup)."""

    def __init__(self, probe, on_ready: Callable[[], None]) -> None:
        self._probe = probe
        self._on_ready = on_ready
        self.waits_for_exit = probe.waits_for_exit
        self.kind = probe.kind

    def start(self, stdout_path: str, stderr_path: str) -> None:
        self._probe.start(stdout_path, stderr_path)

    def check(self, deadline: float):
        hit = self._probe.check(deadline)
        if hit is not None:
            self._on_ready()
        return hit

    def port(self):
        return self._probe.port()

    def describe(self) -> dict:
        return self._probe.describe()


@dataclass
class _Target:
    """What the recording needs to know about the command before it runs."""

    key: str
    identity: dict
    snapshot: object | None  # headstart.models.Snapshot
    weights: set[str]  # real paths of the model's weight files
    interp: str | None
    pyenv: object | None  # headstart.bench.environment.PythonEnvironment
    env_roots: list[str]  # the target's Python installation
    site_dirs: list[str]
    extra: list[str]  # --evict paths
    evict_roots: list[str] = field(default_factory=list)

    def mark_paths(self) -> list[str]:
        """Paths whose filesystems fanotify marks."""
        out = ["/", *self.evict_roots[:1], *self.env_roots, os.getcwd()]
        if self.snapshot:
            out += [self.snapshot.root, *sorted(self.weights)[:1]]
        return out

    def scan_paths(self) -> list[str]:
        """What the maps recorder's residency scan covers beyond the files it saw."""
        files = [f.real_path for f in self.snapshot.files] if self.snapshot else []
        return [*self.env_roots, *self.extra, *files]


def _target(cmd: list[str], model: str | None, revision: str | None, cache_dir: str | None,
            hub: str | None, extra_evict: list[str] | None, evict_env: bool,
            notes: list[str]) -> _Target:
    from headstart.bench.environment import find_interpreter, python_environment
    from headstart.plan import RunOptions, build_plan
    from headstart.profiles.key import profile_key

    plan = build_plan(RunOptions(model=model, revision=revision, cache_dir=cache_dir, hub=hub),
                      cmd)
    key, identity = profile_key(plan)
    snapshot = None
    if plan.model:
        try:
            from headstart.models.resolve import resolve_model

            snapshot = resolve_model(plan.model, revision=plan.revision,
                                     cache_dir=plan.cache_dir, hub=plan.hub)
        except Exception as exc:
            notes.append(f"model {plan.model} not resolved ({exc}); recording without it")
    interp = find_interpreter(cmd)
    pyenv = python_environment(interp) if interp else None
    t = _Target(key=key, identity=identity, snapshot=snapshot,
                weights={f.real_path for f in snapshot.weight_files} if snapshot else set(),
                interp=interp, pyenv=pyenv, env_roots=pyenv.evict_paths() if pyenv else [],
                site_dirs=[p for p in (pyenv.site_packages if pyenv else []) if os.path.isdir(p)],
                extra=[os.path.abspath(p) for p in (extra_evict or [])])
    t.evict_roots = list(t.env_roots) if evict_env else []
    if snapshot:
        t.evict_roots += [f.real_path for f in snapshot.files]
    t.evict_roots += t.extra
    return t


def _evict(roots: list[str], notes: list[str]) -> int:
    """Evict ``roots`` as a bench's cold run does; the bytes that stayed resident (how many,
    and the largest such file and why, in ``notes``)."""
    from headstart.bench.harness import evict_checked

    if not roots:
        return 0
    info = evict_checked(roots)
    notes.append(f"evicted {info['files']} files, {info['resident_bytes']} of "
                 f"{info['total_bytes']} bytes stayed resident")
    if info["stayed"]:
        top = info["stayed"][0]
        notes.append(f"most of it: {top['path']}, {top['resident_bytes']} bytes "
                     f"({'; '.join(top['reasons'])})")
    return info["resident_bytes"]


def record_startup(
    cmd: list[str],
    probe,
    run_dir: str,
    *,
    model: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    hub: str | None = None,
    extra_evict: list[str] | None = None,
    evict_env: bool = True,
    trim_mapped: bool = True,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    mechanism: str = "auto",
    save: bool = True,
    say: Callable[[str], None] = lambda _m: None,
) -> RecordResult:
    """Run ``cmd`` cold until ``probe`` says ready and store what it read as a profile.

    ``mechanism``: ``"fanotify"`` (root), ``"maps"`` (fallback) or ``"auto"``.
    ``trim_mapped``: keep only the pages of mapped files that the tree touched
    (:mod:`headstart.profiles.pagemap`). ``evict_env=False`` keeps the target's Python
    installation cached (its files are then recorded with every resident page, see the
    module docstring).
    Returns the profile (None when the run never got ready) and the bench RunResult.
    """
    from headstart.bench.runner import run_once
    from headstart.profiles.capture import capture
    from headstart.profiles.recorders import make_recorder
    from headstart.profiles.weights import WeightSampler

    notes: list[str] = []
    target = _target(cmd, model, revision, cache_dir, hub, extra_evict, evict_env, notes)
    stayed = _evict(target.evict_roots, notes)
    recorder = make_recorder(mechanism, target.mark_paths())
    if recorder.mechanism == "maps":
        notes.append("no fanotify (needs root): file order from /proc/PID/maps sampling, "
                     "unmapped files in path order")
    scan = target.scan_paths() if recorder.mechanism == "maps" else []
    captured: list[Captured] = []
    t_start = time.time_ns()
    sampler = WeightSampler(sorted(target.weights))

    def on_ready() -> None:
        if not captured:
            captured.append(capture(os.getpid(), recorder, sampler, weights=target.weights,
                                    t_start_ns=t_start, extra_paths=scan,
                                    trim_mapped=trim_mapped))

    recorder.start()
    sampler.start()
    try:
        say(f"recording {' '.join(cmd)} (cold, {recorder.mechanism})")
        result = run_once(list(cmd), _ReadyHook(probe, on_ready), run_dir, timeout=timeout,
                          env=env)
        if result.ok:
            on_ready()
    finally:
        if not captured:
            recorder.stop()
            sampler.stop()
    if not result.ok:
        return RecordResult(None, result, notes=[*notes, f"not ready: {result.reason}"])
    return _finish(captured[0], target, cmd, result, save, notes, stayed)


def _finish(captured: Captured, target: _Target, cmd: list[str], result, save: bool,
            notes: list[str], stayed: int = 0) -> RecordResult:
    from headstart.profiles.capture import build_profile
    from headstart.profiles.doubt import recording_doubt

    snap = target.snapshot
    profile = build_profile(
        captured, key=target.key, identity=target.identity, command=list(cmd),
        snapshot={"root": snap.root, "commit": snap.commit, "source": snap.source}
        if snap else None,
        dists=dist_names(target.site_dirs), ready_seconds=result.seconds or 0.0,
        evicted_roots=target.evict_roots,
        python=target.pyenv.version if target.pyenv else None, interpreter=target.interp)
    profile.stats["doubt"] = recording_doubt(profile.stats, stayed_resident=stayed)
    path = None
    if save:
        from headstart.profiles.store import save_profile

        path = save_profile(profile)
    return RecordResult(profile, result, path=path, notes=notes)
