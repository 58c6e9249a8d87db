"""Parked comments past ``WB_PARKED_RETENTION`` leave as dead letters: none is kept forever.

A comment that names only its request waits in ``parked_comments`` until the request's
mapping arrives (``signal_records.park``, ``mappings``). A request that is never mapped (a
producer bug, a lost mapping) would keep its comments there for good, unseen. Past the
retention they become dead letters with reason ``unmapped``, transport-neutral
``DeadLetter`` values the Kafka layer turns into records of the comments' dead-letter
topic, so that nothing vanishes silently and an operator can replay them once the mapping
exists.

``take_expired`` deletes the oldest expired rows and returns their letters inside the
caller's transaction; the caller publishes them and commits only once the broker acked (as
the outbox relay does: ``runtime.process.Runtime.expire_parked``), so a crash or a failed
publish rolls the rows back (at least once; a letter published twice is still one event id,
which a replay applies once). The comment's claim in ``processed_events`` goes with the row,
as every dead-lettered event's does, so that a replay is applied rather than skipped as a
duplicate.

What a letter carries: the comment as validated when it was parked (the stored JSON: the
same fields, timestamps in UTC, unknown fields dropped; the original bytes are not kept),
under the original key, with the original topic, partition and offset in its headers. Rows
parked before revision 0010 have no source: no key, partition and offset -1, and the
configured comments topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import DeadLetter, RawMessage
from worker.domain.decoder import RejectReason
from worker.domain.wire import InputStream
from worker.storage import dedup
from worker.storage.models import ParkedCommentRow

P = ParkedCommentRow
UNKNOWN = -1  # the partition and offset of a row parked before its source was kept


@dataclass(frozen=True, slots=True)
class Parked:
    """How many comments are parked and since when the oldest (None: none is)."""

    count: int
    oldest: datetime | None


async def parked(session: AsyncSession) -> Parked:
    """The parked comments' count and the oldest's parking time, in one query."""
    count, oldest = (await session.execute(select(func.count(), func.min(P.parked_at)))).one()
    return Parked(int(count or 0), oldest)


async def take_expired(
    session: AsyncSession, cutoff: datetime, limit: int, topic: str
) -> list[DeadLetter]:
    """Delete up to ``limit`` comments parked before ``cutoff`` (oldest first) and unclaim
    their event ids; returns their dead letters (``topic``: the source of a row that kept
    none). PostgreSQL: SKIP LOCKED, so a mapping releasing a row meanwhile keeps it."""
    stmt = (
        select(P)
        .where(P.parked_at < cutoff)
        .order_by(P.parked_at, P.event_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list((await session.scalars(stmt)).all())
    if not rows:
        return []
    ids = [row.event_id for row in rows]
    letters = [_letter(row, topic) for row in rows]
    await session.execute(
        delete(P).where(P.event_id.in_(ids)).execution_options(synchronize_session=False)
    )
    await dedup.record_outcomes(session, InputStream.COMMENTS, {dedup.DEAD_LETTERED: ids})
    return letters


def _letter(row: ParkedCommentRow, topic: str) -> DeadLetter:
    value = json.dumps(row.payload, separators=(",", ":")).encode()
    source = RawMessage(
        value,
        row.source_topic or topic,
        UNKNOWN if row.source_partition is None else row.source_partition,
        UNKNOWN if row.source_offset is None else row.source_offset,
        row.source_key,
    )
    detail = f"request {row.request_id} not mapped since {row.parked_at.isoformat()}"
    return DeadLetter(source, RejectReason.UNMAPPED, detail)
