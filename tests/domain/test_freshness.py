"""The freshness rule on plain values: no database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers.clock import T0
from worker.domain.freshness import FreshnessState, expiry_due, state_of

PAST, FUTURE = T0 - timedelta(seconds=1), T0 + timedelta(seconds=1)


def state(**row: object) -> FreshnessState:
    base: dict[str, object] = {
        "manual_override": False,
        "has_content": True,
        "is_stale": False,
        "stale_reason": None,
        "stale_after": FUTURE,
        "now": T0,
    }
    return state_of(**{**base, **row})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({}, FreshnessState.FRESH),
        ({"stale_after": None}, FreshnessState.FRESH),
        ({"stale_after": T0}, FreshnessState.EXPIRED),  # due at its instant, not after
        ({"stale_after": PAST}, FreshnessState.EXPIRED),  # not yet swept: expired all the same
        ({"is_stale": True, "stale_reason": "expired"}, FreshnessState.EXPIRED),
        (
            {"is_stale": True, "stale_reason": "new_comment", "stale_after": PAST},
            FreshnessState.STALE,
        ),
        ({"is_stale": True, "stale_reason": "new_comment"}, FreshnessState.STALE),
        ({"manual_override": True, "stale_after": PAST}, FreshnessState.OVERRIDDEN),
        ({"has_content": False, "is_stale": True}, FreshnessState.MISSING),
    ],
)
def test_state_of_a_row(row: dict[str, object], expected: FreshnessState) -> None:
    assert state(**row) is expected


def test_expiry_is_due_only_for_a_fresh_row_past_its_time() -> None:
    assert expiry_due(False, PAST, T0)
    assert expiry_due(False, T0, T0)
    assert not expiry_due(False, FUTURE, T0)
    assert not expiry_due(True, PAST, T0)  # already stale: the sweep leaves it
    assert not expiry_due(False, None, T0)
