"""What regeneration costs, on SQLite and PostgreSQL (results set-based there): usage is
stored with the row and booked once to the lane and reason of the request answered, the
counters equal the table, hostile usage counts nothing, requests carry their lane, and the
daily spend cap lets only privacy requests out."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import FakeClock
from tests.helpers.factories import C, G, comment, generated, queued_messages, raw, result
from worker.domain.cost import Lane, Spend, SpendTotals, Usage
from worker.domain.scheduling import Priority, RegenPolicy
from worker.domain.values import UpsertMeta, utcnow
from worker.runtime.metrics import Metrics
from worker.services import lane_budget, scheduler, spend
from worker.services.auth import Principal, Role
from worker.services.outbox import REGEN_BATCH_STREAM, REGEN_STREAM
from worker.services.overview import OverviewService
from worker.services.pipeline import Pipeline
from worker.services.reseed import Reseeder, ReseedSelection
from worker.services.store import HighlightStore
from worker.services.sweep import Sweeper
from worker.storage.db_clock import database_now
from worker.storage.models import HighlightRow, RegenBudgetRow
from worker.web.overview_pages import overview_page

H = timedelta(hours=1)
USAGE = {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.25}


@pytest.fixture
def now_clock() -> FakeClock:
    """Spend is booked by the database's clock: the tests keep to the real time."""
    return FakeClock(utcnow())


async def booked(sessions: async_sessionmaker[AsyncSession]) -> Spend:
    async with sessions() as session:
        return await spend.spend_since(session, await database_now(session) - H)


def totals(spent: Spend, lane: str, reason: str) -> SpendTotals:
    return spent.by_key.get((lane, reason), SpendTotals())


async def test_usage_is_stored_and_booked_once_to_the_request_it_answers(
    sessions: async_sessionmaker[AsyncSession], now_clock: FakeClock
) -> None:
    start = now_clock.now
    store = HighlightStore(sessions, clock=now_clock)
    pipeline = Pipeline(sessions, clock=now_clock)
    for user in (1, 2):
        expiry = start - H if user == 2 else None
        await store.upsert_auto(result(user, generated_at=start - 2 * H, stale_after=expiry), "s")
    await store.mark_stale(1, "manual")  # an operator's request: interactive
    await Sweeper(sessions, retry_after=H, clock=now_clock).run()  # 2 expired: batch
    answers = [
        generated("g1", 1, start, "s1", generation=1, usage=USAGE),
        generated("g2", 2, start, "s2", generation=1, usage={"cost_usd": 0.5}),
        generated("g3", 3, start, "s3", usage=USAGE),  # nobody asked
        generated("g4", 1, start - H, "s1-old", usage=USAGE),  # superseded: still paid for
        generated("g5", 2, start, "s2"),  # the same generation again: counted once
        generated("g6", 1, start + timedelta(seconds=1), "s1b"),  # reports nothing
    ]
    done = Spend()
    for message in answers:
        done.merge((await pipeline.process(G, [message])).spend)
    done.merge((await pipeline.process(G, [answers[0]])).spend)  # redelivered: a duplicate

    spent = await booked(sessions)
    assert totals(spent, "interactive", "manual") == SpendTotals(1, 1, 1, 1200, 300, 0.25)
    assert totals(spent, "batch", "expired") == SpendTotals(1, 0, 1, 0, 0, 0.5)  # a cost only
    assert totals(spent, "interactive", "unrequested") == SpendTotals(3, 2, 2, 2400, 600, 0.5)
    assert spent.total().average_cost_usd == pytest.approx(1.25 / 4)
    assert done.by_key == spent.by_key  # what the counters are given is what was stored

    overview = await OverviewService(sessions).overview(utcnow())  # one snapshot, one rule
    assert overview.spend.hour.by_key == overview.spend.day.by_key == spent.by_key
    shown = overview.as_dict()["spend"]["last_day"]["total"]
    assert (shown["results"], shown["cost_usd"], shown["average_cost_usd"]) == (5, 1.25, 0.3125)
    page = overview_page(overview, [], Principal(1, "ops", Role.ADMIN), "csrf")
    assert '<strong id="spend-average">$0.3125</strong>' in page
    metrics = Metrics()
    metrics.record_spend(done)
    exposed = metrics.exposition().decode()
    assert 'wb_regen_cost_usd_total{lane="batch",reason="expired"} 0.5' in exposed
    assert (
        'wb_regen_tokens_total{direction="input",lane="interactive",reason="unrequested"} 2400.0'
        in exposed
    )
    row1, row2 = await store.get(1), await store.get(2)
    assert row1 is not None and row2 is not None
    assert (row1.usage_input_tokens, row1.usage_cost_usd) == (None, None)  # g6 reported none
    assert (row2.usage_input_tokens, row2.usage_cost_usd) == (None, 0.5)


HOSTILE: list[tuple[str, Any]] = [
    ("negative tokens", {"input_tokens": -1}),
    ("string tokens", {"output_tokens": "300"}),
    ("float tokens", {"input_tokens": 12.5}),
    ("boolean cost", {"cost_usd": True}),
    ("string cost", {"cost_usd": "0.25"}),
    ("huge tokens", {"input_tokens": 10_000_001}),
    ("huge cost", {"cost_usd": 1000.01}),
    ("negative cost", {"cost_usd": -0.01}),
    ("unknown field", {"cost_usd": 0.1, "currency": "EUR"}),
    ("not an object", [1, 2]),
    ("a string", "free"),
]


@pytest.mark.parametrize(("label", "usage"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_usage_is_dead_lettered_with_its_reason_and_counts_nothing(
    sessions: async_sessionmaker[AsyncSession], now_clock: FakeClock, label: str, usage: Any
) -> None:
    pipeline = Pipeline(sessions, clock=now_clock)
    done = await pipeline.process(G, [generated("g1", 1, now_clock.now, "s1", usage=usage)])
    assert [d.reason.value for d in done.dead_letters] == ["bad_usage"], label
    assert "usage" in done.dead_letters[0].detail
    assert not done.spend and not await booked(sessions)
    assert await HighlightStore(sessions).get(1) is None  # never applied


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_numbers_in_usage_are_not_json_and_count_nothing(
    sessions: async_sessionmaker[AsyncSession], now_clock: FakeClock, constant: bytes
) -> None:
    doc = json.dumps(
        {
            "event_id": "g1",
            "user_id": 1,
            "bio_text": "b",
            "proof_points": [],
            "quotes": [],
            "source_group": "g",
            "snapshot_hash": "s",
            "llm_model": "m",
            "generated_at": now_clock.now.isoformat(),
            "usage": {"cost_usd": "X"},
        }
    ).encode()
    done = await Pipeline(sessions, clock=now_clock).process(
        G, [raw(doc.replace(b'"X"', constant))]
    )
    assert [d.reason.value for d in done.dead_letters] == ["not_json"]
    assert not await booked(sessions)


async def test_requests_carry_their_lane_and_the_batch_lane_its_deadline(
    sessions: async_sessionmaker[AsyncSession], now_clock: FakeClock
) -> None:
    start = now_clock.now
    store = HighlightStore(sessions, clock=now_clock)
    for user in (1, 2, 3, 4):
        expired = start - H if user == 2 else None
        await store.upsert_auto(result(user, generated_at=start - 2 * H, stale_after=expired), "s")
    pipeline = Pipeline(sessions, clock=now_clock)
    await pipeline.process(C, [comment("c1", 1, start)])  # interactive
    await Sweeper(sessions, retry_after=H, clock=now_clock).run()  # 2: batch
    await Reseeder(sessions, "ops", rate=1000).run(ReseedSelection(user_ids=[3]))  # batch
    await pipeline.process(C, [comment("d4", 4, start, "deleted")])  # privacy: interactive
    lanes = {
        int(m.key): (m.stream, m.payload()["lane"], m.payload().get("respond_by"))
        for m in await queued_messages(sessions)
    }
    assert lanes[1] == (REGEN_STREAM, "interactive", None)
    assert lanes[4] == (REGEN_STREAM, "interactive", None)
    for user in (2, 3):
        stream, lane, respond_by = lanes[user]
        assert (stream, lane) == (REGEN_BATCH_STREAM, "batch")
        assert respond_by is not None
        deadline = datetime.fromisoformat(respond_by) - start
        assert timedelta(hours=23) < deadline <= timedelta(hours=24, minutes=5)
    row = await store.get(2)
    assert row is not None and (row.regen_request_lane, row.regen_request_reason) == (
        Lane.BATCH.value,
        "expired",
    )


async def _spend(
    sessions: async_sessionmaker[AsyncSession], pipeline: Pipeline, usd: float
) -> None:
    """Book ``usd`` today, as a result that answered nothing."""
    now = utcnow()
    await pipeline.process(G, [generated(f"spent-{usd}", 999, now, "x", usage={"cost_usd": usd})])


async def test_at_the_daily_cap_only_privacy_requests_go_out(
    sessions: async_sessionmaker[AsyncSession], now_clock: FakeClock
) -> None:
    capped = RegenPolicy(settle=timedelta(0), rate_per_min=0, max_usd_per_day=1.0)
    start = now_clock.now
    store = HighlightStore(sessions, clock=now_clock, policy=capped)
    pipeline = Pipeline(sessions, clock=now_clock, policy=capped)
    for user in (1, 2):
        await store.upsert_auto(result(user, generated_at=start - H), "s")
    await _spend(sessions, pipeline, 1.5)
    async with sessions.begin() as session:  # the step sums the day and sets the cap
        first = await scheduler.publish_due(session, await database_now(session), capped)
    assert first.capped
    await pipeline.process(C, [comment("c1", 1, start), comment("d2", 2, start, "deleted")])
    assert await queued_messages(sessions) == []  # held, as under a pause
    async with sessions.begin() as session:
        done = await scheduler.publish_due(session, await database_now(session), capped)
    assert done.capped and done.priorities == [Priority.PRIVACY]
    assert [int(m.key) for m in await queued_messages(sessions)] == [2]
    async with sessions() as session:
        budget = await session.scalar(select(RegenBudgetRow))
        assert budget is not None and budget.capped_until is not None
        assert budget.capped_until.hour == 0 and budget.capped_until > utcnow()
        row = await session.get(HighlightRow, 1)
        assert row is not None and row.regen_queued_at is not None  # waits, not dropped

    raised = RegenPolicy(settle=timedelta(0), rate_per_min=0, max_usd_per_day=2.0)
    async with sessions.begin() as session:  # a raised cap releases the queue at once
        after = await scheduler.publish_due(session, await database_now(session), raised)
    assert not after.capped and after.count == 1


@pytest.mark.parametrize("history", [False, True], ids=["no usage yet", "recent usage"])
async def test_the_cost_preview_sums_each_profiles_token_estimate_and_cost(
    sessions: async_sessionmaker[AsyncSession], now_clock: FakeClock, history: bool
) -> None:
    """The SQL sum is the token budget's own rule (``lane_budget.estimate``) per row."""
    store = HighlightStore(sessions, clock=now_clock)
    usages = [Usage(1000, 200, 0.02), Usage(500, None, None), None, Usage(None, None, 0.5)]
    for user, usage in enumerate(usages, start=1):
        meta = UpsertMeta(usage=usage)
        await store.upsert_auto(result(user, generated_at=now_clock.now - H), "s", meta)
    if history:  # a result that answered nothing: 3,000 tokens for $0.10
        usage = {"input_tokens": 2500, "output_tokens": 500, "cost_usd": 0.1}
        await Pipeline(sessions, clock=now_clock).process(
            G, [generated("g9", 9, now_clock.now, "s9", usage=usage)]
        )
    reseeder = Reseeder(sessions, "ops", rate=1000)
    cost = await reseeder.preview(ReseedSelection(user_ids=[1, 2, 3, 4]))
    async with sessions() as session:
        average = await lane_budget.average_tokens(session, now_clock.now)
        rows = [await session.get(HighlightRow, user) for user in (1, 2, 3, 4)]
    expected = sum(lane_budget.estimate(r, average, 2000) for r in rows if r is not None)
    assert (cost.profiles, cost.tokens) == (4, expected)
    assert expected == 1200 + 500 + (3000 if history else 2000) + (3000 if history else 2000)
    if history:
        assert cost.cost_usd == pytest.approx(0.02 + 0.1 + 0.1 + 0.5)
        assert cost.describe() == "4 profiles ≈ 7,700 tokens ≈ $0.72"
    else:
        assert cost.cost_usd is None  # two profiles never reported a cost
        assert cost.describe() == "4 profiles ≈ 5,700 tokens ≈ an unknown cost"


async def test_a_batch_request_is_asked_again_only_after_its_respond_by_in_its_lane(
    sessions: async_sessionmaker[AsyncSession], now_clock: FakeClock
) -> None:
    """A provider's batch tier may take hours: the sweep's retry (``WB_REGEN_RETRY_AFTER``,
    15 min) waits for the batch request's deadline, and the retry of a reseed stays in
    the batch lane (its stale reason, ``manual``, is an operator's)."""
    start = now_clock.now
    store = HighlightStore(sessions, clock=now_clock)
    await store.upsert_auto(result(1, generated_at=start - H), "s")
    await store.upsert_auto(result(2, generated_at=start - H), "s")
    await Reseeder(sessions, "ops", rate=1000).run(ReseedSelection(user_ids=[1]))
    await store.mark_stale(2, "manual")  # interactive
    sweeper = Sweeper(sessions, retry_after=timedelta(minutes=15), clock=now_clock)
    now_clock.advance(timedelta(hours=1))
    assert (await sweeper.run()).actions == {"retried": 1}  # the interactive one only
    now_clock.advance(timedelta(hours=24))
    assert (await sweeper.run()).actions == {"retried": 2}
    retries = {int(m.key): m for m in await queued_messages(sessions)}
    assert retries[1].stream == REGEN_BATCH_STREAM and retries[1].payload()["lane"] == "batch"
    assert retries[1].payload()["reason"] == "retry"
