"""Clocks cannot freeze anything, on SQLite and PostgreSQL: a result or a comment stamped
20 h ahead is read as received now (counted per field), so the next comment makes the row
stale, the next correct result is applied and scans stop after the answer; the client's
``age_s`` is never negative; the budget's clock is the database's."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import C, G, comment, generated, queued_requests, result
from worker.domain.values import utcnow
from worker.services.documents import serve
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore
from worker.services.sweep import FreshnessScan
from worker.storage.db_clock import database_now

AHEAD = timedelta(hours=20)
M = timedelta(minutes=1)


async def test_a_result_twenty_hours_ahead_cannot_freeze_a_profile(
    sessions: async_sessionmaker[AsyncSession], store: HighlightStore, clock: FakeClock
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    await store.upsert_auto(result(1, generated_at=T0 - timedelta(hours=1)), "s0")
    res = await pipeline.process(G, [generated("g1", 1, T0 + AHEAD, "s1")])
    assert res.outcomes == {("generated", "applied"): 1}
    assert res.clamped == {("generated", "generated_at"): 1}
    row = await store.get(1)
    assert row is not None and row.generated_at == T0  # read as received
    clock.advance(M)
    res = await pipeline.process(C, [comment("e1", 1, clock.now)])
    assert res.outcomes == {("comments", "stale_marked"): 1}
    (request,) = await queued_requests(sessions)
    clock.advance(M)
    answer = generated("g2", 1, clock.now, "s2", generation=request["generation"])
    assert (await pipeline.process(G, [answer])).outcomes == {("generated", "applied"): 1}
    row = await store.get(1)
    assert row is not None and not row.is_stale and row.snapshot_hash == "s2"


async def test_a_comment_twenty_hours_ahead_cannot_make_scans_loop(
    sessions: async_sessionmaker[AsyncSession], store: HighlightStore, clock: FakeClock
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    await store.upsert_auto(result(1, generated_at=T0 - timedelta(hours=1)), "s0")
    res = await pipeline.process(C, [comment("e1", 1, T0 + AHEAD)])
    assert res.clamped == {("comments", "occurred_at"): 1}
    (request,) = await queued_requests(sessions)
    clock.advance(M)
    answer = generated("g1", 1, clock.now, "s1", generation=request["generation"])
    assert (await pipeline.process(G, [answer])).outcomes == {("generated", "applied"): 1}
    for _ in range(2):
        clock.advance(M)
        totals, _ = await FreshnessScan(sessions, timedelta(minutes=15), clock=clock).run()
        assert totals.actions == {}
    assert len(await queued_requests(sessions)) == 1  # no new request
    row = await store.get(1)
    assert row is not None and not row.is_stale


async def test_age_is_never_negative(store: HighlightStore) -> None:
    """A row stored before the clamp (or a reader whose clock is behind): age 0, not -72 000 s."""
    highlight = await store.upsert_auto(result(1, generated_at=T0 + AHEAD), "s0")
    doc = serve(1, highlight, None, T0, timedelta(0), frozenset())
    assert doc["age_s"] == 0.0


async def test_the_database_clock_is_the_servers_own(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        before, read, after = utcnow(), await database_now(session), utcnow()
    assert read.tzinfo is not None
    assert before - timedelta(seconds=2) <= read <= after + timedelta(seconds=2)
