"""Generated results: the rules a result meets on its row, and their set-based form.

A result is checked (``validate_result``), refused when superseded or conflicting with its
base snapshot (``judge_result``), and settled behind the generation fence
(``settle_result``: a row marked stale after the result's base stays stale; a stale row made
fresh is a ``FreshTransition``); an override is untouched. ``upsert_auto_row`` is those
rules on one locked ORM row (the store's façade and the pipeline's ORM path). After a stored
result, ``apply_result``: a pending request the result answers is cleared, and asked again
when the row stays stale. The rules work on an ORM row as well as on plain ``RowState``
values. ``apply_result_batch`` applies a batch of results on PostgreSQL in two statements
after the claim, whatever its size: create the rows results will write to and lock them all,
then (rules applied in Python) write the rows, the outbox row and the outcomes
(dead-lettered events unclaimed) together. SQLite keeps the ORM path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain import snapshot
from worker.domain.batch import BatchResult, DeadLetter, RawMessage
from worker.domain.cost import UNREQUESTED, lane_for
from worker.domain.decoder import RejectReason
from worker.domain.errors import InvalidInput, SnapshotConflict, SupersededResult
from worker.domain.scheduling import RegenPolicy, priority_for
from worker.domain.values import (
    AttributedQuote,
    GeneratedHighlight,
    StaleReason,
    UpsertMeta,
    UpsertOutcome,
    check_aware,
    quote_json,
)
from worker.domain.wire import GeneratedEvent, InputStream
from worker.services.locking import WRITTEN, lock_or_create_row, lock_row, lock_states
from worker.services.outbox import OutboxEntry, OutboxSink, Requestable, insert_write
from worker.services.spend import cost_writes
from worker.services.staleness import clear_stale, request_if_unanswered
from worker.storage import dedup
from worker.storage.models import FreshTransitionRow, HighlightRow, RowState
from worker.storage.pgarray import Write, literal, unnest_rows, write_together

log = logging.getLogger(__name__)


def validate_result(payload: GeneratedHighlight, snapshot_hash: str, now: datetime) -> None:
    if not snapshot_hash or len(snapshot_hash) > 128:
        raise InvalidInput("snapshot_hash must be 1-128 characters")
    check_aware("generated_at", payload.generated_at, now)
    check_aware("stale_after", payload.stale_after)
    if payload.stale_after is not None and payload.stale_after <= payload.generated_at:
        raise InvalidInput("stale_after must be later than generated_at")


@dataclass(frozen=True, slots=True)
class FreshTransition:
    """A result made a stale row fresh: how long it was stale, how long its request waited
    (the overview's time-to-fresh; written in the result's transaction)."""

    user_id: int
    stale_s: float
    wait_s: float | None


def fresh_transition(row: Requestable, now: datetime) -> FreshTransition | None:
    if not row.is_stale or row.stale_since is None:
        return None
    requested = row.regen_requested_at
    return FreshTransition(
        row.user_id,
        max((now - row.stale_since).total_seconds(), 0.0),
        max((now - requested).total_seconds(), 0.0) if requested else None,
    )


def _write_content(
    row: HighlightRow, payload: GeneratedHighlight, snapshot_hash: str, ttl: timedelta
) -> None:
    row.bio_text = payload.bio_text
    row.proof_points_json = list(payload.proof_points)
    row.quotes_json = [quote_json(q) for q in payload.quotes]
    row.source_group = payload.source_group
    row.snapshot_hash = snapshot_hash
    row.llm_model = payload.llm_model
    row.generated_at = payload.generated_at
    row.stale_after = payload.stale_after or payload.generated_at + ttl


def _write_usage(row: HighlightRow | _Content, meta: UpsertMeta) -> None:
    """The stored highlight's generation's usage (None where not reported)."""
    usage = meta.usage
    row.usage_input_tokens = usage.input_tokens if usage else None
    row.usage_output_tokens = usage.output_tokens if usage else None
    row.usage_cost_usd = usage.cost_usd if usage else None


@dataclass(frozen=True, slots=True)
class CostShare:
    """Where a result's usage is booked (``worker.domain.cost``): the lane and reason of
    the pending request it answers, read before the result settles it, ``unrequested``
    when it answers none; and what its request's token estimate missed by (estimate -
    actual), when the request was charged one and the result reports tokens."""

    lane: str
    reason: str
    settlement: float | None = None


def cost_share(row: Requestable | None, event: GeneratedEvent) -> CostShare:
    """A request made before requests recorded their lane has its stale reason's."""
    if row is None or not answers_pending(row, event):
        return CostShare(lane_for(priority_for(None)).value, UNREQUESTED)
    lane = row.regen_request_lane or lane_for(priority_for(row.stale_reason)).value
    reason = row.regen_request_reason or row.stale_reason or "manual"
    usage = event.usage
    if row.regen_token_estimate is None or usage is None:
        return CostShare(lane, reason)
    if usage.input_tokens is None and usage.output_tokens is None:
        return CostShare(lane, reason)
    actual = (usage.input_tokens or 0) + (usage.output_tokens or 0)
    return CostShare(lane, reason, float(row.regen_token_estimate - actual))


def book_cost(result: BatchResult, share: CostShare, event: GeneratedEvent, outcome: str) -> None:
    """Count a result's usage and settle its request's estimate, unless it is one already
    stored (the same generation again)."""
    if outcome == UpsertOutcome.DUPLICATE.value:
        return
    result.spend.book(share.lane, share.reason, event.usage.usage() if event.usage else None)
    if share.settlement is not None:
        result.token_settlements.append((share.lane, share.settlement))


def judge_result(
    row: Requestable | None, payload: GeneratedHighlight, snapshot_hash: str, meta: UpsertMeta
) -> UpsertOutcome | None:
    """The store's refusals, on the locked row (ORM or plain values; None: there is no row):
    raises ``SupersededResult`` / ``SnapshotConflict``, returns DUPLICATE for a result
    already stored, None for one to apply (``settle_result``)."""
    if row is None:
        if meta.base_snapshot_hash is not None:  # there is no row, so not that snapshot
            raise SnapshotConflict(payload.user_id, meta.base_snapshot_hash, None)
        return None  # applied to a new, empty row (nothing to refuse on it)
    stored_hash, stored_at = row.snapshot_hash, row.generated_at
    if stored_hash == snapshot_hash and stored_at == payload.generated_at:
        return UpsertOutcome.DUPLICATE
    if stored_at is not None and not snapshot.supersedes(
        meta.input_version,
        row.covered_version,
        (payload.generated_at, snapshot_hash),
        (stored_at, stored_hash or ""),
    ):
        raise SupersededResult(
            payload.user_id,
            f"generated_at {payload.generated_at.isoformat()} is not newer than the stored "
            f"{stored_at.isoformat()}",
        )
    if meta.base_snapshot_hash is not None and meta.base_snapshot_hash != stored_hash:
        raise SnapshotConflict(payload.user_id, meta.base_snapshot_hash, stored_hash)
    return None


def stale_again(row: Requestable, now: datetime) -> None:
    """A result behind the inputs leaves its row stale, or makes a fresh one stale (its
    inputs changed while a highlight of unknown coverage was judged by timestamps)."""
    if not row.is_stale:
        row.is_stale, row.stale_since = True, now
        row.stale_reason = StaleReason.NEW_COMMENT.value
        row.generation += 1


def settle_result(
    row: Requestable,
    payload: GeneratedHighlight,
    snapshot_hash: str,
    meta: UpsertMeta,
    now: datetime,
    fresh: Callable[[FreshTransition], None],
) -> UpsertOutcome:
    """A judged result's freshness columns (the content's other columns are the caller's):
    the generation fence keeps a row stale that was marked after the result's base; a
    stale row made fresh is reported to ``fresh``."""
    row.snapshot_hash = snapshot_hash
    row.generated_at = payload.generated_at
    row.updated_at = now
    covers = snapshot.coverage(meta.input_version, row.input_version, row.input_fingerprint)
    row.covered_version, row.covered_fingerprint = covers.version, covers.fingerprint
    if covers.behind:  # the inputs moved on since the result's snapshot
        stale_again(row, now)
        return UpsertOutcome.APPLIED_STILL_STALE
    if meta.generation is not None and meta.generation < row.generation:
        row.covered_fingerprint = None  # marked since, not only by inputs: never skipped
        return UpsertOutcome.APPLIED_STILL_STALE
    if (transition := fresh_transition(row, now)) is not None:
        fresh(transition)
    clear_stale(row)
    return UpsertOutcome.APPLIED


async def upsert_auto_row(
    session: AsyncSession,
    payload: GeneratedHighlight,
    snapshot_hash: str,
    meta: UpsertMeta,
    now: datetime,
    ttl: timedelta,
) -> tuple[HighlightRow, UpsertOutcome]:
    """Store a generated highlight under the five rules of the store (see README) and
    return the locked row, for callers that act on it afterwards.

    A refused result writes nothing: a placeholder row is only inserted when no row exists
    and no base snapshot is named, and such a row can only be refused if a concurrent
    writer created it first (then our insert did nothing).
    """
    validate_result(payload, snapshot_hash, now)
    row = await lock_row(session, payload.user_id)
    if row is None:
        judge_result(None, payload, snapshot_hash, meta)
        # Another writer may create the row between our look and our insert: the checks
        # below run against whatever row we end up holding the lock on.
        row = await lock_or_create_row(session, payload.user_id, now)
    if (judged := judge_result(row, payload, snapshot_hash, meta)) is not None:
        return row, judged
    _write_content(row, payload, snapshot_hash, ttl)
    _write_usage(row, meta)
    transitions: list[FreshTransition] = []
    outcome = settle_result(row, payload, snapshot_hash, meta, now, transitions.append)
    session.add_all(
        FreshTransitionRow(at=now, user_id=t.user_id, stale_s=t.stale_s, wait_s=t.wait_s)
        for t in transitions
    )
    return row, outcome


def result_of(event: GeneratedEvent) -> tuple[GeneratedHighlight, UpsertMeta]:
    payload = GeneratedHighlight(
        user_id=event.user_id,
        bio_text=event.bio_text,
        proof_points=list(event.proof_points),
        quotes=[
            q if isinstance(q, str) else AttributedQuote(text=q.text, comment_id=q.comment_id)
            for q in event.quotes
        ],
        source_group=event.source_group,
        llm_model=event.llm_model,
        generated_at=event.generated_at,
        stale_after=event.stale_after,
    )
    meta = UpsertMeta(
        base_snapshot_hash=event.base_snapshot_hash,
        generation=event.generation,
        regen_request_id=event.regen_request_id,
        input_version=event.input_version,
        usage=event.usage.usage() if event.usage else None,
    )
    return payload, meta


def answers_pending(row: Requestable, event: GeneratedEvent) -> bool:
    if row.regen_request_id is None:
        return False
    if event.regen_request_id is not None and event.regen_request_id == row.regen_request_id:
        return True
    return (
        event.generation is not None
        and row.regen_generation is not None
        and event.generation >= row.regen_generation
    )


def apply_result(
    sink: OutboxSink,
    row: Requestable,
    event: GeneratedEvent,
    outcome: UpsertOutcome,
    pending_since: datetime | None,
    now: datetime,
    result: BatchResult,
) -> str:
    """What follows a stored result on its row; returns the outcome's name."""
    if outcome is UpsertOutcome.APPLIED and pending_since is not None:
        result.turnaround_s.append((now - pending_since).total_seconds())
    if outcome is UpsertOutcome.APPLIED_STILL_STALE:
        if answers_pending(row, event):
            # The pending request was answered, but by content older than the latest mark.
            row.regen_request_id = None
        # A result behind the inputs may leave a row stale without a request: ask now.
        if request_if_unanswered(sink, row, now, f"result:{event.event_id}"):
            result.regen_requests[row.stale_reason or "manual"] += 1
    return outcome.value


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
RESULT_COLUMNS = {"user_id": "bigint", **CONTENT, **WRITTEN, **COVERED}
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
    content = _Content(
        payload.bio_text,
        json.dumps(list(payload.proof_points)),
        json.dumps([quote_json(q) for q in payload.quotes]),
        payload.source_group,
        payload.llm_model,
        payload.stale_after or payload.generated_at + ttl,
    )
    _write_usage(content, meta)
    return content


def rows_write(states: dict[int, RowState], contents: dict[int, _Content]) -> Write | None:
    """The changed rows (content and freshness columns) as one UPDATE from arrays."""
    users = sorted(contents)
    if not users:
        return None
    params: dict[str, object] = {}
    for name, kind in RESULT_COLUMNS.items():
        source: Mapping[int, object] = contents if name in _FROM_CONTENT else states
        values = [getattr(source[u], name) for u in users]
        params["g_" + name] = literal("text" if kind == "jsonb" else kind, values)
    return Write(RESULT_WRITE, params)


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
        book_cost(self.result, share, event, outcome)
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
        rows_write(batch.states, batch.contents),
        insert_write(batch.queued),
        transitions_write(batch.transitions, now),
        *cost_writes(result),
    ]
    await write_together(session, [*writes, *record(batch.outcomes)])
    return batch.outcomes
