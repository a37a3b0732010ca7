"""When a recording is not trusted (:mod:`headstart.profiles.doubt`): the rules alone."""

from __future__ import annotations

from headstart.profiles.doubt import DOUBT_MIN_BYTES, ODD, distrusted, recording_doubt

MiB = 2**20


def test_a_cold_recording_with_every_event_is_trusted():
    stats = {"bytes": 2000 * MiB, "queue_overflow": False}
    assert recording_doubt(stats, stayed_resident=DOUBT_MIN_BYTES) is None
    assert distrusted({**stats, "doubt": None}) is None


def test_what_stayed_resident_counts_past_both_thresholds():
    big = {"bytes": 2000 * MiB}
    assert recording_doubt(big, stayed_resident=150 * MiB) is None  # under 10 % of 2 GB
    assert "not a cold start: 262 MB" in recording_doubt(big, stayed_resident=250 * MiB)
    small = {"bytes": 10 * MiB}
    assert recording_doubt(small, stayed_resident=DOUBT_MIN_BYTES) is None  # under 64 MiB
    assert recording_doubt(small, stayed_resident=DOUBT_MIN_BYTES + 1)


def test_an_overflowed_queue_is_a_doubt_and_reasons_add_up():
    both = recording_doubt({"bytes": MiB, "queue_overflow": True},
                           stayed_resident=100 * MiB)
    assert "overflowed" in both and "not a cold start" in both


def test_a_doubted_profile_is_recorded_again_once():
    doubt = "the recorder's event queue overflowed"
    assert distrusted({"doubt": doubt}) == f"{ODD}: {doubt}"
    # recorded again because of it, and odd again: its coverage judges it from now on
    assert distrusted({"doubt": doubt, "recorded_because": f"{ODD}: {doubt}"}) is None
    # recorded again for another reason (poor coverage), then odd: recorded again
    assert distrusted({"doubt": doubt, "recorded_because": "no profile yet"})
