"""The stale rules: mark a row stale, queue its request, ask again when it goes unanswered.

"At most one pending regeneration per user" is kept here, on the locked row (an ORM
``HighlightRow`` or the set-based paths' plain ``RowState``: ``outbox.Requestable``). A
mark bumps ``generation`` so an older result is recognisable; a request still queued or
pending absorbs further marks; an override lock asks for nothing. A queued request lives
on its row (``regen_queued_at`` and friends) until the scheduler's step
(``worker.services.scheduler.publish_due``) makes it a pending request; under an immediate
policy (``OutboxSink.policy``) it is requested at once (``outbox.request_regeneration``).
What one change carries along that way is one value, ``StaleMark``. The columns these rules
may change are ``worker.services.locking.WRITTEN`` (the set-based paths write back those).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from worker.domain import snapshot
from worker.domain.scheduling import priority_for
from worker.domain.values import RegenReason, StaleOutcome, StaleReason
from worker.services.outbox import OutboxSink, Requestable, request_regeneration
from worker.storage.models import HighlightRow

_AS_REGEN_REASON = {reason: RegenReason(reason.value) for reason in StaleReason}


class StaleMark(NamedTuple):
    """One change asking for a regeneration, as it travels from the stale mark to the queue
    and the request: why (a stale mark's reason, or ``RETRY``/``MANUAL`` for a request asked
    again), when, what triggered it (``comment:<id>``, ``sweep``, ``operator:<actor>``), an
    explicit priority (None: ``priority_for`` the reason and trigger), the comments it brings
    (``unseen``) and, for an expiry, when the change really happened (``first_change``).
    A named tuple, not a frozen dataclass: one is made per comment, and a frozen dataclass
    costs twice as much to make (docs/performance.md, 2026-12-06)."""

    reason: RegenReason
    at: datetime
    trigger: str | None = None
    priority: int | None = None
    unseen: int = 0
    first_change: datetime | None = None

    @classmethod
    def stale(
        cls,
        reason: StaleReason,
        at: datetime,
        trigger: str | None = None,
        priority: int | None = None,
        *,
        unseen: int = 0,
        first_change: datetime | None = None,
    ) -> StaleMark:
        """A stale mark's change: its request's reason is the stale reason (the one place a
        ``StaleReason`` becomes a ``RegenReason``; tests/domain ties the two enums). Looked
        up, not converted: an enum's lookup by value costs more than the rest of a mark."""
        return cls(_AS_REGEN_REASON[reason], at, trigger, priority, unseen, first_change)


def mark_stale_row(sink: OutboxSink, row: Requestable, mark: StaleMark) -> StaleOutcome:
    """Mark a locked row stale and keep "at most one pending regeneration per user".

    Every mark bumps ``generation``, so a result computed before this mark is recognisably
    older. A request still queued absorbs further marks (settling: it is pushed back and
    takes the most urgent priority), a pending one absorbs them too (coalescing); an
    override lock keeps the row visibly stale but asks for nothing. Otherwise a request is
    queued (``enqueue``), or made at once when the sink's policy is immediate.
    ``mark.unseen`` counts the comments the change brings.
    """
    assert mark.reason is not RegenReason.RETRY  # a retry asks again, it marks nothing
    now = mark.at
    row.generation += 1
    if not row.is_stale:
        row.is_stale = True
        row.stale_since = now
    row.stale_reason = mark.reason.value
    row.updated_at = now
    if not snapshot.input_driven(mark.reason, mark.trigger):
        row.covered_fingerprint = None  # never skipped as "unchanged"
    if row.manual_override:
        return StaleOutcome.OVERRIDE_LOCKED
    if is_queued(row):
        enqueue(sink, row, mark)
        return StaleOutcome.SETTLED
    if row.regen_request_id is not None:
        return StaleOutcome.COALESCED
    enqueue(sink, row, mark)
    return StaleOutcome.REQUESTED


def _regen_reason_for(row: Requestable) -> RegenReason:
    try:
        return RegenReason(row.stale_reason or RegenReason.MANUAL.value)
    except ValueError:
        return RegenReason.MANUAL


def request_if_unanswered(
    sink: OutboxSink, row: Requestable, now: datetime, trigger: str | None = None
) -> bool:
    """Ask again for a stale, unlocked row whose pending request is gone or already answered.

    Covers: an override cleared on a stale row, and a result for an older generation that
    answered the pending request but left the row stale.
    """
    if not row.is_stale or row.manual_override or row.regen_request_id is not None:
        return False
    if is_queued(row):
        return False
    enqueue(sink, row, StaleMark(_regen_reason_for(row), now, trigger))
    return True


def is_queued(row: Requestable) -> bool:
    return row.regen_queued_at is not None


def enqueue(sink: OutboxSink, row: Requestable, mark: StaleMark) -> bool:
    """Queue ``row``'s regeneration (``sink.policy`` immediate: request it now). Returns
    False when the change was absorbed by a request already queued (settling), True
    otherwise."""
    now, reason, trigger = mark.at, mark.reason, mark.trigger
    prio = priority_for(reason.value, trigger) if mark.priority is None else mark.priority
    if row.regen_queued_at is not None:
        row.regen_last_change_at = now
        row.regen_priority = min(
            row.regen_priority if row.regen_priority is not None else prio, prio
        )
        row.regen_queued_reason, row.regen_queued_trigger = reason.value, trigger
        row.regen_unseen += mark.unseen
        row.updated_at = now
        return False
    if sink.policy.immediate:
        request_regeneration(sink, row, reason, now, trigger, prio)
        return True
    row.regen_queued_at = row.regen_last_change_at = now
    row.regen_first_change_at = mark.first_change or now  # expiry: when it expired (oldest first)
    row.regen_priority, row.regen_unseen = prio, mark.unseen
    row.regen_queued_reason, row.regen_queued_trigger = reason.value, trigger
    row.updated_at = now
    return True


def dequeue(row: Requestable) -> None:
    row.regen_queued_at = row.regen_first_change_at = row.regen_last_change_at = None
    row.regen_priority = row.regen_queued_reason = row.regen_queued_trigger = None
    row.regen_unseen = 0


def clear_stale(row: Requestable) -> None:
    """Fresh: nothing left to ask for, nor queued."""
    row.is_stale = False
    row.stale_reason = None
    row.stale_since = None
    row.regen_request_id = None
    row.regen_requested_at = None
    row.regen_generation = None
    row.regen_attempts = 0
    dequeue(row)


def skip_if_unchanged(row: HighlightRow, now: datetime) -> bool:
    """A request about to go out buys nothing when the stored highlight covers exactly the
    current inputs (``worker.domain.snapshot.unchanged``): the row returns to fresh instead,
    its ``stale_after`` unchanged, and covers the current input version (the same set).

    Asked where a request goes out later than the change that made it: when a queued one
    comes due (``scheduler.skip_unchanged``) and when the sweep would ask again. A request
    made at once (the immediate policy) follows a change from a fresh row, which always
    moves the fingerprint off the covered one: there is nothing to skip then."""
    has_content = row.generated_at is not None
    if not snapshot.unchanged(
        row.covered_fingerprint, row.input_fingerprint, has_content, row.stale_after, now
    ):
        return False
    clear_stale(row)
    row.covered_version = row.input_version
    row.regen_skipped_at = row.updated_at = now
    return True
