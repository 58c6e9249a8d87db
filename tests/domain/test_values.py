"""The two reason enums stay tied: a request's reasons are the stale reasons plus a retry."""

from __future__ import annotations

from worker.domain.values import RegenReason, StaleReason


def test_every_stale_reason_is_a_regen_reason_of_the_same_name_and_value() -> None:
    """A stale mark's request carries its stale reason (``StaleMark.stale`` converts by
    value): a stale reason missing from ``RegenReason`` would fail there at run time."""
    for reason in StaleReason:
        assert RegenReason[reason.name].value == reason.value


def test_a_regen_reason_is_a_stale_reason_or_a_retry() -> None:
    """The one request reason that is not a stale reason: a retry asks again for a row
    already stale, and is never a row's ``stale_reason`` (nor accepted by ``mark_stale``)."""
    assert {r.value for r in RegenReason} - {s.value for s in StaleReason} == {"retry"}
