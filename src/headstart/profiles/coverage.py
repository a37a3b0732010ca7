"""How well a replayed start was covered by its profile, measured from outside the target.

The replay helper watches the target's process tree (:class:`headstart.watch.tree_io.
TreeReads`) from the moment the replay starts until the tree's own reads have been quiet
for a while (or it exits):

* ``target_read_bytes``: what the tree still fetched from storage itself. Everything a
  profile lacks, and every replayed page that was reclaimed before the target used it,
  shows up here. A good profile leaves only what the target read before the helper began.
* ``late_bytes``: ranges that were already resident when the replay reached them. On a cold
  start nothing else reads these files, so the target got there first: the replay was
  behind it there. ``late_weight_bytes`` is the part of them in the weight files: the
  rest is libraries, which the target waits for during its imports.
* ``reclaimed_bytes``: replayed bytes no longer resident when the start settled (memory
  pressure, or a proactive reclaim such as DAMON's ``pageout`` scheme).

A profile is **poor**, and the next start records a new one (the old one is kept until the
new one is written), when the target read more than ``POOR_FRACTION`` of what it needed
itself (and more than ``POOR_MIN_BYTES``) that the profile lacks (its reads but the late
ones: where the target overtook the replay on a slow disk, a new recording would be no
better, and recording costs that start its replay), or when recorded files changed. What is not
measured: replayed bytes the target never used (their pages look the same as used ones
from outside; a new recording drops them).

The report goes to a sidecar next to the profile (``KEY.coverage.json``), to the trace,
to ``-v`` and to ``HEADSTART_COVERAGE_FILE`` when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from headstart.pagecache.ranges import Range

__all__ = ["POOR_FRACTION", "POOR_MIN_BYTES", "Coverage", "coverage_path", "measure_coverage",
           "rerecord_reason", "resident_bytes", "settle", "write_coverage"]

POOR_FRACTION = 0.10
POOR_MIN_BYTES = 64 * 2**20


@dataclass
class Coverage:
    """One replayed start, as the helper saw it."""

    key: str
    replayed_bytes: int = 0
    late_bytes: int = 0
    late_weight_bytes: int = 0
    target_read_bytes: int = 0
    reclaimed_bytes: int = 0
    planned_bytes: int = 0
    stale_files: int = 0
    holds: int = 0
    held_seconds: float = 0.0
    replay_seconds: float = 0.0
    watched_seconds: float = 0.0
    settled: str = ""  # "quiet" | "exited" | "limit" | "cancelled"
    created: float = 0.0

    @property
    def needed_bytes(self) -> int:
        """What the start read from storage in all: the replay's part and the target's."""
        return self.replayed_bytes + self.target_read_bytes

    @property
    def fraction(self) -> float:
        """Share of the start's disk reads that the replay did ahead of the target."""
        need = self.needed_bytes
        return (self.replayed_bytes - self.reclaimed_bytes) / need if need else 1.0

    @property
    def missing_bytes(self) -> int:
        """What the target read itself that the profile does not hold: its own reads but
        the late ones, ranges of the profile the target got to before the replay did (a
        disk slower than the start, which a new recording would not change)."""
        return max(0, self.target_read_bytes - self.late_bytes)

    def poor(self) -> str | None:
        """Why this profile should be recorded again, or None."""
        if self.stale_files:
            return f"{self.stale_files} recorded file(s) changed"
        need, missing = self.needed_bytes, self.missing_bytes
        if missing > POOR_MIN_BYTES and missing > POOR_FRACTION * need:
            return (f"the target still read {_mb(missing)} the profile lacks itself "
                    f"({100 * missing / need:.0f} % of its reads)")
        return None

    def describe(self) -> str:
        return (f"replay coverage {100 * self.fraction:.0f} %: replayed "
                f"{_mb(self.replayed_bytes)} in {self.replay_seconds:.2f} s, the target read "
                f"{_mb(self.target_read_bytes)} itself, {_mb(self.late_bytes)} late "
                f"({_mb(self.late_weight_bytes)} of it weights), "
                f"{_mb(self.reclaimed_bytes)} reclaimed before the start settled "
                f"({self.settled} after {self.watched_seconds:.1f} s); stood back "
                f"{self.holds} time(s), {self.held_seconds:.2f} s")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(needed_bytes=self.needed_bytes, missing_bytes=self.missing_bytes,
                 fraction=round(self.fraction, 4), poor=self.poor())
        return d


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def settle(total: Callable[[], int], alive: Callable[[], bool], *, quiet: float = 5.0,
           limit: float = 120.0, interval: float = 0.25,
           keep_going: Callable[[], bool] = lambda: True) -> str:
    """Sample ``total()`` until it has not risen for ``quiet`` seconds; returns why it
    stopped: ``quiet``, ``exited`` (``alive()`` false), ``limit`` or ``cancelled``."""
    t0 = last_rise = time.monotonic()
    last = total()
    while True:
        time.sleep(interval)
        now = time.monotonic()
        if not alive():
            return "exited"
        if not keep_going():
            return "cancelled"
        value = total()
        if value > last:
            last, last_rise = value, now
        if now - last_rise >= quiet:
            return "quiet"
        if now - t0 >= limit:
            return "limit"


def measure_coverage(key: str, checked, handles: Sequence, reads, t0: float, *,
                     keep_going: Callable[[], bool] = lambda: True,
                     quiet: float = 5.0) -> Coverage:
    """After a replay (``handles``, started at ``t0``) of ``checked`` (a ``Validated``):
    watch ``reads`` (the target's :class:`~headstart.watch.tree_io.TreeReads`) until they
    settle, then measure, trace and store the coverage (sidecar, ``HEADSTART_COVERAGE_FILE``)."""
    from headstart.profiles.replay import stream
    from headstart.settings import coverage_file, replay_options
    from headstart.trace import tracer

    replay_seconds = time.monotonic() - t0
    settled = settle(reads.total, reads.alive, quiet=quiet, keep_going=keep_going)
    # what the replay was asked to read: the profile's tail only where it was placed
    ranges = stream(checked, str(replay_options()["tail"]))[0]
    planned = sum(r.length or 0 for r in ranges)
    cov = Coverage(key=key, planned_bytes=planned, stale_files=len(checked.stale_files),
                   replay_seconds=round(replay_seconds, 3), settled=settled,
                   target_read_bytes=reads.total(),
                   watched_seconds=round(time.monotonic() - t0, 3))
    weights = {r.path for r in checked.weights}
    for h in handles:
        st = h.stats
        cov.replayed_bytes += st.bytes_read
        cov.late_bytes += st.bytes_skipped_resident
        cov.late_weight_bytes += sum(n for path, n in st.skipped_resident_by_path.items()
                                     if path in weights)
        cov.holds += st.holds
        cov.held_seconds = round(cov.held_seconds + st.held_seconds, 3)
    if cov.replayed_bytes:
        # a lower bound: pages the target read back itself look resident again
        resident = resident_bytes(ranges)
        cov.reclaimed_bytes = max(0, cov.replayed_bytes + cov.late_bytes - resident)
    tracer.instant("replay coverage", cat="prefetch", **cov.to_dict())
    write_coverage(cov, coverage_file())
    return cov


def resident_bytes(ranges: Sequence[Range]) -> int:
    """Bytes of ``ranges`` resident now (cachestat; a range it cannot answer counts as
    resident, so that an unknown is never reported as reclaimed)."""
    from headstart.pagecache.residency import file_residency

    out = 0
    for path, offset, length in ranges:
        f = file_residency(path, offset, length)
        out += f.size if f.error is not None or not f.exact else f.resident
    return out


def coverage_path(key: str) -> str:
    from headstart.profiles.key import profile_file

    return profile_file(key)[: -len(".json")] + ".coverage.json"


def write_coverage(cov: Coverage, extra_path: str | None = None) -> None:
    """The sidecar next to the profile, and ``extra_path`` when given (atomic writes;
    failures are ignored: a report must not harm the start)."""
    cov.created = cov.created or time.time()
    data = json.dumps(cov.to_dict(), indent=1)
    for path in (coverage_path(cov.key), extra_path):
        if not path:
            continue
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            # 0600 like the profile: it names what the target reads
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def rerecord_reason(key: str) -> str | None:
    """Why the profile ``key`` should be recorded again at this start, from the coverage the
    last replayed start measured; None when it was good or nothing was measured."""
    try:
        with open(coverage_path(key), encoding="utf-8") as fh:
            data = json.load(fh)
        reason = data.get("poor")
        created = float(data.get("created") or 0.0)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if not reason:
        return None
    with contextlib.suppress(OSError):
        from headstart.profiles.key import profile_file

        if os.stat(profile_file(key)).st_mtime > created:
            return None  # recorded again since that start
    return str(reason)
