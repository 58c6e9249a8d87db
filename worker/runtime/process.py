"""What one worker process holds: database, store, pipeline, sweeper, metrics, readiness.

Transport-agnostic: the Faust app's input sinks (``worker.kafka.app``) feed it batches and
give it a ``Publish`` function; tests and benchmarks can drive it the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from worker.domain.batch import BatchResult, DeadLetter, RawMessage
from worker.domain.decoder import RejectReason
from worker.domain.snapshot import UNCHANGED
from worker.domain.values import utcnow
from worker.domain.wire import InputStream
from worker.runtime.metrics import Metrics
from worker.runtime.services import Services
from worker.services import outbox, overview, parking, scheduler
from worker.services.outbox import OutboxMessage
from worker.services.overview import Figures
from worker.services.sweep import ScanTotals
from worker.settings import Settings
from worker.storage.database import database_answers, snapshot
from worker.storage.db_clock import database_now
from worker.storage.models import ProcessedEventRow
from worker.storage.outage import retry_through_outage

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[OutboxMessage]], Awaitable[None]]
PublishLetters = Callable[[Sequence[DeadLetter]], Awaitable[None]]
T = TypeVar("T")
RELAY_BATCH = 500
RELAY = "relay"  # the relay's name in logs and ``publish_backoff``
RELAY_MAX_BACKOFF_S = 5.0
PARKED_CHUNK = 500  # dead letters per transaction (one produce call)


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine = field(init=False)
    input_engine: AsyncEngine = field(init=False)  # the input batches' (``Services.input_engine``)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    metrics: Metrics = field(default_factory=Metrics)
    db_ok: bool = True
    assigned: bool = False

    # Dead letters counted in this process and not yet written to ``dead_letter_counts``.
    unsaved_dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        services = Services.open(self.settings)
        self.engine, self.sessions = services.engine, services.sessions
        # One policy for everything this worker marks stale (the web views reach it through
        # the store and ``regen_policy``); another Runtime in the process may hold another.
        self.regen_policy, self.store = services.policy, services.store
        self.input_engine = services.input_engine()
        self.pipeline = services.pipeline(self.metrics.count_retry, self.input_engine)
        self.sweeper = services.sweeper()
        self.relay_wakeup = asyncio.Event()
        # After a publish that timed out, per taker (the relay, parked expiry): the seconds
        # it backed off, doubling up to the max; gone once one goes through.
        self.publish_backoff: dict[str, float] = {}
        self.next_queued_wake = 0.0  # monotonic: ``wake_relay_after_batch`` under a scheduler
        self.gauge_lock = asyncio.Lock()  # one ``refresh_gauges`` at a time

    async def close(self) -> None:
        """Dispose both engines (a test's runtime: the worker's go with its process)."""
        await self.input_engine.dispose()
        await self.engine.dispose()

    async def handle(self, stream: InputStream, messages: Sequence[RawMessage]) -> BatchResult:
        """Apply a batch (retrying while the database is away) and record what it did."""
        started = time.monotonic()
        try:
            result = await self.pipeline.process(stream, messages)
        except Exception:
            self.db_ok = False
            raise
        self.db_ok = True
        self.metrics.record_batch(stream.value, result, time.monotonic() - started, utcnow())
        for letter in result.dead_letters:
            self.unsaved_dead_letters[(stream.value, letter.reason.value)] += 1
        if result.regen_requests:
            self.wake_relay_after_batch(result.outboxed)
        return result

    def wake_relay_after_batch(self, outboxed: bool) -> None:
        """Wake the relay after a batch that made requests. When they went to the outbox
        (``outboxed``: an immediate policy in force): at once. Else they wait in the
        scheduler's queue and the step that releases them wakes the relay; the batch's
        wake only hurries what another worker's step left in the outbox (killed before its
        relay ran), which would otherwise wait a relay interval and reach the broker in one
        lump with the next steps' (over the budget in the fault suite). So at most one such
        wake a scheduler tick: one per batch made the relay take an empty outbox about 90
        times a second at 2,000 comments/s (docs/performance.md, 2026-12-06 night)."""
        now = time.monotonic()
        if outboxed:
            self.relay_wakeup.set()
        elif now >= self.next_queued_wake:
            self.next_queued_wake = now + self.settings.regen_tick.total_seconds()
            self.relay_wakeup.set()

    async def retry_transient(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` until it succeeds, backing off while the database is away
        (``retry_through_outage``); readiness says not ready meanwhile."""

        def waiting(exc: Exception, delay: float) -> None:
            self.db_ok = False
            log.warning("%s: database unavailable (%s); retrying in %.1fs", what, exc, delay)

        value = await retry_through_outage(
            self.sessions,
            action,
            max_backoff_s=self.settings.db_retry_max_backoff,
            on_outage=waiting,
        )
        self.db_ok = True
        return value

    async def relay_once(self, publish: Publish) -> int:
        """Publish one chunk of the outbox; its rows' deletion commits only after the broker
        acked (a failed publish rolls it back: at least once)."""
        messages = await self._take_and_publish(
            RELAY, lambda session: outbox.take(session, RELAY_BATCH), publish
        )
        self.metrics.regen_published.inc(len(messages))
        return len(messages)

    def relay_again(self, sent: int) -> bool:
        """Whether the relay takes again at once instead of waiting for a wake: after a
        full chunk (more may wait; a short one took all it could, ``outbox.take``), or
        after its publish timed out and it backed off (its rows are back)."""
        return sent >= RELAY_BATCH or RELAY in self.publish_backoff

    async def expire_parked(self, publish: PublishLetters) -> int:
        """Dead-letter the comments parked longer than ``WB_PARKED_RETENTION`` (their
        request was never mapped), a chunk per transaction, each committed only after its
        letters were acknowledged; returns how many went. Leader only, after the sweep."""
        cutoff = utcnow() - self.settings.parked_retention
        topic = self.settings.topic_comments
        total = 0
        while True:
            letters = await self.retry_transient(
                "expire parked",
                lambda: self._take_and_publish(
                    "expire parked",
                    lambda s: parking.take_expired(s, cutoff, PARKED_CHUNK, topic),
                    publish,
                ),
            )
            if not letters:
                return total
            total += len(letters)
            stream = InputStream.COMMENTS.value
            self.metrics.dead_letters.labels(stream, RejectReason.UNMAPPED.value).inc(len(letters))
            self.unsaved_dead_letters[(stream, RejectReason.UNMAPPED.value)] += len(letters)

    async def _take_and_publish(
        self,
        what: str,
        take: Callable[[AsyncSession], Awaitable[list[T]]],
        publish: Callable[[Sequence[T]], Awaitable[None]],
    ) -> list[T]:
        """Take rows out in a transaction, publish them, and commit only after the broker
        acked; returns what went (none when the publish timed out: rolled back).

        The publish is bounded (``WB_RELAY_PUBLISH_TIMEOUT``): with the broker away, the
        transaction and the rows it locked are released after at most that long instead of
        staying open for the whole outage, and this backs off outside any transaction.
        A publish cut short may still reach the broker: a duplicate, which consumers drop by
        ``event_id``."""
        bound = self.settings.relay_publish_timeout.total_seconds()
        try:
            async with self.sessions.begin() as session:
                taken = await take(session)
                if taken:
                    try:
                        async with asyncio.timeout(bound):
                            await publish(taken)
                    except TimeoutError:
                        raise _PublishTimedOut(len(taken)) from None
        except _PublishTimedOut as exc:
            backoff = min(max(self.publish_backoff.get(what, 0.0) * 2, 0.2), RELAY_MAX_BACKOFF_S)
            self.publish_backoff[what] = backoff
            log.warning(
                "%s: publishing %d messages took longer than %.1fs; rolled back, retrying in %.1fs",
                what,
                exc.count,
                bound,
                backoff,
            )
            await asyncio.sleep(backoff)
            return []
        self.publish_backoff.pop(what, None)
        return taken

    async def schedule_once(self) -> int:
        """One scheduler step: publish (to the outbox) the due queued requests the shared
        budget allows, highest priority first. Every worker runs it; the budget row's lock
        serialises them, and its clock is the database's (``storage.db_clock``)."""
        async with self.sessions.begin() as session:
            now = await database_now(session)  # the budget's clock, the same for every worker
            done = await scheduler.publish_due(session, now, self.regen_policy)
        self.metrics.record_scheduled(done)
        if done.count:
            self.relay_wakeup.set()
        return done.count

    async def sweep(self) -> ScanTotals:
        totals = await self.retry_transient("sweep", self.sweeper.run)
        for action, n in totals.actions.items():
            self.metrics.sweep_actions.labels(action).inc(n)
        self.metrics.regen_skipped.labels(UNCHANGED).inc(totals.actions[UNCHANGED])
        for reason, n in totals.requests.items():
            self.metrics.regen_requests.labels(reason).inc(n)
        if totals.requests:
            self.relay_wakeup.set()
        await self.retry_transient("prune", self.prune_processed)
        await self.retry_transient("prune history", self.prune_history)
        return totals

    async def prune_processed(self) -> None:
        """Forget event ids older than the dedup retention (redelivery is long over by then)."""
        cutoff = utcnow() - self.settings.dedup_retention
        async with self.sessions.begin() as session:
            await session.execute(
                delete(ProcessedEventRow).where(ProcessedEventRow.processed_at < cutoff)
            )

    async def prune_history(self) -> None:
        """Forget the overview's history past ``WB_HISTORY_RETENTION``."""
        async with self.sessions.begin() as session:
            await overview.prune_history(session, utcnow() - self.settings.history_retention)

    async def refresh_gauges(self, leader: bool) -> None:
        """On the group's leader (``leader``), the table-wide gauges, read in one snapshot
        (every gauge of a refresh is of the same moment), and a history sample when one is
        due; on every worker, the dead letters it counted since its last refresh (kept for
        the next one if the write fails)."""
        async with self.gauge_lock:  # the timer's and an assignment's: counts written once
            saving = Counter(self.unsaved_dead_letters)
            now = utcnow()
            figures = None
            if leader:
                figures = await self.read_table_gauges(now)
            else:
                self.metrics.table.forget()
            async with self.sessions.begin() as session:
                if figures is not None:
                    every = self.settings.history_interval
                    await overview.record_sample(session, figures, now, every)
                overview.record_dead_letters(session, saving, now)
            self.unsaved_dead_letters.subtract(saving)
            self.unsaved_dead_letters = +self.unsaved_dead_letters

    async def read_table_gauges(self, now: datetime) -> Figures | None:
        """The leader's reading of the table-wide gauges, in one snapshot; None (logged,
        the last reading still exported) when it fails, so that the dead-letter counts
        are written all the same."""
        try:
            async with snapshot(self.sessions) as session:
                return await self.metrics.refresh_gauges(session, now, self.regen_policy)
        except Exception as exc:
            log.warning("reading the table-wide gauges failed: %s", exc)
            return None

    async def database_reachable(self) -> bool:
        return await database_answers(self.sessions)

    async def database_ready(self) -> bool:
        """Readiness: the database answers a trivial query and no work is waiting for it (a
        database that answers ``SELECT 1`` but refuses writes, read-only after a failover or
        out of disk, is not ready: batches retry and nothing is acknowledged)."""
        return self.db_ok and not self.pipeline.outages and await self.database_reachable()


class _PublishTimedOut(Exception):
    """The broker did not acknowledge in time (not a database outage: readiness stays)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} messages not acknowledged in time")
        self.count = count
