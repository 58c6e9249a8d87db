"""Results on PostgreSQL, set-based: a batch of results in two statements after the claim.

The rules are ``worker.services.results``'; this is their form for a whole batch on plain
``RowState`` values: create the rows results will write to and lock them all, apply the
rules in Python, then write the rows, the outbox row, the fresh transitions, the spend and
token settlements (``worker.services.spend``) and the outcomes (dead-lettered events
unclaimed) together, whatever the batch's size. SQLite keeps the ORM path
(``results.upsert_auto_row``); the differential test holds the two to the same rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import BatchResult, DeadLetter, RawMessage
from worker.domain.decoder import RejectReason
from worker.domain.errors import InvalidInput, SnapshotConflict, SupersededResult
from worker.domain.scheduling import RegenPolicy
from worker.domain.values import GeneratedHighlight, UpsertMeta, UpsertOutcome, quote_json
from worker.domain.wire import GeneratedEvent, InputStream
from worker.services.locking import WRITTEN, lock_states
from worker.services.outbox import OutboxEntry, OutboxSink, insert_write
from worker.services.result_costs import book_cost, cost_share
from worker.services.results import (
    FreshTransition,
    apply_result,
    judge_result,
    result_of,
    settle_result,
    usage_columns,
    validate_result,
)
from worker.services.spend import cost_writes
from worker.storage import dedup
from worker.storage.models import RowState
from worker.storage.pgarray import (
    Write,
    arrays_of,
    literal,
    sent_as_instants,
    unnest_rows,
    write_together,
)

log = logging.getLogger(__name__)


# The content columns a result writes besides the freshness ones (``WRITTEN``).
CONTENT = {
    "bio_text": "text",
    "proof_points_json": "jsonb",
    "quotes_json": "jsonb",
    "source_group": "text",
    "snapshot_hash": "text",
    "llm_model": "text",
    "generated_at": "timestamptz",
    "stale_after": "timestamptz",
    "usage_input_tokens": "bigint",
    "usage_output_tokens": "bigint",
    "usage_cost_usd": "double precision",
}
# What the stored highlight covers of the input snapshot (``worker.domain.snapshot``).
COVERED = {"covered_version": "bigint", "covered_fingerprint": "bigint"}
RESULT_COLUMNS = sent_as_instants({"user_id": "bigint", **CONTENT, **WRITTEN, **COVERED})
RESULT_WRITE = (
    "UPDATE user_profile_highlights AS h SET "
    + ", ".join(f"{name} = v.{name}" for name in {**CONTENT, **WRITTEN, **COVERED})
    + f" FROM {unnest_rows(RESULT_COLUMNS, 'g_')} WHERE h.user_id = v.user_id"
)


_FROM_CONTENT = frozenset(CONTENT) - {"snapshot_hash", "generated_at"}  # the rest: RowState


@dataclass(slots=True)
class _Content:
    bio_text: str
    proof_points_json: str
    quotes_json: str
    source_group: str
    llm_model: str
    stale_after: datetime
    usage_input_tokens: int | None = None
    usage_output_tokens: int | None = None
    usage_cost_usd: float | None = None


def _content(payload: GeneratedHighlight, meta: UpsertMeta, ttl: timedelta) -> _Content:
    return _Content(
        payload.bio_text,
        json.dumps(list(payload.proof_points)),
        json.dumps([quote_json(q) for q in payload.quotes]),
        payload.source_group,
        payload.llm_model,
        payload.stale_after or payload.generated_at + ttl,
        *usage_columns(meta),
    )


def rows_write(
    states: dict[int, RowState], contents: dict[int, _Content], now: datetime
) -> Write | None:
    """The changed rows (content and freshness columns) as one UPDATE from arrays."""
    users = sorted(contents)
    if not users:
        return None
    values: dict[str, list[object]] = {}
    for name in RESULT_COLUMNS:
        source: Mapping[int, object] = contents if name in _FROM_CONTENT else states
        values[name] = [getattr(source[u], name) for u in users]
    return Write(RESULT_WRITE, arrays_of(RESULT_COLUMNS, values, "g_", now))


TRANSITION_COLUMNS = {
    "user_id": "bigint",
    "stale_s": "double precision",
    "wait_s": "double precision",
}
TRANSITIONS = (
    "INSERT INTO fresh_transitions (at, user_id, stale_s, wait_s) "
    "SELECT CAST(:f_at AS timestamptz), v.user_id, v.stale_s, v.wait_s "
    f"FROM {unnest_rows(TRANSITION_COLUMNS, 'f_')}"
)


def transitions_write(transitions: list[FreshTransition], now: datetime) -> Write | None:
    """The batch's stale-to-fresh transitions (the overview's time-to-fresh), in order."""
    if not transitions:
        return None
    params: dict[str, object] = {"f_at": now}
    for name, kind in TRANSITION_COLUMNS.items():
        params["f_" + name] = literal(kind, [getattr(t, name) for t in transitions])
    return Write(TRANSITIONS, params)


@dataclass
class _Batch:
    """A result batch's working set on plain values; its requests go to ``queued`` (one
    outbox row) under ``policy``."""

    now: datetime
    ttl: timedelta
    result: BatchResult
    policy: RegenPolicy
    states: dict[int, RowState] = field(default_factory=dict)
    contents: dict[int, _Content] = field(default_factory=dict)
    queued: list[OutboxEntry] = field(default_factory=list)
    outcomes: dict[str, list[str]] = field(default_factory=dict)
    transitions: list[FreshTransition] = field(default_factory=list)
    sink: OutboxSink = field(init=False)

    def __post_init__(self) -> None:
        self.sink = OutboxSink(self.queued.append, self.policy)

    def apply(self, event: GeneratedEvent, payload: GeneratedHighlight, meta: UpsertMeta) -> str:
        share = cost_share(self.states.get(event.user_id), event)
        outcome = self._apply(event, payload, meta)
        book_cost(self.result, share, self.states.get(event.user_id), outcome)
        return outcome

    def _apply(self, event: GeneratedEvent, payload: GeneratedHighlight, meta: UpsertMeta) -> str:
        state = self.states.get(event.user_id)
        try:
            judged = judge_result(state, payload, event.snapshot_hash, meta)
        except (SupersededResult, SnapshotConflict) as exc:
            log.info("result %s: %s", event.event_id, exc)
            refused = isinstance(exc, SupersededResult)
            return (UpsertOutcome.SUPERSEDED if refused else UpsertOutcome.CONFLICT).value
        assert state is not None  # created by lock_states: the result names no base snapshot
        if judged is not None:
            return judged.value
        pending_since = state.regen_requested_at
        self.contents[event.user_id] = _content(payload, meta, self.ttl)
        outcome = settle_result(
            state, payload, event.snapshot_hash, meta, self.now, self.transitions.append
        )
        return apply_result(self.sink, state, event, outcome, pending_since, self.now, self.result)


async def apply_result_batch(
    session: AsyncSession,
    events: list[tuple[RawMessage, GeneratedEvent]],
    now: datetime,
    ttl: timedelta,
    result: BatchResult,
    record: Callable[[dict[str, list[str]]], list[Write | None]],
    policy: RegenPolicy,
) -> dict[str, list[str]]:
    """Apply already-claimed results in order; returns event ids by outcome. A result the
    store refuses as invalid is dead-lettered (``record`` unclaims it); a request asked
    again follows ``policy``."""
    stream = InputStream.GENERATED
    batch = _Batch(now, ttl, result, policy)
    valid: list[tuple[GeneratedEvent, GeneratedHighlight, UpsertMeta]] = []
    for message, event in events:
        payload, meta = result_of(event)  # once per event: a model with validation
        try:
            validate_result(payload, event.snapshot_hash, now)
        except InvalidInput as exc:
            result.dead_letters.append(
                DeadLetter(message, RejectReason.REJECTED_BY_STORE, str(exc))
            )
            batch.outcomes.setdefault(dedup.DEAD_LETTERED, []).append(event.event_id)
            result.count(stream, dedup.DEAD_LETTERED)
            continue
        valid.append((event, payload, meta))
    if valid:
        creating = {e.user_id for e, _, _ in valid if e.base_snapshot_hash is None}
        batch.states = await lock_states(session, {e.user_id for e, _, _ in valid}, now, creating)
    for event, payload, meta in valid:
        outcome = batch.apply(event, payload, meta)
        result.count(stream, outcome)
        batch.outcomes.setdefault(outcome, []).append(event.event_id)
    writes = [
        rows_write(batch.states, batch.contents, now),
        insert_write(batch.queued),
        transitions_write(batch.transitions, now),
        *cost_writes(result),
    ]
    await write_together(session, [*writes, *record(batch.outcomes)])
    return batch.outcomes
