"""Signal bookkeeping: the request -> user map, parked comments, and per-user activity.

Activity is updated with one atomic upsert (``ON CONFLICT DO UPDATE``) so that two
workers counting comments of the same user on different partitions never lose a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import case, delete, func, literal_column, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.messages import CommentEvent, RequestEvent
from worker.storage.database import dialect_insert, is_postgresql
from worker.storage.models import ParkedCommentRow, SignalActivityRow, SignalRequestRow
from worker.storage.pgarray import Write, array, literal, unnest_rows, write_together

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

    def columns(self, now: datetime) -> dict[str, object]:
        """The upsert's values for this user (all of ``ACTIVITY_COLUMNS`` but the id)."""
        return {
            "comment_count": self.count,
            "last_comment_at": self.last_at,
            "last_comment_id": self.last_id,
            "last_comment_type": self.last_type,
            "updated_at": now,
        }

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
    if is_postgresql(session):
        await write_together(session, [_pg_upsert(deltas, now)])
    else:  # executemany: one cached statement, batched VALUES
        rows = [{"user_id": u, **d.columns(now)} for u, d in sorted(deltas.items())]
        await session.execute(_activity_upsert(dialect_insert(session), False), rows)
    if any(d.count < 0 for d in deltas.values()):
        # A first insert must not store a negative count (a deletion before its comment).
        await session.execute(
            update(SignalActivityRow)
            .where(SignalActivityRow.user_id.in_(list(deltas)), SignalActivityRow.comment_count < 0)
            .values(comment_count=0)
        )


def activity_write(
    deltas: dict[int, ActivityDelta], now: datetime
) -> tuple[Write | None, dict[int, ActivityDelta]]:
    """PostgreSQL: the upsert of ``deltas`` as a ``Write``, to run together with a batch's
    other writes, and the deltas it leaves out for ``record_activity``: those that lower a
    count (a first insert must then be clamped at 0, which takes a second statement)."""
    rising = {u: d for u, d in deltas.items() if d.count >= 0}
    falling = {u: d for u, d in deltas.items() if d.count < 0}
    return (_pg_upsert(rising, now) if rising else None), falling


def _pg_upsert(deltas: dict[int, ActivityDelta], now: datetime) -> Write:
    users = sorted(deltas)
    columns = [deltas[u].columns(now) for u in users]
    params: dict[str, object] = {"a_user_id": literal("bigint", users)}
    for name, kind in ACTIVITY_COLUMNS.items():
        if name != "user_id":
            params[f"a_{name}"] = literal(kind, [c[name] for c in columns])
    return Write(_pg_upsert_sql(), params)


@lru_cache(maxsize=1)
def _pg_upsert_sql() -> str:
    """The PostgreSQL upsert as text with named parameters (``a_`` + column)."""
    stmt = _activity_upsert(postgresql.insert, True)
    dialect: Any = postgresql.dialect
    return str(stmt.compile(dialect=dialect(paramstyle="named")))


@lru_cache(maxsize=2)
def _activity_upsert(insert: Any, from_arrays: bool) -> Any:
    """The upsert statement, built once per dialect (building it costs more than a batch's
    share of running it); on PostgreSQL its rows come from one array per column."""
    stmt = insert(SignalActivityRow.__table__)
    if from_arrays:
        source = select(text("*")).select_from(text(unnest_rows(ACTIVITY_COLUMNS, "a_")))
        stmt = stmt.from_select(list(ACTIVITY_COLUMNS), source)
    current = SignalActivityRow.last_comment_at
    newer = (current.is_(None)) | (stmt.excluded.last_comment_at > current)
    new_count = SignalActivityRow.comment_count + stmt.excluded.comment_count
    zero: Any = literal_column("0")  # inline, so the statement has no parameters of its own
    return stmt.on_conflict_do_update(
        index_elements=["user_id"],
        set_={
            "comment_count": case((new_count < zero, zero), else_=new_count),
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


# PostgreSQL, set-based: a batch of mappings. The advisory locks of ``lock_request`` for
# all of the batch's request ids, in one order (concurrent batches never deadlock on them).
LOCK_REQUESTS = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(r, 7))) "
    f"FROM (SELECT DISTINCT r FROM unnest({array('ids', 'text')}) AS r ORDER BY r) AS s"
)
MAPPING_COLUMNS = {"request_id": "text", "user_id": "bigint", "occurred_at": "timestamptz"}
_UPSERT_MAPPINGS = (
    "INSERT INTO signal_requests (request_id, user_id, occurred_at, created_at) "
    "SELECT v.request_id, v.user_id, v.occurred_at, CAST(:now AS timestamptz) "
    f"FROM {unnest_rows(MAPPING_COLUMNS, 'm_')} "
    "ON CONFLICT (request_id) DO UPDATE SET "
    "user_id = CASE WHEN excluded.occurred_at > signal_requests.occurred_at "
    "THEN excluded.user_id ELSE signal_requests.user_id END, "
    "occurred_at = CASE WHEN excluded.occurred_at > signal_requests.occurred_at "
    "THEN excluded.occurred_at ELSE signal_requests.occurred_at END "
    "RETURNING request_id, user_id"
)
UPSERT_MAPPINGS = text(_UPSERT_MAPPINGS)
# Save the mappings and take their parked comments out, answering with each comment and
# the user its request now maps to (both halves read the snapshot taken after the locks).
MAP_AND_UNPARK = text(
    f"WITH m AS ({_UPSERT_MAPPINGS}), p AS ("
    "DELETE FROM parked_comments WHERE request_id = "
    f"ANY({array('m_request_id', 'text')}) "
    "RETURNING event_id, request_id, payload, parked_at) "
    "SELECT p.request_id, m.user_id, p.payload, p.parked_at, p.event_id "
    "FROM p JOIN m USING (request_id)"
)


def mapping_params(events: list[RequestEvent], now: datetime) -> dict[str, object]:
    return {
        "now": now,
        "m_request_id": literal("text", [e.request_id for e in events]),
        "m_user_id": literal("bigint", [e.user_id for e in events]),
        "m_occurred_at": literal("timestamptz", [e.occurred_at for e in events]),
    }


def parked_event(payload: Any) -> CommentEvent:
    if isinstance(payload, str | bytes):
        return CommentEvent.model_validate_json(payload)
    return CommentEvent.model_validate(payload)


PARK_COLUMNS = {"event_id": "text", "request_id": "text", "payload": "jsonb"}
PARK = (
    "INSERT INTO parked_comments (event_id, request_id, payload, parked_at) "
    "SELECT v.event_id, v.request_id, v.payload, CAST(:k_now AS timestamptz) "
    f"FROM {unnest_rows(PARK_COLUMNS, 'k_')}"
)


def park_write(events: list[CommentEvent], now: datetime) -> Write | None:
    """PostgreSQL: ``park`` for a batch's comments as one ``Write`` (under the locks of
    ``LOCK_REQUESTS``, held until the commit)."""
    if not events:
        return None
    payloads = [event.model_dump_json() for event in events]
    return Write(
        PARK,
        {
            "k_now": now,
            "k_event_id": literal("text", [e.event_id for e in events]),
            "k_request_id": literal("text", [e.request_id for e in events]),
            "k_payload": literal("text", payloads),
        },
    )
