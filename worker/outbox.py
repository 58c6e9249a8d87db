"""The transactional outbox: regen requests are rows first, Kafka messages second.

A request is inserted in the same transaction as the stale mark that caused it, so a
crash can never leave a stale row without its request or a request for a change that
rolled back. The relay publishes rows at least once; consumers deduplicate by event_id.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain import RegenReason
from worker.models import HighlightRow, OutboxRow, RowState

# The topic is stored per row so that renaming WB_TOPIC_REGEN_REQUESTS never strands rows;
# rows are written with this logical name and resolved to the configured topic on publish.
REGEN_STREAM = "regen-requests"


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    event_id: str
    stream: str
    key: str
    payload: str  # the JSON text, published as it is stored


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A message to queue; an ``OutboxSink`` turns it into a row (ORM or set-based)."""

    event_id: str
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: datetime


OutboxSink = Callable[[OutboxEntry], None]


def session_sink(session: AsyncSession) -> OutboxSink:
    """Queue entries as ORM rows in ``session`` (flushed with the rest of its changes)."""

    def add(entry: OutboxEntry) -> None:
        session.add(OutboxRow(**asdict(entry)))

    return add


# What the staleness rules work on: the ORM row, or its plain values (set-based path).
Requestable = HighlightRow | RowState


def new_request_id() -> str:
    """32 random hex digits (uuid4's hex form costs several times more to make)."""
    return secrets.token_hex(16)


def regen_payload(
    row: Requestable, request_id: str, reason: RegenReason, now: datetime, trigger: str | None
) -> dict[str, Any]:
    """The JSON a regen request carries (schemas/regen-request.json)."""
    payload: dict[str, Any] = {
        "event_id": request_id,
        "user_id": row.user_id,
        "reason": reason.value,
        "generation": row.generation,
        "snapshot_hash": row.snapshot_hash,
        "requested_at": now.isoformat(),
    }
    if trigger:
        payload["trigger"] = trigger
    return payload


def request_regeneration(
    sink: OutboxSink,
    row: Requestable,
    reason: RegenReason,
    now: datetime,
    trigger: str | None = None,
) -> str:
    """Make ``row``'s pending request a new one and queue it; returns the request id.

    The caller holds the row lock; the one-pending-per-user rule is the caller's to keep.
    """
    request_id = new_request_id()
    row.regen_attempts = row.regen_attempts + 1 if reason is RegenReason.RETRY else 1
    row.regen_request_id = request_id
    row.regen_requested_at = now
    row.regen_generation = row.generation
    row.updated_at = now
    sink(
        OutboxEntry(
            event_id=request_id,
            topic=REGEN_STREAM,
            key=str(row.user_id),
            payload=regen_payload(row, request_id, reason, now, trigger),
            created_at=now,
        )
    )
    return request_id


async def claim_unpublished(session: AsyncSession, limit: int) -> list[OutboxMessage]:
    """Oldest unpublished rows, locked (PostgreSQL: SKIP LOCKED) so relays do not overlap.

    Plain columns, the payload as its JSON text: no ORM objects, no parse-and-reserialise.
    """
    stmt = (
        select(
            OutboxRow.id,
            OutboxRow.event_id,
            OutboxRow.topic,
            OutboxRow.key,
            cast(OutboxRow.payload, Text),
        )
        .where(OutboxRow.published_at.is_(None))
        .order_by(OutboxRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [OutboxMessage(*row) for row in (await session.execute(stmt)).all()]


async def mark_published(session: AsyncSession, ids: Sequence[int], now: datetime) -> None:
    if ids:
        await session.execute(
            update(OutboxRow).where(OutboxRow.id.in_(ids)).values(published_at=now)
        )


async def backlog(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
    return int((await session.scalar(stmt)) or 0)
