"""Signal bookkeeping: the request -> user map, parked comments, and per-user activity.

Activity is updated with one atomic upsert (``ON CONFLICT DO UPDATE``) so that two
workers counting comments of the same user on different partitions never lose a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import case, delete, literal_column, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import RawMessage
from worker.domain.wire import Comment, CommentEvent, RequestEvent
from worker.storage.database import dialect_insert, is_postgresql
from worker.storage.dedup import advisory_lock
from worker.storage.models import ParkedCommentRow, SignalActivityRow, SignalRequestRow
from worker.storage.pgarray import (
    INSTANT,
    Write,
    array,
    instants,
    literal,
    unnest_rows,
    write_together,
)

COUNT_DELTA = {"comment.created": 1, "comment.edited": 0, "comment.deleted": -1}
ACTIVITY_COLUMNS = {
    "user_id": "bigint",
    "comment_count": "integer",
    "last_comment_at": INSTANT,
    "last_comment_id": "text",
    "last_comment_type": "text",
    "updated_at": INSTANT,
}


async def resolve_users(session: AsyncSession, request_ids: set[str]) -> dict[str, int]:
    if not request_ids:
        return {}
    stmt = select(SignalRequestRow.request_id, SignalRequestRow.user_id).where(
        SignalRequestRow.request_id.in_(request_ids)
    )
    return {request_id: user_id for request_id, user_id in (await session.execute(stmt)).all()}


_LOCK_ONE = text(f"SELECT {advisory_lock(':rid')}")


async def lock_request(session: AsyncSession, request_id: str) -> None:
    """Serialise "park a comment" against "map its request" for one request id.

    Without it, under READ COMMITTED a comment can be parked by one transaction while a
    concurrent one saves the mapping and finds nothing to unpark: the comment would stay
    parked forever. PostgreSQL: a transaction-scoped advisory lock on the request id.
    SQLite: write transactions are already serialised (BEGIN IMMEDIATE).
    """
    if is_postgresql(session):
        await session.execute(_LOCK_ONE, {"rid": request_id})


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


def park(session: AsyncSession, source: RawMessage, event: CommentEvent, now: datetime) -> None:
    """Park ``event`` with where it came from (``source``: its dead letter's key and
    headers, should its request never be mapped)."""
    session.add(
        ParkedCommentRow(
            event_id=event.event_id,
            request_id=event.request_id,
            payload=event.model_dump(mode="json"),
            parked_at=now,
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            source_key=source.key,
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

    def add(self, event: Comment) -> None:
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
    params: dict[str, object] = {"a_user_id": literal("bigint", users), "a_t0": now}
    for name, kind in ACTIVITY_COLUMNS.items():
        if name != "user_id":
            values = [c[name] for c in columns]
            params[f"a_{name}"] = (
                instants(values, now) if kind == INSTANT else literal(kind, values)
            )
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


# PostgreSQL, set-based: the advisory locks of ``lock_request`` for many request ids, in one
# order (concurrent batches never deadlock on them). A mapping batch takes them in its claim
# (``dedup.claim(lock=...)``), a comment batch before it parks (``comments.resolve_batch``).
LOCK_REQUESTS = text(
    f"SELECT count({advisory_lock('r')}) "
    f"FROM (SELECT DISTINCT r FROM unnest({array('ids', 'text')}) AS r ORDER BY r) AS s"
)
MAPPING_COLUMNS = {"request_id": "text", "user_id": "bigint", "occurred_at": "timestamptz"}


@lru_cache(maxsize=2)
def upsert_mappings(prefix: str) -> str:
    """Save mappings (a newer mapping event wins), answering with each request's user; the
    parameters are named ``prefix`` + column, and ``prefix`` + ``now``."""
    return (
        "INSERT INTO signal_requests (request_id, user_id, occurred_at, created_at) "
        f"SELECT v.request_id, v.user_id, v.occurred_at, CAST(:{prefix}now AS timestamptz) "
        f"FROM {unnest_rows(MAPPING_COLUMNS, prefix)} "
        "ON CONFLICT (request_id) DO UPDATE SET "
        "user_id = CASE WHEN excluded.occurred_at > signal_requests.occurred_at "
        "THEN excluded.user_id ELSE signal_requests.user_id END, "
        "occurred_at = CASE WHEN excluded.occurred_at > signal_requests.occurred_at "
        "THEN excluded.occurred_at ELSE signal_requests.occurred_at END "
        "RETURNING request_id, user_id"
    )


# What a released comment's rules read of its stored payload (validated when it was parked),
# taken out in SQL so that no JSON is parsed nor a model built in Python per comment: its
# request, user and parking time, then the fields of a ``ParkedComment``.
RELEASED = (
    "r.request_id, r.user_id, r.parked_at, r.event_id, r.payload->>'type', "
    "r.payload->>'comment_id', CAST(r.payload->>'occurred_at' AS timestamptz)"
)


def mapping_params(
    events: list[RequestEvent], now: datetime, prefix: str = "m_"
) -> dict[str, object]:
    return {
        f"{prefix}now": now,
        f"{prefix}request_id": literal("text", [e.request_id for e in events]),
        f"{prefix}user_id": literal("bigint", [e.user_id for e in events]),
        f"{prefix}occurred_at": literal("timestamptz", [e.occurred_at for e in events]),
    }


PARK_COLUMNS = {
    "event_id": "text",
    "request_id": "text",
    "payload": "jsonb",
    "source_topic": "text",
    "source_partition": "integer",
    "source_offset": "bigint",
    "source_key": "bytea",
}
PARK = (
    f"INSERT INTO parked_comments ({', '.join(PARK_COLUMNS)}, parked_at) "
    f"SELECT v.*, CAST(:k_now AS timestamptz) FROM {unnest_rows(PARK_COLUMNS, 'k_')}"
)


def park_write(parked: list[tuple[RawMessage, CommentEvent]], now: datetime) -> Write | None:
    """PostgreSQL: ``park`` for a batch's comments (with their sources) as one ``Write``
    (under the locks of ``LOCK_REQUESTS``, held until the commit)."""
    if not parked:
        return None
    events = [event for _, event in parked]
    sources = [source for source, _ in parked]
    return Write(
        PARK,
        {
            "k_now": now,
            "k_event_id": literal("text", [e.event_id for e in events]),
            "k_request_id": literal("text", [e.request_id for e in events]),
            "k_payload": literal("text", [e.model_dump_json() for e in events]),
            "k_source_topic": literal("text", [s.topic for s in sources]),
            "k_source_partition": literal("integer", [s.partition for s in sources]),
            "k_source_offset": literal("bigint", [s.offset for s in sources]),
            "k_source_key": literal("bytea", [s.key for s in sources]),
        },
    )
