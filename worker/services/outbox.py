"""The transactional outbox: regen requests are rows first, Kafka messages second.

A request is inserted in the same transaction as the stale mark that caused it, so a
crash can never leave a stale row without its request or a request for a change that
rolled back. The relay publishes rows at least once; consumers deduplicate by event_id.

A row is a batch: every message one transaction queued for a topic, one per line as
``key<TAB>json``. Keys are user ids and compact JSON never holds a raw tab or newline, so
the relay splits lines without parsing JSON, and a set-based statement (the sweep) can
build a whole batch with ``string_agg``. Published rows are deleted.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.cost import Lane, lane_for
from worker.domain.scheduling import IMMEDIATE, RegenPolicy, priority_for
from worker.domain.snapshot import wire
from worker.domain.values import RegenReason
from worker.domain.wire import regen_request_payload
from worker.storage.models import HighlightRow, OutboxRow, RowState
from worker.storage.pgarray import Write

# The topic is stored per row so that renaming WB_TOPIC_REGEN_REQUESTS never strands rows;
# rows are written with this logical name and resolved to the configured topic on publish.
REGEN_STREAM = "regen-requests"
# The batch lane's requests (``worker.domain.cost``): ``WB_TOPIC_REGEN_REQUESTS_BATCH``, or
# the one request topic when it is unset (the relay resolves both).
REGEN_BATCH_STREAM = "regen-requests-batch"
REGEN_STREAMS = (REGEN_STREAM, REGEN_BATCH_STREAM)
LANE_STREAMS = {Lane.INTERACTIVE: REGEN_STREAM, Lane.BATCH: REGEN_BATCH_STREAM}
# Compact JSON, one encoder for all (``json.dumps`` with options builds one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    stream: str
    key: str
    value: str  # the JSON text, published as it is stored

    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.value))


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A message to queue (its event id is in the payload); ``batch_rows`` makes rows."""

    topic: str
    key: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxSink:
    """Where a transaction's requests go (``add``), and the scheduler policy they are made
    under: the staleness rules receive both together, so a rule deep in a batch knows
    whether to request at once or to queue without reading process-wide state."""

    add: Callable[[OutboxEntry], None]
    policy: RegenPolicy = IMMEDIATE


def session_sink(session: AsyncSession, policy: RegenPolicy) -> OutboxSink:
    """Queue each entry as its own row in ``session`` (flushed with the rest of its changes):
    the ORM paths make a request or a few per transaction."""

    def add(entry: OutboxEntry) -> None:
        session.add_all(batch_rows([entry]))

    return OutboxSink(add, policy)


def batch_rows(entries: Iterable[OutboxEntry]) -> list[OutboxRow]:
    """One row per topic holding ``entries`` in order."""
    return [
        OutboxRow(topic=t, messages=m, message_count=n, created_at=c)
        for t, m, n, c in _batches(entries)
    ]


def insert_write(entries: Iterable[OutboxEntry]) -> Write | None:
    """PostgreSQL: the rows of ``batch_rows`` as a ``Write``, to go with the rest of a
    batch's writes in one statement (``pgarray.write_together``)."""
    batches = _batches(entries)
    if not batches:
        return None
    params: dict[str, object] = {}
    values = []
    for i, batch in enumerate(batches):
        names = [f"o{i}_{column}" for column in ("topic", "messages", "count", "created")]
        params.update(zip(names, batch, strict=True))
        values.append(f"(:{names[0]}, :{names[1]}, :{names[2]}, CAST(:{names[3]} AS timestamptz))")
    sql = "INSERT INTO outbox (topic, messages, message_count, created_at) VALUES "
    return Write(sql + ", ".join(values), params)


def _batches(entries: Iterable[OutboxEntry]) -> list[tuple[str, str, int, datetime]]:
    """(topic, ``key<TAB>json`` lines, message count, time) per topic, in order."""
    lines: dict[str, list[str]] = {}
    created: dict[str, datetime] = {}
    for entry in entries:
        value = _ENCODER.encode(entry.payload)
        lines.setdefault(entry.topic, []).append(_line(entry.key, value))
        created.setdefault(entry.topic, entry.created_at)
    return [(t, "\n".join(batch), len(batch), created[t]) for t, batch in lines.items()]


def _line(key: str, value: str) -> str:
    if "\t" in key or "\n" in key:
        raise ValueError(f"an outbox key cannot hold a tab or a newline: {key!r}")
    return f"{key}\t{value}"


def _messages(topic: str, text: str) -> list[OutboxMessage]:
    return [OutboxMessage(topic, *line.split("\t", 1)) for line in text.split("\n")]


# What the staleness rules work on: the ORM row, or its plain values (set-based path).
Requestable = HighlightRow | RowState


def new_request_id() -> str:
    """32 random hex digits (uuid4's hex form costs several times more to make)."""
    return secrets.token_hex(16)


def regen_payload(
    row: Requestable,
    request_id: str,
    reason: RegenReason,
    now: datetime,
    trigger: str | None,
    priority: int,
    respond_by: datetime | None,
) -> dict[str, Any]:
    """The request ``row`` stands for (its generation, snapshot and inputs, as of now), in
    the lane of ``priority`` (``respond_by``: a batch request's deadline)."""
    inputs = (row.input_version, wire(row.input_fingerprint))
    return regen_request_payload(
        request_id,
        row.user_id,
        reason,
        row.generation,
        row.snapshot_hash,
        now,
        trigger,
        priority,
        inputs,
        (lane_for(priority), respond_by),
    )


def request_regeneration(
    sink: OutboxSink,
    row: Requestable,
    reason: RegenReason,
    now: datetime,
    trigger: str | None = None,
    priority: int | None = None,
) -> str:
    """Make ``row``'s pending request a new one and queue it in the outbox; returns the
    request id. Stale marks do not call this directly: they go through
    ``worker.services.staleness.enqueue``, which calls this at once under an immediate
    policy; otherwise the scheduler's step does, when the request is due.

    The caller holds the row lock; the one-pending-per-user rule is the caller's to keep.
    """
    if priority is None:
        priority = priority_for(row.stale_reason, trigger)
    lane = lane_for(priority)
    respond_by = now + sink.policy.batch_deadline if lane is Lane.BATCH else None
    request_id = new_request_id()
    row.regen_attempts = row.regen_attempts + 1 if reason is RegenReason.RETRY else 1
    row.regen_request_id = request_id
    row.regen_requested_at = now
    row.regen_generation = row.generation
    row.regen_request_lane, row.regen_request_reason = lane.value, reason.value
    row.regen_token_estimate = None  # the scheduler step charges one, under a token budget
    row.updated_at = now
    sink.add(
        OutboxEntry(
            topic=LANE_STREAMS[lane],
            key=str(row.user_id),
            payload=regen_payload(row, request_id, reason, now, trigger, priority, respond_by),
            created_at=now,
        )
    )
    return request_id


async def take(session: AsyncSession, max_messages: int) -> list[OutboxMessage]:
    """Delete the oldest rows until ``max_messages`` messages are reached (the last row
    may take it over) and return their messages in order: fewer than ``max_messages``
    means no row was left that this session could take, so the relay need not look again
    until woken. The caller publishes them and commits only after the broker acked, so a
    failed publish rolls the rows back. PostgreSQL: SKIP LOCKED, so relays in several
    workers do not overlap."""
    candidates = (
        await session.execute(
            select(OutboxRow.id, OutboxRow.message_count)
            .order_by(OutboxRow.id)
            .limit(max_messages)
            .with_for_update(skip_locked=True)
        )
    ).all()
    ids: list[int] = []
    total = 0
    for row_id, count in candidates:
        if total >= max_messages:
            break
        ids.append(row_id)
        total += count
    if not ids:
        return []
    taken = await session.execute(
        delete(OutboxRow)
        .where(OutboxRow.id.in_(ids))
        .returning(OutboxRow.id, OutboxRow.topic, OutboxRow.messages)
    )
    return [m for _, topic, text in sorted(taken.all()) for m in _messages(topic, text)]


async def pending(session: AsyncSession) -> list[OutboxMessage]:
    """Every message not yet published, in order (for checks and operators; not the relay)."""
    rows = await session.execute(select(OutboxRow.topic, OutboxRow.messages).order_by(OutboxRow.id))
    return [m for topic, text in rows.all() for m in _messages(topic, text)]


async def requests_unpublished(
    session: AsyncSession, streams: Iterable[str] = REGEN_STREAMS
) -> int:
    """Regeneration requests of ``streams`` (lanes) waiting in the outbox (a relay
    publishing them holds its delete uncommitted until the broker acked: they count as
    waiting until then)."""
    stmt = select(func.coalesce(func.sum(OutboxRow.message_count), 0)).where(
        OutboxRow.topic.in_(list(streams))
    )
    return int((await session.scalar(stmt)) or 0)


async def backlog(session: AsyncSession) -> int:
    """Messages not yet published."""
    stmt = select(func.coalesce(func.sum(OutboxRow.message_count), 0))
    return int((await session.scalar(stmt)) or 0)
