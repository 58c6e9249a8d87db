"""Sweep and freshness scan, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import FakeClock
from tests.helpers.factories import C, comment, later, queued_requests, result
from worker.domain.cost import Lane
from worker.domain.values import RegenReason
from worker.domain.wire import RegenRequestEvent, regen_request_payload
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore
from worker.services.sweep import FreshnessScan, ScanTotals, Sweeper
from worker.storage.models import HighlightRow, ScanCheckpointRow

RETRY = timedelta(minutes=15)


async def test_sweep_expires_rows_past_stale_after_and_retries_stuck_requests(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1, stale_after=later(60)), "a")
    await store.upsert_auto(result(2, stale_after=later(600)), "b")
    await store.upsert_auto(result(3, stale_after=later(600)), "c")
    await store.mark_stale(3, "new_comment")
    async with sessions.begin() as session:  # a fingerprint past 2^63: negative as stored
        await session.execute(
            update(HighlightRow)
            .where(HighlightRow.user_id == 1)
            .values(input_version=7, input_fingerprint=-2)
        )
    clock.advance(timedelta(minutes=61))
    sweeper = Sweeper(sessions, retry_after=RETRY, chunk_size=1, clock=clock)
    totals = await sweeper.run()
    assert totals.actions == {"expired": 1, "retried": 1}
    assert (await store.get(1)).stale_reason == "expired"  # type: ignore[union-attr]
    assert not (await store.get(2)).is_stale  # type: ignore[union-attr]
    reasons = [(r["user_id"], r["reason"]) for r in await queued_requests(sessions)]
    assert reasons == [(3, "new_comment"), (1, "expired"), (3, "retry")]
    expired = (await queued_requests(sessions))[1]  # same shape on every database path
    row = await store.get(1)
    assert row is not None
    # The set-based sweep (PostgreSQL) builds this JSON in SQL: it must be what the one
    # builder makes for the same row, and valid by the published model.
    assert row.regen_request_id is not None
    assert expired == regen_request_payload(
        row.regen_request_id,
        1,
        RegenReason.EXPIRED,
        row.generation,
        "a",
        clock.now,
        "sweep",
        4,
        (7, "fffffffffffffffe"),
        (Lane.BATCH, clock.now + timedelta(hours=24)),  # an expiry can wait: the batch lane
    )
    assert RegenRequestEvent.model_validate(expired).snapshot_hash == "a"
    assert row.regen_generation == row.generation == 1
    again = await sweeper.run()  # nothing left to do right away
    assert again.actions == {}


async def test_sweep_leaves_override_locked_rows_without_requests(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1, stale_after=later(60)), "a")
    await store.set_manual_override(1, "Curated", actor="ops")
    clock.advance(timedelta(hours=2))
    totals = await Sweeper(sessions, retry_after=RETRY, clock=clock).run()
    assert totals.actions == {"expired": 1} and totals.requests == {}
    assert await queued_requests(sessions) == []


async def _activity_without_marks(pipeline: Pipeline, store: HighlightStore, users: range) -> None:
    """Record comments, then put the rows back to 'fresh' as if the marks were missed."""
    for user in users:
        await store.upsert_auto(result(user, generated_at=later(0)), f"s{user}")
    await pipeline.process(C, [comment(f"e{u}", u, later(1)) for u in users])
    for user in users:
        await store.upsert_auto(
            result(user, generated_at=later(0) + timedelta(seconds=1)), f"t{user}"
        )


async def test_freshness_scan_catches_activity_newer_than_generated_at(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    await _activity_without_marks(pipeline, store, range(1, 6))
    await pipeline.process(C, [comment("lonely", 77, later(1))])  # becomes a 'missing' row
    await store.upsert_auto(result(99, generated_at=later(5)), "fresh")  # nothing to do
    totals, resumed = await FreshnessScan(sessions, RETRY, batch_size=2, clock=clock).run()
    assert not resumed
    assert totals.actions == {"new_comment": 5}
    assert await stale_users(store, [*range(1, 6), 77, 99]) == [1, 2, 3, 4, 5, 77]


async def test_dry_run_reports_but_changes_nothing(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    await _activity_without_marks(pipeline, store, range(1, 4))
    before = len(await queued_requests(sessions))
    totals, _ = await FreshnessScan(sessions, RETRY, dry_run=True, clock=clock).run()
    assert totals.actions == {"new_comment": 3}
    assert not (await store.get(1)).is_stale  # type: ignore[union-attr]
    assert len(await queued_requests(sessions)) == before
    async with sessions() as session:
        assert (await session.scalars(select(ScanCheckpointRow))).all() == []


async def stale_users(store: HighlightStore, users: Iterable[int]) -> list[int]:
    rows = [await store.get(u) for u in users]
    return [row.user_id for row in rows if row is not None and row.is_stale]


class Interrupt(Exception):
    pass


async def test_interrupted_scan_resumes_from_its_checkpoint(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    await _activity_without_marks(pipeline, store, range(1, 11))
    seen: list[int] = []

    def stop_after_two(chunk: ScanTotals, _phase: str) -> None:
        seen.append(chunk.scanned)
        if len(seen) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        await FreshnessScan(
            sessions, RETRY, batch_size=3, clock=clock, on_chunk=stop_after_two
        ).run()
    assert await stale_users(store, range(1, 11)) == list(range(1, 7))
    chunks: list[Any] = []
    totals, resumed = await FreshnessScan(
        sessions, RETRY, batch_size=3, clock=clock, on_chunk=lambda c, p: chunks.append(c.scanned)
    ).run()
    assert resumed
    assert totals.actions == {"new_comment": 10}  # earlier part included
    assert sum(chunks) == 4  # only users 7..10 were looked at again
    async with sessions() as session:
        checkpoint = await session.get(ScanCheckpointRow, "freshness-scan")
    assert checkpoint is not None and checkpoint.finished_at is not None
    _, resumed_again = await FreshnessScan(sessions, RETRY, clock=clock).run()
    assert not resumed_again
    restarted, _ = await FreshnessScan(sessions, RETRY, clock=clock).run(restart=True)
    assert restarted.actions == {}


async def test_sweep_request_ids_are_distinct_32_hex_digits(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Request ids from every path look alike, and no two requests share one (the set-based
    sweep builds them from a random prefix per chunk and the user id)."""
    for user in range(1, 8):
        await store.upsert_auto(result(user, stale_after=later(60)), f"s{user}")
    clock.advance(timedelta(minutes=61))
    await Sweeper(sessions, retry_after=RETRY, chunk_size=3, clock=clock).run()
    await store.regenerate(1, actor="ops")  # the ORM path's id, for comparison
    ids = [r["event_id"] for r in await queued_requests(sessions)]
    assert len(ids) == len(set(ids)) == 8
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
