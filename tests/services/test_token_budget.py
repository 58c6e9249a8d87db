"""The LLM-token budget and the lanes' budgets, on SQLite and PostgreSQL: requests are
charged estimates (the user's last usage, the recent average, the default) and settled by
their results, the token bucket holds beside the request budget, and a batch lane with a
budget of its own neither delays nor is starved by interactive work."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import FakeClock
from tests.helpers.factories import C, G, comment, generated, queued_messages, result
from worker.domain.cost import Usage
from worker.domain.scheduling import Priority, RegenPolicy
from worker.domain.values import UpsertMeta, utcnow
from worker.services import outbox, scheduler
from worker.services.lane_budget import average_tokens
from worker.services.pipeline import Pipeline
from worker.services.reseed import Reseeder, ReseedSelection
from worker.services.store import HighlightStore
from worker.storage.models import HighlightRow, TokenSettlementRow

S = timedelta(seconds=1)
# The case: every user last used 1,200 tokens; 6,000 a minute is five requests.
TOKENS = RegenPolicy(tokens_per_min=6000, tokens_estimate=2000)


async def seed(
    store: HighlightStore, users: range, usage: Usage | None, reason: str = "manual"
) -> None:
    """Rows with content (and ``usage`` as their last generation's), each with a request
    queued at operator priority (due at once)."""
    for user in users:
        meta = UpsertMeta(usage=usage)
        await store.upsert_auto(result(user, generated_at=utcnow() - timedelta(hours=1)), "s", meta)
        await store.mark_stale(user, reason)


async def step(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, policy: RegenPolicy
) -> scheduler.Published:
    async with sessions.begin() as session:
        return await scheduler.publish_due(session, clock.now, policy)


async def drain(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """Publish what the steps queued (the budget is kept on the topic: the outbox counts)."""
    async with sessions.begin() as session:
        return [int(m.key) for m in await outbox.take(session, 10_000)]


async def test_each_request_is_charged_its_users_last_usage_and_the_bucket_holds(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(utcnow())
    store = HighlightStore(sessions, clock=clock, policy=TOKENS)
    await seed(store, range(1, 61), Usage(1000, 200, 0.01))
    published = []
    for _ in range(10 * 60):  # ten minutes, a step a second
        published.append((await step(sessions, clock, TOKENS)).count)
        await drain(sessions)
        clock.advance(S)
    assert published[0] == 5  # a minute's worth at once (6,000 / 1,200) ...
    assert 5 + 45 <= sum(published) <= 5 + 51  # ... then five a minute
    async with sessions() as session:
        charged = await session.scalars(
            select(HighlightRow.regen_token_estimate).where(
                HighlightRow.regen_token_estimate.is_not(None)
            )
        )
        assert set(charged.all()) == {1200}


async def test_estimates_settle_toward_actual_usage(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """No usage known: the default (2,000) is charged; results report 500 and give 1,500
    each back, and later requests are charged the recent average (500)."""
    clock = FakeClock(utcnow())
    policy = RegenPolicy(tokens_per_min=4000, tokens_estimate=2000)
    store = HighlightStore(sessions, clock=clock, policy=policy)
    await seed(store, range(1, 21), None)
    first = await step(sessions, clock, policy)
    assert first.count == 2 and first.llm_tokens_left == {"interactive": 0.0, "batch": 0.0}
    answered = await drain(sessions)
    pipeline = Pipeline(sessions, clock=clock, policy=policy)
    usage = {"input_tokens": 400, "output_tokens": 100}
    for user in answered:
        message = generated(f"g{user}", user, clock.now, f"n{user}", generation=1, usage=usage)
        done = await pipeline.process(G, [message])
        assert done.token_settlements == [("interactive", 1500.0)]
    async with sessions() as session:
        assert len((await session.scalars(select(TokenSettlementRow))).all()) == 2
    second = await step(sessions, clock, policy)  # 3,000 given back, 500 a request
    assert second.count == 6
    assert second.llm_tokens_left["interactive"] == 0.0
    async with sessions() as session:
        assert (await session.scalars(select(TokenSettlementRow))).all() == []  # taken once


async def test_the_request_budget_and_the_token_budget_whichever_bites_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(utcnow())
    both = RegenPolicy(rate_per_min=2, burst=2, tokens_per_min=60_000)
    store = HighlightStore(sessions, clock=clock, policy=both)
    await seed(store, range(1, 11), Usage(100, 0))
    assert (await step(sessions, clock, both)).count == 2  # credits bite first


async def test_a_batch_lane_with_its_own_budget_neither_delays_nor_is_starved(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(utcnow())
    lanes = RegenPolicy(rate_per_min=2, burst=2, batch_rate_per_min=1)
    store = HighlightStore(sessions, clock=clock, policy=lanes)
    await seed(store, range(1, 11), None)  # interactive (operator): more than its burst
    for user in range(11, 31):
        await store.upsert_auto(result(user, generated_at=utcnow() - timedelta(hours=1)), "s")
    reseed = Reseeder(sessions, "ops", rate=1000, policy=lanes)
    await reseed.run(ReseedSelection(user_ids=list(range(11, 31))))  # a batch wave
    clock.now = utcnow() + S  # the reseed marks by the real clock
    done = await step(sessions, clock, lanes)
    assert sorted(done.priorities) == [Priority.OPERATOR, Priority.OPERATOR, Priority.RESEED]
    streams = sorted(m.stream for m in await queued_messages(sessions))
    assert streams == [outbox.REGEN_STREAM, outbox.REGEN_STREAM, outbox.REGEN_BATCH_STREAM]

    shared = RegenPolicy(rate_per_min=2, burst=2)  # without: batch work waits its turn
    await drain(sessions)
    clock.advance(timedelta(minutes=5))
    later = await step(sessions, clock, shared)
    assert later.priorities == [Priority.OPERATOR, Priority.OPERATOR]


async def test_an_estimate_is_settled_once_by_the_result_stored_for_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A conflicting answer settles nothing; the stored one settles and clears the charge,
    so a later answer (a duplicate generation, a late copy) settles nothing more."""
    clock = FakeClock(utcnow())
    policy = RegenPolicy(tokens_per_min=4000, tokens_estimate=2000)
    store = HighlightStore(sessions, clock=clock, policy=policy)
    await seed(store, range(1, 2), None)
    assert (await step(sessions, clock, policy)).count == 1
    pipeline = Pipeline(sessions, clock=clock, policy=policy)
    usage = {"input_tokens": 500, "output_tokens": 500}
    answers = [
        generated("g1", 1, clock.now, "a", generation=1, usage=usage, base_snapshot_hash="no"),
        generated("g2", 1, clock.now, "b", generation=1, usage=usage),
        generated("g3", 1, clock.now + S, "c", generation=1, usage=usage),
    ]
    settled = [(await pipeline.process(G, [a])).token_settlements for a in answers]
    assert settled == [[], [("interactive", 1000.0)], []]
    row = await store.get(1)
    assert row is not None and row.regen_token_estimate is None


async def test_privacy_goes_out_through_an_empty_token_bucket_whose_debt_is_bounded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(utcnow())
    policy = RegenPolicy(tokens_per_min=6000)
    store = HighlightStore(sessions, clock=clock, policy=policy)
    await seed(store, range(1, 4), Usage(5_000_000, 5_000_000))  # last used 10M tokens
    first = await step(sessions, clock, policy)
    assert first.count == 1 and first.llm_tokens_left["interactive"] == -6000.0  # one minute
    for user in (2, 3):  # a deletion each: privacy
        await Pipeline(sessions, clock=clock, policy=policy).process(
            C, [comment(f"d{user}", user, clock.now, "deleted")]
        )
    clock.advance(S)
    done = await step(sessions, clock, policy)
    assert done.priorities == [Priority.PRIVACY, Priority.PRIVACY]
    clock.advance(timedelta(minutes=2))  # a bounded debt is repaid within two minutes
    assert (await step(sessions, clock, policy)).llm_tokens_left["interactive"] > 0


async def test_results_that_report_only_a_cost_leave_the_token_estimate_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(utcnow())
    pipeline = Pipeline(sessions, clock=clock)
    await pipeline.process(G, [generated("g9", 9, clock.now, "x", usage={"cost_usd": 0.1})])
    async with sessions() as session:
        average = await average_tokens(session, clock.now)
    assert average is None  # so the default estimate is charged, not zero tokens
