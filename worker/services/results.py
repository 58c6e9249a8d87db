"""Generated results: the rules a result meets on its row.

A result is checked (``validate_result``), refused when superseded or conflicting with its
base snapshot (``judge_result``), and settled behind the generation fence
(``settle_result``: a row marked stale after the result's base stays stale; a stale row made
fresh is a ``FreshTransition``); an override is untouched. ``upsert_auto_row`` is those
rules on one locked ORM row (the store's façade and the pipeline's ORM path). After a stored
result, ``apply_result``: a pending request the result answers is cleared, and asked again
when the row stays stale. The rules work on an ORM row as well as on plain ``RowState``
values; their set-based form for a whole batch on PostgreSQL is
``worker.services.result_batch``, and what a result costs, ``worker.services.result_costs``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain import snapshot
from worker.domain.batch import BatchResult
from worker.domain.cost import Usage
from worker.domain.errors import InvalidInput, SnapshotConflict, SupersededResult
from worker.domain.values import (
    AttributedQuote,
    GeneratedHighlight,
    StaleReason,
    UpsertMeta,
    UpsertOutcome,
    check_aware,
    quote_json,
)
from worker.domain.wire import GeneratedEvent
from worker.services.locking import lock_or_create_row, lock_row
from worker.services.outbox import OutboxSink, Requestable
from worker.services.staleness import clear_stale, request_if_unanswered
from worker.storage.models import FreshTransitionRow, HighlightRow

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


def usage_columns(meta: UpsertMeta) -> tuple[int | None, int | None, float | None]:
    """The stored highlight's generation's usage columns (None where not reported)."""
    usage = meta.usage or Usage()
    return usage.input_tokens, usage.output_tokens, usage.cost_usd


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
    row.usage_input_tokens, row.usage_output_tokens, row.usage_cost_usd = usage_columns(meta)
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
