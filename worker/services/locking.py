"""Row locking: every read-modify-write of a ``user_profile_highlights`` row holds its lock.

Rows are locked with ``SELECT ... FOR UPDATE``, many at once always in user-id order (a
fixed order keeps concurrent batches deadlock-free), so concurrent writers on PostgreSQL
serialise per user; SQLite serialises whole write transactions. A missing row is created
as an empty placeholder with ``ON CONFLICT DO NOTHING``, so concurrent first writers
converge on one row. The ORM forms (``lock_row`` ...) serve the ORM paths; ``lock_states``
is the set-based paths' form on PostgreSQL, on the plain ``RowState`` values, with the
column lists those paths read (``STATE``) and write back after a stale mark (``WRITTEN``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from worker.storage.database import dialect_insert
from worker.storage.models import HighlightRow, RowState
from worker.storage.pgarray import array, literal


async def lock_row(session: AsyncSession, user_id: int) -> HighlightRow | None:
    stmt = (
        select(HighlightRow)
        .where(HighlightRow.user_id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()


async def lock_or_create_row(session: AsyncSession, user_id: int, now: datetime) -> HighlightRow:
    """The locked row for ``user_id``, inserting an empty placeholder if there is none.

    ``ON CONFLICT DO NOTHING`` makes concurrent first writers converge on one row.
    """
    row = await lock_row(session, user_id)
    if row is not None:
        return row
    insert = dialect_insert(session)
    await session.execute(
        insert(HighlightRow)
        .values(user_id=user_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    row = await lock_row(session, user_id)
    assert row is not None  # inserted above or by a concurrent writer
    return row


async def create_placeholders(session: AsyncSession, user_ids: set[int], now: datetime) -> None:
    """Insert empty rows for the users that have none, in one statement."""
    if user_ids:
        await session.execute(
            dialect_insert(session)(HighlightRow).on_conflict_do_nothing(
                index_elements=["user_id"]
            ),
            [{"user_id": u, "created_at": now, "updated_at": now} for u in sorted(user_ids)],
        )


async def lock_rows(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, HighlightRow]:
    """Lock many rows in user-id order (a fixed order keeps concurrent batches deadlock-free)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    stmt = (
        select(HighlightRow)
        .where(HighlightRow.user_id.in_(ids))
        .order_by(HighlightRow.user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.user_id: row for row in (await session.scalars(stmt)).all()}


# The columns only a request changes (``outbox.request_regeneration``: its lane, reason and
# token estimate; the scheduler's step charges the estimate later). Most stale marks of
# comments make no request (one is queued, pending or settling already), so the comment
# batch neither reads them (``MARK_STATE``) nor writes them back but for the rows that made
# one (``worker.services.comments``): 3 of the 23 arrays its write sent for every row. They are
# ``RowState``'s last fields (tests/services/test_staleness.py).
REQUESTED = {
    "regen_request_lane": "text",
    "regen_request_reason": "text",
    "regen_token_estimate": "bigint",
}
# The columns a stale mark may change (``worker.services.staleness``: mark, enqueue,
# request; ``results.settle_result``), with their PostgreSQL types (for unnest arrays).
# tests/services/test_staleness.py holds every stale rule to this list.
WRITTEN = {
    "is_stale": "boolean",
    "stale_since": "timestamptz",
    "stale_reason": "text",
    "generation": "bigint",
    "regen_request_id": "text",
    "regen_requested_at": "timestamptz",
    "regen_generation": "bigint",
    "regen_attempts": "integer",
    **REQUESTED,
    "updated_at": "timestamptz",
    "regen_queued_at": "timestamptz",
    "regen_first_change_at": "timestamptz",
    "regen_last_change_at": "timestamptz",
    "regen_priority": "integer",
    "regen_queued_reason": "text",
    "regen_queued_trigger": "text",
    "regen_unseen": "integer",
    # A mark not caused by the inputs alone is never skipped as "unchanged"
    # (``staleness.mark_stale_row``); what a highlight covers is otherwise a result's to
    # change (``worker.services.result_batch.COVERED``).
    "covered_fingerprint": "bigint",
}


STATE = ", ".join(f.name for f in fields(RowState))
# A comment batch's rows: all but the ``REQUESTED`` columns (left at None in the
# ``RowState``: a request sets all three, and a row that made none does not write them).
MARK_STATE = ", ".join(f.name for f in fields(RowState)[: -len(REQUESTED)])


def _lock(state: str) -> str:
    """Lock the rows of ``:ids`` in user-id order, reading the columns ``state``."""
    return (
        f"SELECT {state} FROM user_profile_highlights "
        f"WHERE user_id = ANY({array('ids', 'bigint')}) ORDER BY user_id FOR UPDATE"
    )


LOCK = _lock(STATE)


def created_and_locked(state: str) -> str:
    """The rows of ``:ids`` created (placeholders) and locked, with the columns ``state``,
    as CTEs ``created`` and ``locked``."""
    return (
        "WITH created AS ("
        "INSERT INTO user_profile_highlights (user_id, created_at, updated_at) "
        "SELECT u, CAST(:now AS timestamptz), CAST(:now AS timestamptz) "
        f"FROM unnest({array('ids', 'bigint')}) AS u ORDER BY u "
        f"ON CONFLICT (user_id) DO NOTHING RETURNING {state}), "
        f"locked AS ({_lock(state)})"
    )


CREATE_AND_LOCK = text(
    f"{created_and_locked(STATE)} SELECT * FROM created UNION ALL SELECT * FROM locked"
)
# A result creates a row only where it will write to it: the rows to create are a subset.
CREATE_SOME_AND_LOCK = text(
    "WITH created AS ("
    "INSERT INTO user_profile_highlights (user_id, created_at, updated_at) "
    "SELECT u, CAST(:now AS timestamptz), CAST(:now AS timestamptz) "
    f"FROM unnest({array('create', 'bigint')}) AS u ORDER BY u "
    f"ON CONFLICT (user_id) DO NOTHING RETURNING {STATE}), "
    f"locked AS ({LOCK}) "
    "SELECT * FROM created UNION ALL SELECT * FROM locked"
)


async def lock_states(
    session: AsyncSession, user_ids: set[int], now: datetime, create: set[int] | None = None
) -> dict[int, RowState]:
    """Create the missing rows of ``create`` (default: all of ``user_ids``) and lock all of
    ``user_ids``, in user-id order (a fixed order keeps concurrent batches from
    deadlocking), in one statement: the rows it creates come back from the insert, the
    others from the lock. A row another transaction created meanwhile is in neither (the
    statement's snapshot predates it): locked on its own. Users without a row (not in
    ``create``) are left out."""
    ids = literal("bigint", sorted(user_ids))
    if create is None:
        found = await session.execute(CREATE_AND_LOCK, {"ids": ids, "now": now})
    else:
        made = literal("bigint", sorted(create))
        found = await session.execute(
            CREATE_SOME_AND_LOCK, {"ids": ids, "create": made, "now": now}
        )
    states = {state.user_id: state for state in (RowState(*r) for r in found)}
    if late := user_ids - states.keys():
        states.update(await lock_existing(session, late))
    return states


async def lock_existing(session: AsyncSession, user_ids: set[int]) -> dict[int, RowState]:
    """Lock the existing rows of ``user_ids`` (in user-id order): the rows a statement that
    creates and locks found neither (created by another transaction since its snapshot)."""
    rows = await session.execute(text(LOCK), {"ids": literal("bigint", sorted(user_ids))})
    return {state.user_id: state for state in (RowState(*r) for r in rows)}
