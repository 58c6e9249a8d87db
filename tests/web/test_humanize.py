"""The panel's time and duration wording: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.web.humanize import ago, duration, parse_time, share, utc_text

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0 s"),
        (0.25, "250 ms"),
        (1, "1 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (3600 + 5 * 60, "1 h 5 min"),
        (9 * 3600 + 59 * 60, "9 h 59 min"),
        (10 * 3600 + 5 * 60, "10 h"),
        (86399, "23 h"),
        (86400, "1 d"),
        (2 * 86400, "2 d"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
        (12 * 86400 + 4 * 3600, "12 d"),
        (-90, "-1 min"),
    ],
)
def test_durations_read_in_human_units(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "just now"),
        (timedelta(minutes=3), "3 min ago"),
        (timedelta(days=2), "2 d ago"),
        (timedelta(hours=-2), "in 2 h"),
    ],
)
def test_ages_are_relative_to_now(delta: timedelta, text: str) -> None:
    assert ago(NOW - delta, NOW) == text
    assert ago(None, NOW) == "-"


def test_exact_times_are_shown_in_utc_whatever_the_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert utc_text(datetime(2026, 1, 1, 14, 0, 5, tzinfo=plus_two)) == "2026-01-01 12:00:05 UTC"
    assert utc_text(None) == ""


def test_document_times_parse_back_and_shares_read_as_percentages() -> None:
    assert parse_time("2026-01-01T12:00:00+00:00") == NOW
    assert parse_time("2026-01-01T12:00:00") == NOW
    assert parse_time(NOW) is NOW
    assert parse_time(None) is None
    assert share(1, 8) == "12.5 %"
    assert share(0, 0) == "-"
