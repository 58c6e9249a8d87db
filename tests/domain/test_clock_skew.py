"""The clock rule (``worker.domain.clock_skew``): timestamps further ahead of their receipt
than ``WB_MAX_CLOCK_SKEW`` are read as the receipt time; the others, and the timestamps
that legitimately lie ahead, are left alone."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.helpers.clock import T0
from tests.helpers.factories import C, G, R, comment, generated
from worker.domain.clock_skew import DEFAULT_MAX_CLOCK_SKEW, clamped_to_receipt
from worker.domain.decoder import decode
from worker.settings import Settings

SKEW = DEFAULT_MAX_CLOCK_SKEW


def test_a_comment_twenty_hours_ahead_is_read_as_received_now() -> None:
    event = decode(C, comment("e1", 1, T0 + timedelta(hours=20)).value, T0)
    bounded, clamped = clamped_to_receipt(event, T0, SKEW)
    assert clamped == ["occurred_at"] and bounded.occurred_at == T0  # type: ignore[union-attr]
    assert bounded.event_id == event.event_id


def test_within_the_skew_nothing_changes() -> None:
    for ahead in (timedelta(0), SKEW, timedelta(minutes=-30)):
        event = decode(C, comment("e1", 1, T0 + ahead).value, T0)
        assert clamped_to_receipt(event, T0, SKEW) == (event, [])


def test_a_result_ahead_keeps_its_stale_after_which_may_lie_ahead() -> None:
    stale_after = T0 + timedelta(days=1, hours=1)
    raw = generated("g1", 1, T0 + timedelta(hours=20), "s", stale_after=stale_after.isoformat())
    event = decode(G, raw.value, T0)
    bounded, clamped = clamped_to_receipt(event, T0, SKEW)
    assert clamped == ["generated_at"]
    assert bounded.generated_at == T0 and bounded.stale_after == stale_after  # type: ignore[union-attr]


def test_a_mapping_ahead_is_clamped_too() -> None:
    doc = {"event_id": "m1", "request_id": "r1", "user_id": 1}
    doc["occurred_at"] = (T0 + timedelta(minutes=6)).isoformat()
    event = decode(R, json.dumps(doc).encode(), T0)
    assert clamped_to_receipt(event, T0, SKEW)[1] == ["occurred_at"]


def test_the_setting_defaults_to_minutes_and_reads_durations() -> None:
    assert Settings().max_clock_skew == timedelta(minutes=5)
    assert Settings(max_clock_skew="30s").max_clock_skew == timedelta(seconds=30)
