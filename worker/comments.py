"""Comment events: the staleness rule, and its set-based form for PostgreSQL batches.

``apply_comment`` is the one rule (a comment newer than the highlight, or any deletion,
makes it stale; no highlight yet asks for a first one) and works on an ORM row as well as
on the plain ``RowState`` values below. ``apply_comment_batch`` applies a batch of
comments on PostgreSQL with one statement per table (create missing rows, lock, write the
changed rows, queue the requests) instead of the ORM's unit of work, which cost more than
the database did: comments are the hot stream, bursts of tens of thousands a minute.
SQLite and the other streams keep the ORM path; both call the same rules.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from worker import signal
from worker.batch import BatchResult
from worker.domain import StaleOutcome, StaleReason
from worker.events import CommentEvent, InputStream
from worker.models import RowState
from worker.outbox import OutboxEntry, OutboxSink, Requestable, batch_rows
from worker.pgarray import array, columns_of, literal, unnest_rows
from worker.store import mark_stale_row

COMMENT_REASONS = {
    "comment.created": StaleReason.NEW_COMMENT,
    "comment.edited": StaleReason.COMMENT_EDITED,
    "comment.deleted": StaleReason.COMMENT_DELETED,
}
STALE_OUTCOMES = {
    StaleOutcome.REQUESTED: "stale_marked",
    StaleOutcome.COALESCED: "coalesced",
    StaleOutcome.OVERRIDE_LOCKED: "override_locked",
}
ALREADY_INCLUDED = "already_included"


def apply_comment(
    sink: OutboxSink, row: Requestable, event: CommentEvent, now: datetime, result: BatchResult
) -> str:
    """Apply one comment to its user's locked row; returns the outcome's name."""
    if row.generated_at is None:
        reason = StaleReason.MISSING
    elif event.type == "comment.deleted" or event.occurred_at > row.generated_at:
        reason = COMMENT_REASONS[event.type]
    else:
        return ALREADY_INCLUDED
    outcome = mark_stale_row(sink, row, reason, now, f"comment:{event.event_id}")
    result.stale_event_times.append(event.occurred_at)
    if outcome is StaleOutcome.REQUESTED:
        result.regen_requests[reason.value] += 1
        if reason is StaleReason.MISSING:
            return "missing_requested"
    return STALE_OUTCOMES[outcome]


async def resolve_or_park(session: AsyncSession, event: CommentEvent, now: datetime) -> int | None:
    """The comment's user from the request map, or park the comment (None)."""
    resolved = await signal.resolve_users(session, {event.request_id})
    if event.request_id not in resolved:
        await signal.lock_request(session, event.request_id)
        resolved = await signal.resolve_users(session, {event.request_id})
    if event.request_id in resolved:
        return resolved[event.request_id]
    signal.park(session, event, now)
    await session.flush()  # the parked row must exist before the lock is released
    return None


# The columns a stale mark may change, with their PostgreSQL types (for unnest arrays).
WRITTEN = {
    "is_stale": "boolean",
    "stale_since": "timestamptz",
    "stale_reason": "text",
    "generation": "bigint",
    "regen_request_id": "text",
    "regen_requested_at": "timestamptz",
    "regen_generation": "bigint",
    "regen_attempts": "integer",
    "updated_at": "timestamptz",
}


CREATE_MISSING = text(
    "INSERT INTO user_profile_highlights (user_id, created_at, updated_at) "
    "SELECT u, CAST(:now AS timestamptz), CAST(:now AS timestamptz) "
    f"FROM unnest({array('ids', 'bigint')}) AS u ORDER BY u "
    "ON CONFLICT (user_id) DO NOTHING"
)
LOCK = text(
    f"SELECT {', '.join(f.name for f in fields(RowState))} FROM user_profile_highlights "
    f"WHERE user_id = ANY({array('ids', 'bigint')}) ORDER BY user_id FOR UPDATE"
)
WRITE_COLUMNS = {"user_id": "bigint", **WRITTEN}
WRITE = text(
    "UPDATE user_profile_highlights AS h SET "
    + ", ".join(f"{name} = v.{name}" for name in WRITTEN)
    + f" FROM {unnest_rows(WRITE_COLUMNS)} WHERE h.user_id = v.user_id"
)


async def lock_states(
    session: AsyncSession, user_ids: set[int], now: datetime
) -> dict[int, RowState]:
    """Create the rows comments need (one statement), then lock them all in user-id order
    (a fixed order keeps concurrent batches from deadlocking)."""
    ids = literal("bigint", sorted(user_ids))
    await session.execute(CREATE_MISSING, {"ids": ids, "now": now})
    found = await session.execute(LOCK, {"ids": ids})
    return {state.user_id: state for state in (RowState(*r) for r in found)}


async def apply_comment_batch(
    session: AsyncSession, events: list[CommentEvent], now: datetime, result: BatchResult
) -> dict[str, list[str]]:
    """Apply already-claimed comments in order; returns event ids by outcome."""
    outcomes: dict[str, list[str]] = {}
    resolved = await signal.resolve_users(
        session, {e.request_id for e in events if e.user_id is None}
    )
    targets: list[tuple[CommentEvent, int]] = []
    for event in events:
        user_id = event.user_id or resolved.get(event.request_id)
        if user_id is None and (user_id := await resolve_or_park(session, event, now)) is None:
            outcomes.setdefault("parked", []).append(event.event_id)
            continue
        targets.append((event, user_id))
    rows = await lock_states(session, {user_id for _, user_id in targets}, now)
    queued: list[OutboxEntry] = []
    activity: dict[int, signal.ActivityDelta] = {}
    touched: dict[int, RowState] = {}
    for event, user_id in targets:
        activity.setdefault(user_id, signal.ActivityDelta()).add(event)
        outcome = apply_comment(queued.append, rows[user_id], event, now, result)
        if outcome != ALREADY_INCLUDED:
            touched[user_id] = rows[user_id]
        outcomes.setdefault(outcome, []).append(event.event_id)
    for outcome, ids in outcomes.items():
        result.outcomes[(InputStream.COMMENTS.value, outcome)] += len(ids)
    await _write(session, list(touched.values()), queued)
    await signal.record_activity(session, activity, now)
    return outcomes


async def _write(session: AsyncSession, rows: list[RowState], queued: list[OutboxEntry]) -> None:
    if rows:
        await session.execute(WRITE, columns_of(WRITE_COLUMNS, rows))
    session.add_all(batch_rows(queued))  # the batch's requests: one outbox row
