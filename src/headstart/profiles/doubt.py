"""When a recording is not to be trusted, whatever its replays' coverage says.

A replayed start measures what its profile *lacks* (:mod:`headstart.profiles.coverage`);
it cannot see what the profile holds that the start never needed, nor an order that is
not the loader's, because from outside a used page and an unused one look the same. Two
conditions of the recording itself make exactly those errors, so the profile records them
(``stats["doubt"]``) and the next start records a new one (the old one replayed by no
start meanwhile, kept until the new one is written):

* **Not a cold start** (``headstart record``): what its eviction left in the page cache
  (pages mapped by another process, dirty ones, a tmpfs) is recorded with every resident
  page, not the ones the start read, and ranked by nothing: a ``headstart record`` profile
  orders weight chunks by when they became resident.
* **Lost events**: the fanotify queue overflowed, so files the start opened are missing
  and the order around the gap is unknown.

A recording made *because* of a doubt is judged by its coverage alone: a machine that
always overflows, or a model on a tmpfs, would otherwise record at every start and never
replay.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DOUBT_FRACTION", "DOUBT_MIN_BYTES", "ODD", "distrusted", "recording_doubt"]

DOUBT_MIN_BYTES = 64 * 2**20
DOUBT_FRACTION = 0.10
ODD = "the recording was odd"


def recording_doubt(stats: dict[str, Any], *, stayed_resident: int = 0) -> str | None:
    """Why a recording with these profile ``stats`` is not to be trusted, or None.
    ``stayed_resident``: bytes its eviction left in the page cache (``headstart record``)."""
    reasons = []
    overflow = stats.get("queue_overflow")
    if overflow:
        reasons.append("the recorder's event queue overflowed: files the start opened are "
                       "missing")
    total = int(stats.get("bytes") or 0)
    if stayed_resident > max(DOUBT_MIN_BYTES, DOUBT_FRACTION * total):
        reasons.append(f"not a cold start: {stayed_resident / 1e6:.0f} MB of what it evicted "
                       "stayed in the page cache (mapped by a process, dirty, or on a tmpfs), "
                       "recorded whole and in no order")
    return "; ".join(reasons) or None


def distrusted(stats: dict[str, Any]) -> str | None:
    """Why the profile with ``stats`` is to be recorded again now (``ODD: doubt``), or
    None: no doubt, or the profile was itself recorded because of one."""
    doubt = stats.get("doubt")
    if not doubt or str(stats.get("recorded_because") or "").startswith(ODD):
        return None
    return f"{ODD}: {doubt}"
