"""An operator's pause holds under every policy: with no settle time and no budget
(``WB_REGEN_SETTLE=0 WB_REGEN_RATE=0``) the stale marks made while it is in force queue
their requests instead of making them at once, on every path that marks (the comment
batch, set-based on PostgreSQL; results, the store's operator actions, the sweep's expiry
statement, a reseed), a deletion's too; the scheduler step releases them, by priority, when
the pause is over. Both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers.cli import wb
from tests.helpers.clock import FakeClock
from tests.helpers.database import waiting_on_lock
from tests.helpers.factories import C, G, comment, generated, queued_requests, result
from tests.helpers.live import eventually
from worker.domain.batch import BatchResult
from worker.domain.decoder import decode
from worker.domain.scheduling import IMMEDIATE, Priority, RegenPolicy
from worker.domain.values import utcnow
from worker.services import outbox, scheduler
from worker.services.pipeline import Pipeline
from worker.services.reseed import Reseeder, ReseedSelection
from worker.services.store import HighlightStore
from worker.services.sweep import Sweeper
from worker.storage import dedup
from worker.storage.database import create_engine, is_postgresql, session_factory
from worker.storage.models import HighlightRow

H = timedelta(hours=1)


async def drain(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """The users of what a relay would publish now (the outbox emptied)."""
    async with sessions.begin() as session:
        return [int(m.key) for m in await outbox.take(session, 10_000)]


async def queued(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessions() as session:
        found = await session.scalars(
            select(HighlightRow.user_id)
            .where(HighlightRow.regen_queued_at.is_not(None))
            .order_by(HighlightRow.user_id)
        )
        return list(found.all())


async def test_a_pause_holds_the_immediate_policy_on_every_path(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(utcnow())  # a reseed marks by the real clock: keep to it
    start = clock.now
    store = HighlightStore(sessions, clock=clock)  # IMMEDIATE: no settle, no budget
    pipeline = Pipeline(sessions, clock=clock)
    assert store.policy.immediate and pipeline.policy.immediate
    for user in range(1, 30):
        expiry = start - H if user == 25 else None  # past stale_after, not swept yet
        generated_at = start - 2 * H
        await store.upsert_auto(result(user, generated_at=generated_at, stale_after=expiry), "s")
    await store.set_manual_override(24, "Locked.", actor="ops")
    await store.mark_stale(24, "manual")  # stale under the lock: asks for nothing
    await store.mark_stale(27, "manual")  # a request now (generation 1) ...
    await store.mark_stale(27, "manual")  # ... and a mark after it (generation 2)
    await drain(sessions)

    await store.pause_regeneration(start + 24 * H, actor="ops")
    comments = [comment(f"c{u}", u, clock.now) for u in range(1, 21)]
    marked = await pipeline.process(C, comments)  # the issue's 20 stale marks
    assert marked.regen_requests and not marked.outboxed  # queued: the relay need not wake
    await pipeline.process(C, [comment("d21", 21, clock.now, "deleted")])  # privacy waits too
    await store.mark_stale(22, "manual")
    await store.regenerate(23, actor="ops")
    await store.clear_manual_override(24, actor="ops")  # stale: asks for it now
    await Sweeper(sessions, retry_after=H, clock=clock).run()  # expired: 25
    await Reseeder(sessions, "ops", rate=1000).run(ReseedSelection(user_ids=[26]))
    answer = generated("g27", 27, start - H, "s27b", generation=1)  # answers generation 1
    await pipeline.process(G, [answer])  # still stale (generation 2): asks again
    held = [*range(1, 28)]

    assert await drain(sessions) == []  # nothing was requested at once
    assert await queued(sessions) == held
    async with sessions.begin() as session:
        assert (await scheduler.publish_due(session, clock.now + H, IMMEDIATE)).count == 0
    assert await drain(sessions) == []

    async with sessions.begin() as session:  # the pause is over: every worker releases them
        done = await scheduler.publish_due(session, start + 25 * H, IMMEDIATE)
    assert done.priorities == sorted(done.priorities) and done.priorities[0] == Priority.PRIVACY
    released = await drain(sessions)
    assert sorted(released) == held and released[0] == 21  # one each, the deletion first
    assert await queued(sessions) == []


async def test_without_a_pause_the_immediate_policy_requests_at_once(
    sessions: async_sessionmaker[AsyncSession], store: HighlightStore, clock: FakeClock
) -> None:
    """A pause that is over holds nothing (and the pause is read, not assumed): over by the
    database's clock, the one that set it, although the worker's clock (``clock``, months
    behind) has it still in force."""
    for user in (1, 2):
        await store.upsert_auto(result(user, generated_at=clock.now - H), f"s{user}")
    await store.pause_regeneration(clock.now + H, actor="ops")  # ended months ago
    await store.mark_stale(1, "manual")
    marked = await Pipeline(sessions, clock=clock).process(C, [comment("c2", 2, clock.now)])
    assert marked.outboxed  # in the outbox with the batch: the relay wakes at once
    assert sorted(r["user_id"] for r in await queued_requests(sessions)) == [1, 2]
    assert await queued(sessions) == []


async def test_a_pause_in_force_holds_whatever_the_workers_clock_says(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A pause set by the database's clock ends by it: a worker whose clock runs two hours
    ahead (past the pause's end) still queues, on every path that reads the pause."""
    now = utcnow()
    ahead = FakeClock(now + 2 * H)
    store = HighlightStore(sessions, clock=ahead)  # IMMEDIATE; the budget on the database's clock
    for user in (1, 2):
        await store.upsert_auto(result(user, generated_at=now - H), f"s{user}")
    assert await store.pause_regeneration(now + H, actor="ops") == now + H
    await store.mark_stale(1, "manual")
    await Pipeline(sessions, clock=ahead).process(C, [comment("c2", 2, now)])
    assert await drain(sessions) == []
    assert await queued(sessions) == [1, 2]


async def _by_query(session: AsyncSession, now: datetime) -> RegenPolicy:
    return await scheduler.policy_in_force(session, IMMEDIATE)


async def _by_claim(session: AsyncSession, now: datetime) -> RegenPolicy:
    """As a set-based batch reads it: in its claim's statement."""
    event = decode(C, comment("c1", 1, now).value, now)
    claim = await dedup.claim(
        session, C, [(None, event)], now, BatchResult(), also=scheduler.HOLD_IN_FORCE_SQL
    )
    return scheduler.held_while_paused(IMMEDIATE, claim.also)


@pytest.mark.parametrize("read_pause", [_by_query, _by_claim], ids=["query", "claim"])
async def test_a_pause_waits_for_a_mark_that_read_no_pause_and_the_step_waits_for_neither(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    store: HighlightStore,
    clock: FakeClock,
    read_pause: Callable[[AsyncSession, datetime], Awaitable[RegenPolicy]],
) -> None:
    """PostgreSQL: a transaction that found no pause (and may request at once) holds the
    pause off until it commits, so no request made at once commits after the pause did;
    the scheduler step, which every worker runs every tick, waits for neither."""
    async with sessions() as probe:
        if not is_postgresql(probe):
            pytest.skip("SQLite serialises whole write transactions")
    clock.now = utcnow()  # the pause is judged by the database's clock: keep to it
    await store.upsert_auto(result(1, generated_at=clock.now - H), "s1")
    async with sessions.begin() as session:  # the budget row, as a first step creates it
        await scheduler.publish_due(session, clock.now, IMMEDIATE)
    async with sessions.begin() as marking:
        assert (await read_pause(marking, clock.now)).immediate
        async with sessions.begin() as stepping:  # FOR NO KEY UPDATE: not held up
            await asyncio.wait_for(scheduler.publish_due(stepping, clock.now, IMMEDIATE), 10)
        pausing = asyncio.ensure_future(store.pause_regeneration(clock.now + H, actor="ops"))

        await eventually(
            lambda: waiting_on_lock(engine, query_like="%regen_budget%"),
            timeout=10,
            what="the pause waiting for the mark",
        )
        assert not pausing.done()
    assert await asyncio.wait_for(pausing, 10) == clock.now + H
    async with sessions.begin() as session:
        assert not (await _by_query(session, clock.now)).immediate
        assert not (await _by_claim(session, clock.now)).immediate


def test_the_issues_commands_pause_an_immediate_policy(tmp_path: Path) -> None:
    """``WB_REGEN_SETTLE=0 WB_REGEN_RATE=0``: pause-regeneration, then stale marks (here the
    CLI's own): none is requested until resume-regeneration; the worker's step then
    releases them."""
    url = f"sqlite:///{tmp_path}/pause.db"
    env = {"WB_DATABASE_URL": url, "WB_REGEN_SETTLE": "0", "WB_REGEN_RATE": "0"}
    assert wb("db", "upgrade", env=env).returncode == 0
    paused = wb("signal-profile", "pause-regeneration", "--for", "10m", env=env)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("regeneration paused until ")
    for user in ("1", "2", "3"):
        assert wb("signal-profile", "regenerate", user, env=env).returncode == 0

    async def outbox_and_queue() -> tuple[list[int], list[int]]:
        engine = create_engine(url)
        try:
            sessions = session_factory(engine)
            return await drain(sessions), await queued(sessions)
        finally:
            await engine.dispose()

    assert asyncio.run(outbox_and_queue()) == ([], [1, 2, 3])
    assert wb("signal-profile", "resume-regeneration", env=env).returncode == 0

    async def step() -> list[int]:
        engine = create_engine(url)
        try:
            sessions = session_factory(engine)
            async with sessions.begin() as session:
                await scheduler.publish_due(session, utcnow(), IMMEDIATE)
            return sorted(await drain(sessions))
        finally:
            await engine.dispose()

    assert asyncio.run(step()) == [1, 2, 3]
