"""Signal bookkeeping: the request -> user map, parked comments, and per-user activity.

Activity is updated with one atomic upsert (``ON CONFLICT DO UPDATE``) so that two
workers counting comments of the same user on different partitions never lose a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import case, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from worker.db import dialect_insert, is_postgresql
from worker.events import CommentEvent, RequestEvent
from worker.models import ParkedCommentRow, SignalActivityRow, SignalRequestRow
from worker.pgarray import literal, unnest_rows

COUNT_DELTA = {"comment.created": 1, "comment.edited": 0, "comment.deleted": -1}
ACTIVITY_COLUMNS = {
    "user_id": "bigint",
    "comment_count": "integer",
    "last_comment_at": "timestamptz",
    "last_comment_id": "text",
    "last_comment_type": "text",
    "updated_at": "timestamptz",
}


async def resolve_users(session: AsyncSession, request_ids: set[str]) -> dict[str, int]:
    if not request_ids:
        return {}
    stmt = select(SignalRequestRow.request_id, SignalRequestRow.user_id).where(
        SignalRequestRow.request_id.in_(request_ids)
    )
    return {request_id: user_id for request_id, user_id in (await session.execute(stmt)).all()}


async def lock_request(session: AsyncSession, request_id: str) -> None:
    """Serialise "park a comment" against "map its request" for one request id.

    Without it, under READ COMMITTED a comment can be parked by one transaction while a
    concurrent one saves the mapping and finds nothing to unpark: the comment would stay
    parked forever. PostgreSQL: a transaction-scoped advisory lock on the request id.
    SQLite: write transactions are already serialised (BEGIN IMMEDIATE).
    """
    if is_postgresql(session):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:rid, 7))"), {"rid": request_id}
        )


async def save_mapping(session: AsyncSession, event: RequestEvent, now: datetime) -> None:
    """Insert or (for a newer mapping event) update the request's user."""
    insert = dialect_insert(session)
    stmt = insert(SignalRequestRow).values(
        request_id=event.request_id,
        user_id=event.user_id,
        occurred_at=event.occurred_at,
        created_at=now,
    )
    newer = stmt.excluded.occurred_at > SignalRequestRow.occurred_at
    stmt = stmt.on_conflict_do_update(
        index_elements=["request_id"],
        set_={
            "user_id": case((newer, stmt.excluded.user_id), else_=SignalRequestRow.user_id),
            "occurred_at": case(
                (newer, stmt.excluded.occurred_at), else_=SignalRequestRow.occurred_at
            ),
        },
    )
    await session.execute(stmt)


def park(session: AsyncSession, event: CommentEvent, now: datetime) -> None:
    session.add(
        ParkedCommentRow(
            event_id=event.event_id,
            request_id=event.request_id,
            payload=event.model_dump(mode="json"),
            parked_at=now,
        )
    )


async def unpark(session: AsyncSession, request_id: str) -> list[CommentEvent]:
    """Take the comments parked for ``request_id`` (oldest first) out of the parking table."""
    stmt = (
        select(ParkedCommentRow)
        .where(ParkedCommentRow.request_id == request_id)
        .order_by(ParkedCommentRow.parked_at, ParkedCommentRow.event_id)
    )
    rows = (await session.scalars(stmt)).all()
    if not rows:
        return []
    await session.execute(delete(ParkedCommentRow).where(ParkedCommentRow.request_id == request_id))
    return [CommentEvent.model_validate(row.payload) for row in rows]


@dataclass
class ActivityDelta:
    """A batch's comments about one user, folded: applied with one upsert per batch."""

    count: int = 0
    last_at: datetime | None = None
    last_id: str | None = None
    last_type: str | None = None

    def add(self, event: CommentEvent) -> None:
        self.count += COUNT_DELTA[event.type]
        if self.last_at is None or event.occurred_at > self.last_at:
            self.last_at, self.last_id, self.last_type = (
                event.occurred_at,
                event.comment_id,
                event.type,
            )


async def record_activity(
    session: AsyncSession, deltas: dict[int, ActivityDelta], now: datetime
) -> None:
    """One multi-row upsert: counts add up (never below 0), the latest comment wins.

    Atomic in SQL, so two workers counting comments of the same user never lose one.
    """
    if not deltas:
        return
    rows = [
        {
            "user_id": user_id,
            "comment_count": d.count,
            "last_comment_at": d.last_at,
            "last_comment_id": d.last_id,
            "last_comment_type": d.last_type,
            "updated_at": now,
        }
        for user_id, d in sorted(deltas.items())
    ]
    postgresql = is_postgresql(session)
    stmt = _activity_upsert(dialect_insert(session), postgresql)
    if postgresql:  # the rows as one array per column (see worker.pgarray)
        arrays = {c: literal(kind, [r[c] for r in rows]) for c, kind in ACTIVITY_COLUMNS.items()}
        await session.execute(stmt, arrays)
    else:  # executemany: one cached statement, batched VALUES
        await session.execute(stmt, rows)
    if any(d.count < 0 for d in deltas.values()):
        # A first insert must not store a negative count (a deletion before its comment).
        await session.execute(
            update(SignalActivityRow)
            .where(SignalActivityRow.user_id.in_(list(deltas)), SignalActivityRow.comment_count < 0)
            .values(comment_count=0)
        )


@lru_cache(maxsize=2)
def _activity_upsert(insert: Any, postgresql: bool) -> Any:
    """The upsert statement, built once per dialect (building it costs more than a batch's
    share of running it)."""
    stmt = insert(SignalActivityRow.__table__)
    if postgresql:
        source = select(text("*")).select_from(text(unnest_rows(ACTIVITY_COLUMNS)))
        stmt = stmt.from_select(list(ACTIVITY_COLUMNS), source)
    current = SignalActivityRow.last_comment_at
    newer = (current.is_(None)) | (stmt.excluded.last_comment_at > current)
    new_count = SignalActivityRow.comment_count + stmt.excluded.comment_count
    return stmt.on_conflict_do_update(
        index_elements=["user_id"],
        set_={
            "comment_count": case((new_count < 0, 0), else_=new_count),
            "last_comment_at": case((newer, stmt.excluded.last_comment_at), else_=current),
            "last_comment_id": case(
                (newer, stmt.excluded.last_comment_id), else_=SignalActivityRow.last_comment_id
            ),
            "last_comment_type": case(
                (newer, stmt.excluded.last_comment_type),
                else_=SignalActivityRow.last_comment_type,
            ),
            "updated_at": stmt.excluded.updated_at,
        },
    )


async def parked_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ParkedCommentRow)) or 0)
