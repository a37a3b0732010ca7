"""Replay a startup profile: read its ranges in first-touch order, libraries first.

The library ranges (interpreter, shared libraries, ``.py``/``.pyc``, sidecars) in the
order the process tree first opened them, then the weight ranges in the order the loader
made them resident, as one ordered stream. The profile's tail (the read-around of mapped
libraries that the recording's page tables did not show touched) is left out unless
``HEADSTART_REPLAY_TAIL`` places it (:func:`stream`).

By default the stream goes to :func:`headstart.pagecache.readahead.readahead`: the kernel
reads, one thread submits and keeps a bounded window in flight. ``HEADSTART_REPLAY_METHOD=
engine`` (or a device whose readahead advice does nothing) uses the page-cache engine's
reader threads instead: one ordered queue when ``HEADSTART_PROFILE_WORKERS=LIB,WEIGHTS``
are equal (the default), else two phases.

Only recorded ranges are read (resident ones are skipped), so nothing that startup does not
read is read. Whether the whole profile is already resident (a warm start) is asked once,
before validation, by :func:`headstart.profiles.model_prefetch.replay_profile`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from headstart.pagecache.ranges import Range
from headstart.profiles.store import Validated
from headstart.trace import tracer

__all__ = ["looks_resident", "missing_bytes", "readahead_by_options", "replay", "stream",
           "yield_policy"]

log = logging.getLogger(__name__)


def looks_resident(validated: Validated, sample: int = 64) -> bool:
    """True when every weight range and ``sample`` library ranges spread over the profile
    are fully cached: a warm start, where walking thousands of files would only take CPU
    from the target. ~70 cachestat calls; False when anything is missing or unknown
    (no cachestat: mincore is not asked, it cannot always be trusted)."""
    gap = missing_bytes(validated, sample)
    return gap is not None and gap[0] == 0


def missing_bytes(validated: Validated, sample: int = 64) -> tuple[int, int] | None:
    """``(missing, checked)``: bytes not cached of every weight range and ``sample`` library
    ranges spread over the profile (what :func:`looks_resident` checks), and the bytes
    checked; None when residency is unknown."""
    from headstart.pagecache.residency import file_residency

    libs = validated.libraries
    step = max(1, len(libs) // sample)
    missing = checked = 0
    for r in [*validated.weights, *libs[::step]]:
        f = file_residency(r.path, r.offset, r.length)
        if f.error is not None or not f.exact:
            return None
        missing += max(0, f.size - f.resident)
        checked += f.size
    return missing, checked


def stream(validated: Validated, tail: str = "off") -> tuple[list[Range], int]:
    """``(ranges, lead)``: every range to replay in order, and how many of them come before
    the weights (read at once, at full window: the target waits for them right then).
    ``tail`` (``settings.TAIL_CHOICES``) places the profile's tail: ``inline``, each
    library file's tail merged with its touched pages in offset order, at the file's place;
    ``before`` the weights; ``after`` them (then paced like the weights); ``off``."""
    libs, weights, rest = validated.libraries, validated.weights, validated.tail
    if tail == "inline":
        libs = _inline(libs, rest)
    elif tail == "before":
        libs = libs + rest
    elif tail == "after":
        weights = weights + rest
    return libs + weights, len(libs)


def _inline(libs: list[Range], tail: list[Range]) -> list[Range]:
    """``libs`` with each file's ``tail`` ranges merged in, in offset order, where the file
    first appears; tail files that ``libs`` lacks follow."""
    by_path: dict[str, list[Range]] = {}
    for r in tail:
        by_path.setdefault(r.path, []).append(r)
    order: dict[str, list[Range]] = {}
    for r in libs:
        order.setdefault(r.path, []).append(r)
    out: list[Range] = []
    for path, own in order.items():
        out += sorted(own + by_path.pop(path, []), key=lambda r: r.offset)
    for extra in by_path.values():
        out += extra
    return out


def replay(validated: Validated, *, library_workers: int | None = None,
           weight_workers: int | None = None,
           on_handle: Callable[[Any], None] = lambda _h: None,
           cancelled: Callable[[], bool] = lambda: False,
           imports_done: Callable[[float], bool] | None = None,
           target_reads: Any = None,
           after_lead: Callable[[], object] | None = None) -> list[Any]:
    """Read the profile's ranges, blocking the calling (background) thread until done.

    ``target_reads`` (a :class:`headstart.watch.tree_io.TreeReads` of the target's tree):
    a readahead replay stands back while the target reads from the disk itself, so that
    its reads wait behind what is in flight only (``HEADSTART_REPLAY_YIELD=0``: it does
    not).

    ``cancelled()`` is polled between chunks (readahead) or every 0.2 s (engine); when it
    returns True the reads stop.

    ``imports_done(timeout)``: waits up to ``timeout`` s for the target's imports to finish
    (True once they have); until then a readahead replay reads weights at the capped
    ``early_rate``. None: no such signal, full speed throughout.

    ``after_lead()`` is called once the library ranges (the lead of :func:`stream`) were all
    asked for (a readahead replay), or at once (the engine's).

    ``on_handle`` gets each handle as it starts (``.stats``; engine handles also cancel).
    Never raises for what the file system does (the readers record it in stats).
    """
    from headstart.pagecache.engine import prefetch
    from headstart.settings import profile_workers, replay_options

    opts = replay_options()
    if opts["method"] == "readahead" and not (library_workers or weight_workers):
        yield_to = yield_policy(opts, target_reads, imports_done)
        handle = _readahead(validated, opts, cancelled, imports_done, yield_to,
                            touch=target_reads is not None, after_lead=after_lead)
        if handle is not None:
            on_handle(handle)
            return [handle]
    if after_lead is not None:
        after_lead()
    lib_w, weight_w = profile_workers()
    lib_w = library_workers or lib_w
    weight_w = weight_workers or weight_w
    handles = []
    ranges, lead = stream(validated, str(opts["tail"]))
    phases = [("libraries", ranges[:lead], lib_w), ("weights", ranges[lead:], weight_w)]
    if lib_w == weight_w:  # one queue: no idle disk between the phases
        phases = [("all", ranges, lib_w)]
    for name, part, workers in phases:
        if not part or cancelled():
            continue
        with tracer.span(f"replay {name}", cat="prefetch", ranges=len(part),
                         workers=workers) as info:
            handle = prefetch(part, workers=workers)
            on_handle(handle)
            handles.append(handle)
            while not handle.wait(0.2):
                if cancelled():
                    handle.cancel()
            st = handle.stats
            info["bytes_read"] = st.bytes_read
            info["bytes_skipped_resident"] = st.bytes_skipped_resident
        log.info("profile replay of %s: %s", name, handle.stats)
    return handles


def yield_policy(opts: dict, target_reads: Any,
                 imports_done: Callable[[float], bool] | None) -> Callable[[], bool] | None:
    """The ``yield_to`` of a readahead pass by ``opts["yield"]``: the target's tree reading
    from the disk (``always``), that only until ``imports_done`` fires (``imports``), or
    None (``never``, or no target to watch)."""
    mode = opts["yield"]
    if target_reads is None or mode == "never":
        return None
    if mode == "imports" and imports_done is not None:
        return lambda: not imports_done(0.0) and target_reads.busy()
    return target_reads.busy


class ReadaheadReplay:
    """What a ``readahead`` replay did: ``stats`` (a PrefetchStats), already finished."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self.done = True

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def cancel(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"ReadaheadReplay({self.stats})"


def readahead_by_options(ranges: list, opts: dict, *, slow_from: int,
                         cancelled: Callable[[], bool],
                         imports_done: Callable[[float], bool] | None,
                         yield_to: Callable[[], bool] | None, stats: Any,
                         touch: bool = False,
                         after_lead: Callable[[], object] | None = None) -> None:
    """:func:`headstart.pagecache.readahead.readahead` of ``ranges`` with the settings of
    ``replay_options()`` (``opts``) and the memory budget; raises ``ReadaheadUnsupported``
    like it. One call for the profile replay and the whole-file prefetch of a helper.

    ``touch``: the reads are for another process (a helper's), so the weights may be touched
    once resident (:mod:`headstart.pagecache.touch`) where ``opts["touch"]`` says so; never
    in the target's own process, whose imports would wait for the toucher."""
    from headstart.pagecache.budget import resolve_budget
    from headstart.pagecache.readahead import readahead

    try:
        budget = resolve_budget("auto")
    except Exception as exc:  # no budget known: read what was asked for
        log.debug("readahead budget unknown: %r", exc)
        budget = None
    readahead(ranges, window=int(opts["window"]), budget=budget, cancelled=cancelled,
              stats=stats, slow_from=slow_from, slow_rate=float(opts["early_rate"]),
              released=imports_done,
              early_window=int(opts["early_window"]) if imports_done is not None else None,
              yield_to=yield_to, touch=touch and bool(opts["touch"]), after_lead=after_lead)


def _readahead(validated: Validated, opts: dict,
               cancelled: Callable[[], bool],
               imports_done: Callable[[float], bool] | None,
               yield_to: Callable[[], bool] | None, touch: bool = False,
               after_lead: Callable[[], object] | None = None) -> ReadaheadReplay | None:
    """The readahead replay; None when the device does not honour the advice (the caller
    then uses the engine, which skips whatever became resident meanwhile)."""
    from headstart.errors import ReadaheadUnsupported
    from headstart.pagecache.engine import PrefetchStats

    ranges, lead = stream(validated, str(opts["tail"]))
    stats = PrefetchStats()
    early_window = int(opts["early_window"]) if imports_done is not None else None
    with tracer.span("replay readahead", cat="prefetch", ranges=len(ranges),
                     window=int(opts["window"]), early_window=early_window,
                     yields=yield_to is not None) as info:
        try:
            readahead_by_options(ranges, opts, slow_from=lead,
                                 cancelled=cancelled, imports_done=imports_done,
                                 yield_to=yield_to, stats=stats, touch=touch,
                                 after_lead=after_lead)
        except ReadaheadUnsupported as exc:
            info["unsupported"] = str(exc)
            log.info("readahead replay not possible here (%s); using the engine", exc)
            return None
        info["bytes_read"] = stats.bytes_read
        info["bytes_skipped_resident"] = stats.bytes_skipped_resident
        info["holds"] = stats.holds
        info["held_seconds"] = round(stats.held_seconds, 3)
    log.info("profile replay: %s", stats)
    return ReadaheadReplay(stats)
