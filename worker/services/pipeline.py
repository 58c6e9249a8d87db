"""Applying input events to the store: the pipeline's rules, free of Kafka.

A batch of raw messages from one input topic is decoded (bad ones become dead letters),
deduplicated against ``processed_events``, and applied in one transaction. The input sinks
commit Kafka offsets only after ``process`` returns, so the database always leads the
offsets (at-least-once), and the dedup table makes redelivery a no-op (idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.batch import BatchResult, DeadLetter, RawMessage
from worker.domain.clock_skew import DEFAULT_MAX_CLOCK_SKEW, clamped_to_receipt
from worker.domain.decoder import Rejected, RejectReason, decode
from worker.domain.errors import InvalidInput, SnapshotConflict, SupersededResult
from worker.domain.scheduling import IMMEDIATE, RegenPolicy
from worker.domain.values import (
    UpsertOutcome,
    utcnow,
)
from worker.domain.wire import CommentEvent, GeneratedEvent, InputEvent, InputStream, RequestEvent
from worker.services import scheduler, signal_records
from worker.services.comments import (
    apply_comment,
    apply_comment_batch,
    record_deleted,
    resolve_or_park,
)
from worker.services.input_snapshots import InputSets
from worker.services.locking import create_placeholders, lock_or_create_row, lock_rows
from worker.services.mappings import MAPPED, apply_mapping_batch, claim_lock
from worker.services.outbox import OutboxSink
from worker.services.result_batch import apply_result_batch
from worker.services.result_costs import book_cost, cost_share
from worker.services.results import apply_result, result_of, upsert_auto_row
from worker.services.spend import record_costs
from worker.storage import dedup
from worker.storage.database import is_postgresql
from worker.storage.models import HighlightRow
from worker.storage.outage import is_outage, retry_through_outage

log = logging.getLogger(__name__)


@dataclass
class _Tx:
    """One transaction's working set: the session, its clock reading, the locked rows and
    where their requests go."""

    session: AsyncSession
    now: datetime
    rows: dict[int, HighlightRow]
    result: BatchResult
    sink: OutboxSink
    activity: dict[int, signal_records.ActivityDelta] = field(default_factory=dict)
    inputs: InputSets = field(default_factory=InputSets)

    async def row(self, user_id: int) -> HighlightRow:
        row = self.rows.get(user_id)
        if row is None:
            row = self.rows[user_id] = await lock_or_create_row(self.session, user_id, self.now)
        return row


@dataclass
class Pipeline:
    sessions: async_sessionmaker[AsyncSession]
    ttl: timedelta = timedelta(days=7)
    clock: Callable[[], datetime] = utcnow
    max_backoff_s: float = 5.0
    # Called at each retry, while the database is still failing (metrics count retries as
    # they happen: a batch stuck in an outage never returns its ``retries``).
    on_retry: Callable[[InputStream], None] = lambda stream: None
    # The batches waiting out an outage, each under its own key (several batches of one
    # stream wait at once with input lanes): readiness is "none waits".
    outages: dict[tuple[InputStream, int], str] = field(default_factory=dict)
    # PostgreSQL applies batches set-based; False keeps the ORM path there too (the
    # differential tests compare the two on the same events).
    set_based: bool = True
    # When the stale marks of a batch ask for their regeneration (at once, or queued).
    policy: RegenPolicy = IMMEDIATE
    # Input timestamps further ahead of a batch's receipt are clamped to it
    # (``WB_MAX_CLOCK_SKEW``, ``domain.clock_skew``).
    max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW

    async def process(self, stream: InputStream, messages: Sequence[RawMessage]) -> BatchResult:
        """Decode and apply one batch; transient database failures are retried until done."""
        result = BatchResult()
        events: list[tuple[RawMessage, InputEvent]] = []
        now = self.clock()  # the batch's receipt time
        for message in messages:
            try:
                event = decode(stream, message.value, now)
            except Rejected as exc:
                result.dead_letters.append(DeadLetter(message, exc.reason, exc.detail))
                result.count(stream, "dead_lettered")
                continue
            event, clamped = clamped_to_receipt(event, now, self.max_clock_skew)
            for name in clamped:
                result.clamped[(stream.value, name)] += 1
            events.append((message, event))
        if result.clamped:
            log.warning(
                "%s: clamped to the receipt time %s, as more than %s ahead of it: %s",
                stream.value,
                now.isoformat(),
                self.max_clock_skew,
                dict(result.clamped),
            )
        if events:
            result.merge(await self._retrying(stream, events))
        return result

    async def _retrying(
        self, stream: InputStream, events: list[tuple[RawMessage, InputEvent]]
    ) -> BatchResult:
        """The batch, waiting out outages; ``outages`` holds the batch (its stream, and a key of
        its own) while it waits (readiness) and drops it however the wait ends but
        cancellation: another batch of the stream that commits meanwhile leaves it there."""
        retries = 0
        waiting_key = (stream, id(events))

        def waiting(exc: Exception, delay: float) -> None:
            nonlocal retries
            retries += 1
            self.on_retry(stream)
            self.outages[waiting_key] = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("database unavailable (%s); retrying batch in %.1fs", exc, delay)

        try:
            result = await retry_through_outage(
                self.sessions,
                lambda: self._apply_isolating(stream, events),
                max_backoff_s=self.max_backoff_s,
                on_outage=waiting,
            )
        except Exception:
            self.outages.pop(waiting_key, None)
            raise
        result.retries = retries
        self.outages.pop(waiting_key, None)
        return result

    async def _apply_isolating(
        self, stream: InputStream, events: list[tuple[RawMessage, InputEvent]]
    ) -> BatchResult:
        """The batch in one transaction; if it fails for a reason that is not the database,
        event by event, so one poisonous event is dead-lettered instead of stalling the
        partition."""
        try:
            return await self._apply(stream, events)
        except Exception as exc:
            if await is_outage(self.sessions, exc):
                raise
            if len(events) == 1:
                return self._internal_error(stream, events[0][0], exc)
            log.exception("batch of %d failed; applying one by one", len(events))
        result = BatchResult()
        for item in events:
            try:
                result.merge(await self._apply(stream, [item]))
            except Exception as exc:
                if await is_outage(self.sessions, exc):
                    raise
                result.merge(self._internal_error(stream, item[0], exc))
        return result

    @staticmethod
    def _internal_error(stream: InputStream, message: RawMessage, exc: Exception) -> BatchResult:
        log.exception(
            "event at %s[%d]@%d failed",
            message.topic,
            message.partition,
            message.offset,
            exc_info=exc,
        )
        result = BatchResult()
        detail = f"{type(exc).__name__}: {str(exc)[:300]}"
        result.dead_letters.append(DeadLetter(message, RejectReason.INTERNAL_ERROR, detail))
        result.count(stream, "dead_lettered")
        return result

    async def _apply(
        self, stream: InputStream, events: list[tuple[RawMessage, InputEvent]]
    ) -> BatchResult:
        result = BatchResult()
        async with self.sessions.begin() as session:
            now = self.clock()
            set_based = self.set_based and is_postgresql(session)
            # Set-based, an immediate policy's pause is read in the claim's statement.
            pause = scheduler.HOLD_IN_FORCE_SQL if set_based and self.policy.immediate else None
            if set_based and stream is InputStream.REQUESTS:  # the claim locks and records
                claim = await dedup.claim(
                    session, stream, events, now, result, claim_lock, MAPPED, also=pause
                )
            else:
                claim = await dedup.claim(session, stream, events, now, result, also=pause)
            fresh = claim.events
            if set_based:
                policy = scheduler.held_while_paused(self.policy, claim.also)
                result.outboxed = policy.immediate
                await self._apply_set_based(session, stream, fresh, now, result, policy)
                return result
            rows = await _lock_batch_rows(session, fresh, now)
            sink = await scheduler.sink_in_force(session, self.policy)
            result.outboxed = sink.policy.immediate
            tx = _Tx(session, now, rows, result, sink)
            outcomes: dict[str, list[str]] = {}
            for message, event in fresh:
                try:
                    outcome = await self._apply_one(tx, message, event)
                except Rejected as exc:  # refused before any write
                    result.dead_letters.append(DeadLetter(message, exc.reason, exc.detail))
                    result.count(stream, "dead_lettered")
                    outcome = "dead_lettered"
                else:
                    result.count(stream, outcome)
                outcomes.setdefault(outcome, []).append(event.event_id)
            await signal_records.record_activity(session, tx.activity, now)
            await tx.inputs.save(session)
            await record_costs(session, result)
            await dedup.record_outcomes(session, stream, outcomes)
        return result

    async def _apply_set_based(
        self,
        session: AsyncSession,
        stream: InputStream,
        fresh: list[tuple[RawMessage, InputEvent]],
        now: datetime,
        result: BatchResult,
        policy: RegenPolicy,
    ) -> None:
        """PostgreSQL: the batch in a fixed number of statements whatever its size, its
        stale marks under ``policy`` (the one in force)."""
        if stream is InputStream.COMMENTS:
            comments = [(m, e) for m, e in fresh if isinstance(e, CommentEvent)]
            await apply_comment_batch(
                session,
                comments,
                now,
                result,
                lambda o: dedup.outcomes_write(stream, o),
                policy,
            )
        elif stream is InputStream.REQUESTS:
            mappings = [e for _, e in fresh if isinstance(e, RequestEvent)]
            await apply_mapping_batch(session, mappings, now, result, policy)
        else:
            results = [(m, e) for m, e in fresh if isinstance(e, GeneratedEvent)]
            await apply_result_batch(
                session,
                results,
                now,
                self.ttl,
                result,
                lambda o: dedup.record_writes(stream, o),
                policy,
            )

    async def _apply_one(self, tx: _Tx, message: RawMessage, event: InputEvent) -> str:
        if isinstance(event, CommentEvent):
            user_id = event.user_id
            if user_id is None:
                user_id = await resolve_or_park(tx.session, message, event, tx.now)
            return "parked" if user_id is None else await self._comment(tx, event, user_id)
        if isinstance(event, RequestEvent):
            return await self._request(tx, event)
        return await self._generated(tx, event)

    async def _comment(self, tx: _Tx, event: CommentEvent, user_id: int) -> str:
        tx.activity.setdefault(user_id, signal_records.ActivityDelta()).add(event)
        if event.type == "comment.deleted":
            await record_deleted(tx.session, {(user_id, event.comment_id)}, tx.now)
        row = await tx.row(user_id)
        await tx.inputs.load(tx.session, [(user_id, event.comment_id)])
        return apply_comment(tx.sink, row, event, tx.now, tx.result, tx.inputs)

    async def _request(self, tx: _Tx, event: RequestEvent) -> str:
        await signal_records.lock_request(tx.session, event.request_id)
        await signal_records.save_mapping(tx.session, event, tx.now)
        mapped = await signal_records.resolve_users(tx.session, {event.request_id})
        user_id = mapped[event.request_id]
        for parked in await signal_records.unpark(tx.session, event.request_id):
            outcome = await self._comment(tx, parked, user_id)
            tx.result.count(InputStream.COMMENTS, outcome)
            tx.result.count(InputStream.COMMENTS, "unparked")
        return "mapped"

    async def _generated(self, tx: _Tx, event: GeneratedEvent) -> str:
        share = cost_share(tx.rows.get(event.user_id), event)
        outcome = await self._apply_generated(tx, event)
        book_cost(tx.result, share, tx.rows.get(event.user_id), outcome)
        return outcome

    async def _apply_generated(self, tx: _Tx, event: GeneratedEvent) -> str:
        payload, meta = result_of(event)
        pending_since = (
            tx.rows[event.user_id].regen_requested_at if event.user_id in tx.rows else None
        )
        try:
            row, outcome = await upsert_auto_row(
                tx.session, payload, event.snapshot_hash, meta, tx.now, self.ttl
            )
        except SupersededResult as exc:
            log.info("result %s: %s", event.event_id, exc)
            return UpsertOutcome.SUPERSEDED.value
        except SnapshotConflict as exc:
            log.info("result %s: %s", event.event_id, exc)
            return UpsertOutcome.CONFLICT.value
        except InvalidInput as exc:
            raise Rejected(RejectReason.REJECTED_BY_STORE, str(exc)) from None
        tx.rows[row.user_id] = row
        return apply_result(tx.sink, row, event, outcome, pending_since, tx.now, tx.result)


async def _lock_batch_rows(
    session: AsyncSession, events: list[tuple[RawMessage, InputEvent]], now: datetime
) -> dict[int, HighlightRow]:
    """Lock every row the batch will touch in one ordered query (a fixed order keeps
    concurrent batches from deadlocking), creating in one statement the rows that comments
    need (a comment about an unknown user asks for a first generation)."""
    commented = {e.user_id for _, e in events if isinstance(e, CommentEvent) and e.user_id}
    unresolved = {e.request_id for _, e in events if isinstance(e, CommentEvent) and not e.user_id}
    commented.update((await signal_records.resolve_users(session, unresolved)).values())
    others = {e.user_id for _, e in events if isinstance(e, GeneratedEvent)}
    await create_placeholders(session, commented, now)
    return await lock_rows(session, commented | others)
