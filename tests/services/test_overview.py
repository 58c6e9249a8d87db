"""The overview's figures, time-to-fresh, history sampling and pruning (both databases)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import FakeClock
from tests.helpers.factories import result
from worker.domain.values import UpsertMeta
from worker.runtime.process import Runtime
from worker.services import overview
from worker.services.overview import STATES, OverviewService
from worker.services.store import HighlightStore
from worker.settings import Settings
from worker.storage.models import DeadLetterCountRow, FreshnessSampleRow, FreshTransitionRow


async def _one_of_each_state(store: HighlightStore, clock: FakeClock) -> None:
    start = clock.now
    for user in (1, 2, 3, 4, 5):
        await store.upsert_auto(result(user, generated_at=start - timedelta(hours=1)), f"s{user}")
    await store.mark_stale(2, "new_comment")  # stale, request pending
    await store.upsert_auto(  # expired: stale_after has come, not swept yet
        result(3, generated_at=start, stale_after=start + timedelta(minutes=1)), "s3b"
    )
    await store.set_manual_override(4, "locked", actor="ops")  # overridden
    await store.regenerate(6, actor="ops")  # missing: a row without content, pending
    clock.advance(timedelta(minutes=30))


async def test_figures_follow_the_one_freshness_rule(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await _one_of_each_state(store, clock)
    ov = await OverviewService(sessions).overview(clock.now)
    assert ov.figures.counts == {
        "fresh": 2,
        "stale": 1,
        "expired": 1,
        "overridden": 1,
        "missing": 1,
    }
    assert ov.figures.total == 6
    assert ov.figures.stale_share == 2 / 6
    assert ov.figures.pending == 2
    assert ov.figures.oldest_pending_at == clock.now - timedelta(minutes=30)
    # By the one rule: the unswept expired row is stale (since its stale_after), the row
    # without a highlight (6) is missing, not stale.
    assert [(p.user_id, p.state) for p in ov.oldest_stale] == [(2, "stale"), (3, "expired")]
    assert ov.oldest_stale[0].stale_reason == "new_comment"
    assert ov.oldest_stale[1].stale_since == clock.now - timedelta(minutes=29)
    assert ov.dead_letters == {"comments": 0, "requests": 0, "generated": 0}
    assert ov.as_dict()["counts"]["missing"] == 1


async def test_a_result_that_makes_a_row_fresh_records_how_long_it_was_stale(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    start = clock.now
    await store.upsert_auto(result(1, generated_at=start - timedelta(hours=1)), "a")
    await store.upsert_auto(result(1, generated_at=start - timedelta(minutes=30)), "b")
    await store.mark_stale(1, "new_comment")
    clock.advance(timedelta(minutes=10))
    row = await store.get(1)
    assert row is not None
    stale_gen = row.generation
    await store.upsert_auto(  # an older generation: stored, still stale, nothing recorded
        result(1, generated_at=start), "c", UpsertMeta(generation=stale_gen - 1)
    )
    clock.advance(timedelta(minutes=5))
    await store.upsert_auto(result(1, generated_at=clock.now), "d")
    async with sessions() as session:
        rows = (await session.scalars(select(FreshTransitionRow))).all()
        ttf = await overview.time_to_fresh(session, clock.now - timedelta(hours=1), "h")
    assert [(r.user_id, r.stale_s, r.wait_s) for r in rows] == [(1, 900.0, 900.0)]
    assert (ttf.count, ttf.percentiles) == (1, {0.5: 900.0, 0.99: 900.0})


async def test_time_to_fresh_is_the_nearest_rank_within_the_window(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    now = clock.now
    async with sessions.begin() as session:
        session.add_all(
            FreshTransitionRow(at=now - timedelta(minutes=1), user_id=i, stale_s=float(i))
            for i in range(1, 101)
        )
        session.add(FreshTransitionRow(at=now - timedelta(hours=2), user_id=7, stale_s=1e6))
    async with sessions() as session:
        hour = await overview.time_to_fresh(session, now - timedelta(hours=1), "h")
        day = await overview.time_to_fresh(session, now - timedelta(days=1), "d")
        empty = await overview.time_to_fresh(session, now, "none")
    assert (hour.count, hour.percentiles) == (100, {0.5: 50.0, 0.99: 99.0})
    assert (day.count, day.percentiles[0.99]) == (101, 100.0)
    assert (empty.count, empty.percentiles) == (0, {0.5: None, 0.99: None})


async def test_the_gauge_timer_samples_history_and_dead_letters_and_the_sweep_prunes_them(
    database_url: str, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rt = Runtime(Settings(database_url=database_url, history_interval=timedelta(hours=1)))
    try:
        await store.upsert_auto(result(1), "s")
        rt.unsaved_dead_letters[("comments", "not_json")] = 2
        await rt.refresh_gauges(leader=True)
        rt.unsaved_dead_letters[("comments", "invalid")] = 1
        await rt.refresh_gauges(leader=True)  # within the interval: no second sample
        async with sessions() as session:
            samples = (await session.scalars(select(FreshnessSampleRow))).all()
            letters = await session.scalar(select(func.sum(DeadLetterCountRow.count)))
        assert [(s.total, s.pending) for s in samples] == [(1, 0)]
        assert letters == 3
        assert not rt.unsaved_dead_letters
        ov = await OverviewService(sessions).overview(samples[0].sampled_at + timedelta(seconds=1))
        assert ov.dead_letters["comments"] == 3
        assert len(ov.samples) == 1
        rt.settings.history_retention = timedelta(0)
        await rt.prune_history()
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(FreshnessSampleRow)) == 0
            assert await session.scalar(select(func.count()).select_from(DeadLetterCountRow)) == 0
    finally:
        await rt.close()


async def test_only_the_leader_reads_and_exports_the_table_wide_gauges(
    database_url: str, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """One scan of the table per refresh for the group: a worker that is not the leader
    writes its dead-letter counts but neither reads nor exports the table's figures, and
    a leader forgets its reading once it is no longer the leader (a former leader does
    not repeat old figures beside the new one's)."""
    settings = Settings(database_url=database_url)
    leader, other = Runtime(settings), Runtime(settings)
    try:
        await store.upsert_auto(result(1), "s")
        other.unsaved_dead_letters[("comments", "not_json")] = 1
        await other.refresh_gauges(leader=False)
        await leader.refresh_gauges(leader=True)

        def rows(rt: Runtime) -> float | None:
            got = [
                rt.metrics.registry.get_sample_value("wb_highlights", {"state": s}) for s in STATES
            ]
            return None if None in got else sum(g or 0 for g in got)

        assert rows(other) is None
        assert b"wb_outbox_backlog" not in other.metrics.exposition()
        assert b"wb_regen_budget_tokens" not in other.metrics.exposition()
        assert rows(leader) == 1
        async with sessions() as session:
            assert await session.scalar(select(func.sum(DeadLetterCountRow.count))) == 1
            assert await session.scalar(select(func.count()).select_from(FreshnessSampleRow)) == 1
        await leader.refresh_gauges(leader=False)
        assert rows(leader) is None
        assert b"wb_events_total" in leader.metrics.exposition()  # its own metrics stay
    finally:
        await leader.close()
        await other.close()


async def test_refreshes_at_once_write_the_dead_letter_counts_once(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The timer's refresh and an assignment's may meet: each count is written once."""
    rt = Runtime(Settings(database_url=database_url))
    try:
        rt.unsaved_dead_letters[("comments", "not_json")] = 2
        await asyncio.gather(rt.refresh_gauges(leader=True), rt.refresh_gauges(leader=False))
        async with sessions() as session:
            assert await session.scalar(select(func.sum(DeadLetterCountRow.count))) == 2
        assert not rt.unsaved_dead_letters
    finally:
        await rt.close()
