"""The scheduler's pure rules: settle arithmetic, priorities, the token bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.domain.scheduling import Bucket, Priority, due_at, priority_for, queue_order

T = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def test_settle_follows_the_latest_change_up_to_max_wait() -> None:
    settle, cap = 5 * S, 60 * S
    assert due_at(Priority.COMMENT, T, T, settle, cap) == T + 5 * S
    assert due_at(Priority.COMMENT, T, T + 20 * S, settle, cap) == T + 25 * S
    assert due_at(Priority.COMMENT, T, T + 58 * S, settle, cap) == T + 60 * S  # capped
    assert due_at(Priority.PRIVACY, T, T + 3 * S, settle, cap) == T + 8 * S


@pytest.mark.parametrize("priority", [Priority.OPERATOR, Priority.EXPIRED, Priority.RESEED])
def test_one_off_requests_do_not_settle(priority: Priority) -> None:
    assert due_at(priority, T, T + 9 * S, 5 * S, 60 * S) == T


def test_priorities_in_the_order_of_the_issue() -> None:
    order = [
        priority_for("comment_deleted"),
        priority_for("missing"),
        priority_for("new_comment"),
        priority_for("manual"),
        priority_for("expired"),
        priority_for("manual", "reseed"),
    ]
    assert order == sorted(order) and len(set(order)) == 6
    assert priority_for("comment_edited") is Priority.COMMENT
    assert priority_for("retry") is Priority.OPERATOR


def test_queue_order_priority_then_unseen_then_oldest() -> None:
    keys = [
        queue_order(Priority.COMMENT, 1, T),
        queue_order(Priority.PRIVACY, 1, T + S),
        queue_order(Priority.COMMENT, 7, T + S),
        queue_order(Priority.EXPIRED, 0, T + 2 * S),
        queue_order(Priority.EXPIRED, 0, T),
    ]
    assert sorted(keys) == [keys[1], keys[2], keys[0], keys[4], keys[3]]


def test_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = Bucket(0.0, T)
    assert bucket.refilled(T + 30 * S, 120, 10).available() == 10  # capped at the burst
    half = bucket.refilled(T + 2 * S, 120, 10)
    assert half.available() == 4 and half.at == T + 2 * S
    assert half.take(4).available() == 0
    assert half.take(4).refilled(T + 2.5 * S, 120, 10).available() == 1
    assert bucket.refilled(T - S, 120, 10).tokens == 0  # a clock going back adds nothing
    with pytest.raises(ValueError, match="taking 5 tokens"):
        half.take(5)


def test_unpublished_requests_count_against_the_burst_and_a_pause_earns_nothing() -> None:
    bucket = Bucket(0.0, T)
    assert bucket.refilled(T + 30 * S, 120, 10, unpublished=7).available() == 3
    assert bucket.refilled(T + 30 * S, 120, 10, unpublished=12).tokens == 0  # never negative
    assert bucket.refilled(T + 2 * S, 120, 10, unpublished=5).available() == 4  # lag is free
    paused = Bucket(3.0, T).paused(T + 60 * S)  # a minute's pause
    assert paused == Bucket(3.0, T + 60 * S)
    assert paused.refilled(T + 61 * S, 120, 10).available() == 5


def test_the_bucket_never_moves_back_so_no_interval_is_credited_twice() -> None:
    """Two steps reading clocks 10 s apart, alternating: the one behind earns nothing and
    leaves ``at`` where the one ahead put it (before, it moved ``at`` back 10 s and the
    next step was paid the same 10 s again)."""
    bucket, taken = Bucket(0.0, T), 0
    for second in range(1, 41):  # a step a second, every other one 10 s behind
        now = T + second * S - (10 * S if second % 2 else 0 * S)
        bucket = bucket.refilled(now, 60, 5)
        taken += bucket.available()
        bucket = bucket.take(bucket.available())
    assert taken <= 40 and bucket.at == T + 40 * S  # 40 s at one a second
    assert Bucket(1.0, T).paused(T - 10 * S) == Bucket(1.0, T)
