"""The scheduler on SQLite and PostgreSQL (the comment batch is set-based there): settle,
max wait, the shared budget, priority order, and the sweep's SQL twin; and the policy as a
value of the service objects (two in one process may differ)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import C, comment, comment_doc, later, queued_requests, raw, result
from worker.domain.scheduling import IMMEDIATE, Priority, RegenPolicy
from worker.runtime.process import Runtime
from worker.services import outbox, scheduler
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore
from worker.services.sweep import Sweeper
from worker.settings import Settings
from worker.storage.models import HighlightRow

S = timedelta(seconds=1)


@dataclass
class Scheduled:
    """One policy and the service objects built with it, as ``Runtime`` builds them."""

    policy: RegenPolicy
    store: HighlightStore
    pipeline: Pipeline
    sweeper: Sweeper


@pytest.fixture
def scheduled(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> Callable[..., Scheduled]:
    def build(**kwargs: Any) -> Scheduled:
        chosen = RegenPolicy(**kwargs)
        return Scheduled(
            chosen,
            HighlightStore(sessions, clock=clock, policy=chosen, budget_clock=clock.database),
            Pipeline(sessions, clock=clock, policy=chosen),
            Sweeper(sessions, retry_after=timedelta(minutes=15), clock=clock, policy=chosen),
        )

    return build


async def step(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, policy: RegenPolicy
) -> scheduler.Published:
    async with sessions.begin() as session:
        return await scheduler.publish_due(session, clock.now, policy)


async def relay(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    """What a relay would publish now (the outbox drained, as after the broker's ack)."""
    async with sessions.begin() as session:
        return [m.payload() for m in await outbox.take(session, 10_000)]


async def seed(store: HighlightStore, users: range) -> None:
    for user in users:
        await store.upsert_auto(result(user, generated_at=T0 - timedelta(hours=1)), f"s{user}")


async def test_a_burst_of_comments_gives_one_request_after_it_settles(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    sched = scheduled(settle=5 * S, max_wait=60 * S)
    await seed(sched.store, range(1, 2))
    for i in range(30):  # 30 comments over 20 s, a scheduler step after each
        clock.now = T0 + i * 20 / 29 * S
        await sched.pipeline.process(C, [comment(f"e{i}", 1, clock.now)])
        assert (await step(sessions, clock, sched.policy)).count == 0
    last = clock.now
    clock.now = last + 4.9 * S
    assert (await step(sessions, clock, sched.policy)).count == 0
    clock.now = last + 5 * S
    done = await step(sessions, clock, sched.policy)
    assert done.count == 1 and done.priorities == [Priority.COMMENT]
    (request,) = await queued_requests(sessions)
    assert request["priority"] == Priority.COMMENT and request["reason"] == "new_comment"
    assert request["generation"] == 30  # every mark is in it
    row = await sched.store.get(1)
    assert row is not None and row.regen_request_id == request["event_id"]
    clock.now += 60 * S
    assert (await step(sessions, clock, sched.policy)).count == 0  # nothing left queued


async def test_a_steady_trickle_cannot_postpone_past_max_wait(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    sched = scheduled(settle=5 * S, max_wait=12 * S)
    await seed(sched.store, range(1, 2))
    published_at = None
    for i in range(20):  # a comment every 2 s: never 5 s of quiet
        clock.now = T0 + 2 * i * S
        await sched.pipeline.process(C, [comment(f"e{i}", 1, clock.now)])
        if (await step(sessions, clock, sched.policy)).count:
            published_at = clock.now
            break
    assert published_at == T0 + 12 * S


async def test_budget_releases_in_priority_order_and_never_drops(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    sched = scheduled(rate_per_min=60, burst=3)  # one a second, bursts of 3
    await seed(sched.store, range(1, 11))
    kinds = {1: "created", 2: "deleted", 3: "created", 4: "edited", 5: "deleted"}
    for user, kind in kinds.items():
        await sched.pipeline.process(C, [comment(f"c{user}", user, later(1), kind)])
    await sched.pipeline.process(C, [comment("c3b", 3, later(1)), comment("c3c", 3, later(1))])
    await sched.store.regenerate(6, actor="ops")
    for user in range(7, 11):
        await sched.store.mark_stale(user, "manual")
    released: list[int] = []
    requests: list[dict[str, Any]] = []
    for second in range(30):
        clock.now = T0 + second * S
        done = await step(sessions, clock, sched.policy)
        assert done.count <= (3 if second == 0 else 1)
        released += done.priorities
        requests += await relay(sessions)
    assert len(requests) == 10 == len({r["user_id"] for r in requests})
    order = [r["user_id"] for r in requests]
    assert order[:2] in ([2, 5], [5, 2])  # deletions first
    assert order[2] == 3  # three unseen comments before one
    assert set(order[3:5]) == {1, 4}
    assert released == sorted(released)
    assert [r["priority"] for r in requests] == released


async def test_requests_still_in_the_outbox_count_against_the_burst(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    """The budget is kept on the topic: what the outbox still holds counts against the
    burst, so a backlog the relay publishes late (broker away, worker killed before its
    relay ran) is not followed by a full bucket on top of it; lag costs nothing else."""
    sched = scheduled(rate_per_min=60, burst=3)
    await seed(sched.store, range(1, 21))
    for user in range(1, 21):
        await sched.store.mark_stale(user, "manual")
    assert (await step(sessions, clock, sched.policy)).count == 3  # the burst, into the outbox
    clock.now = T0 + 10 * S  # ten seconds without a relay: the outbox fills the burst
    held = await step(sessions, clock, sched.policy)
    assert held.count == 0 and held.budget_left == 0
    assert len(await relay(sessions)) == 3  # published at last, ten seconds late
    clock.now = T0 + 11 * S
    assert (await step(sessions, clock, sched.policy)).count == 1  # one second's worth, not 3
    clock.now = T0 + 12 * S  # the relay is a step behind: still one a second
    assert (await step(sessions, clock, sched.policy)).count == 1
    clock.now = T0 + 13 * S
    assert (await step(sessions, clock, sched.policy)).count == 1  # 3 now in the outbox
    clock.now = T0 + 15 * S
    assert (await step(sessions, clock, sched.policy)).count == 0  # tokens + outbox <= burst
    assert len(await relay(sessions)) == 3
    clock.now = T0 + 16 * S
    assert (await step(sessions, clock, sched.policy)).count == 1  # a full bucket earned none


async def test_a_pause_releases_nothing_and_earns_nothing_for_every_worker(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    sched = scheduled(rate_per_min=60, burst=3)
    await seed(sched.store, range(1, 11))
    for user in range(1, 11):
        await sched.store.mark_stale(user, "manual")
    assert (await step(sessions, clock, sched.policy)).count == 3  # the burst
    await relay(sessions)
    await sched.store.pause_regeneration(T0 + 60 * S, actor="ops")
    clock.now = T0 + 30 * S
    assert (await step(sessions, clock, sched.policy)).count == 0  # paused
    clock.now = T0 + 61 * S  # the pause is over: one second's worth, not the minute's
    assert (await step(sessions, clock, sched.policy)).count == 1
    await sched.store.pause_regeneration(T0 + 3600 * S, actor="ops")
    clock.now = T0 + 70 * S
    assert (await step(sessions, clock, sched.policy)).count == 0
    assert await sched.store.pause_regeneration(None, actor="ops") is None  # resumed early
    clock.now = T0 + 72 * S
    assert (await step(sessions, clock, sched.policy)).count == 2
    requests = await relay(sessions)
    assert len(requests) == 3 and len({r["user_id"] for r in requests}) == 3  # nothing lost


async def test_a_longest_event_id_fits_the_queued_trigger(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    """``comment:`` + a 200-character event id (the longest valid) is stored, not refused
    by the column (PostgreSQL dead-lettered such a comment as invalid)."""
    sched = scheduled(settle=5 * S, max_wait=60 * S)
    await seed(sched.store, range(1, 2))
    event_id = "e" * 200
    doc = {**comment_doc(event_id, 1, clock.now), "comment_id": "c" * 200}
    done = await sched.pipeline.process(C, [raw(doc)])
    assert not done.dead_letters
    async with sessions() as session:
        row = await session.get(HighlightRow, 1)
        assert row is not None and row.regen_queued_trigger == f"comment:{event_id}"


async def test_under_an_override_lock_the_queue_delays_what_it_would_have_requested(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    """The scheduler only delays: a request queued before the lock still goes (at once it
    would have gone already), an operator's regenerate under the lock goes, and a comment
    under the lock queues nothing."""
    sched = scheduled(settle=5 * S, max_wait=60 * S)
    await seed(sched.store, range(1, 4))
    await sched.pipeline.process(C, [comment("c1", 1, clock.now)])  # queued, settling
    for user in (1, 2, 3):
        await sched.store.set_manual_override(user, "Locked by ops.", actor="ops")
    await sched.store.regenerate(2, actor="ops")  # asked for under the lock
    await sched.pipeline.process(C, [comment("c3", 3, clock.now)])  # locked: nothing queued
    clock.now = T0 + 120 * S
    done = await step(sessions, clock, sched.policy)
    assert sorted(done.priorities) == [Priority.COMMENT, Priority.OPERATOR]
    assert sorted(r["user_id"] for r in await relay(sessions)) == [1, 2]
    assert (await step(sessions, clock, sched.policy)).count == 0


async def test_expiry_is_queued_oldest_first_on_every_path(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    """The set-based sweep (PostgreSQL) queues in SQL what the ORM path (SQLite) queues."""
    sched = scheduled(rate_per_min=600, burst=100)
    for user, hours in ((1, 3), (2, 1), (3, 2)):
        generated = T0 - timedelta(days=1)
        await sched.store.upsert_auto(
            result(user, generated_at=generated, stale_after=T0 - timedelta(hours=hours)), "a"
        )
    totals = await sched.sweeper.run()
    assert totals.requests["expired"] == 3
    assert await queued_requests(sessions) == []
    async with sessions() as session:
        rows = (await session.scalars(select(HighlightRow).order_by(HighlightRow.user_id))).all()
        queue = [
            (
                r.regen_queued_at,
                r.regen_first_change_at,
                r.regen_priority,
                r.regen_queued_reason,
                r.regen_queued_trigger,
                r.regen_unseen,
                r.regen_request_id,
            )
            for r in rows
        ]
    assert queue == [
        (T0, r.stale_after, Priority.EXPIRED, "expired", "sweep", 0, None) for r in rows
    ]
    await step(sessions, clock, sched.policy)
    requests = await queued_requests(sessions)
    assert [r["user_id"] for r in requests] == [1, 3, 2]  # expired longest ago first
    assert {(r["reason"], r["trigger"], r["priority"]) for r in requests} == {
        ("expired", "sweep", 4)
    }


async def test_a_result_while_queued_keeps_one_request_and_the_fence(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    sched = scheduled(settle=5 * S, max_wait=60 * S)
    await seed(sched.store, range(1, 2))
    await sched.store.regenerate(1, actor="ops")  # queued, due at once
    await step(sessions, clock, sched.policy)
    (first,) = await queued_requests(sessions)
    await sched.pipeline.process(C, [comment("late", 1, later(1))])  # a mark after the request
    row = await sched.store.get(1)
    assert row is not None and row.regen_request_id == first["event_id"]  # coalesced
    clock.now += 10 * S
    assert (await step(sessions, clock, sched.policy)).count == 0  # still one pending request


async def test_queue_state_and_report_show_place_due_time_and_oldest_wait(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    from worker.services.report import gather

    sched = scheduled(settle=5 * S, max_wait=60 * S, rate_per_min=60, burst=1)
    await seed(sched.store, range(1, 4))
    await sched.pipeline.process(C, [comment("a", 1, later(1))])
    clock.now += 2 * S
    await sched.pipeline.process(C, [comment("b", 2, later(1), "deleted")])
    await sched.store.mark_stale(3, "manual")
    async with sessions() as session:
        rows = {r.user_id: r for r in (await session.scalars(select(HighlightRow))).all()}
        states = {
            u: await scheduler.queue_state(session, r, clock.now, sched.policy)
            for u, r in rows.items()
        }
        figures = await gather(session, clock.now + 8 * S)
    assert {u: s["place"] for u, s in states.items() if s} == {2: 1, 1: 2, 3: 3}
    assert states[1] is not None and states[1]["due_at"] == (T0 + 5 * S).isoformat()
    assert states[2] is not None and states[2]["priority_name"] == "privacy"
    assert states[3] is not None and states[3]["due_at"] == (T0 + 2 * S).isoformat()
    assert figures["regen_queue_depth"] == 3
    assert figures["regen_queue_oldest_wait_s"] == 10.0


async def test_two_policies_side_by_side_in_one_process(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    scheduled: Callable[..., Scheduled],
) -> None:
    """The policy belongs to the objects, not to the process: a settling store and pipeline
    queue while immediate ones beside them request at once, on the same database."""
    from worker.services.documents import profile_document

    settling, immediate = scheduled(settle=5 * S, max_wait=60 * S), scheduled()
    await seed(settling.store, range(1, 5))
    await settling.pipeline.process(C, [comment("a", 1, later(1))])
    await immediate.pipeline.process(C, [comment("b", 2, later(1))])
    await settling.store.mark_stale(3, "manual")
    await immediate.store.mark_stale(4, "manual")
    assert sorted(r["user_id"] for r in await queued_requests(sessions)) == [2, 4]
    async with sessions() as session:
        rows = (await session.scalars(select(HighlightRow).order_by(HighlightRow.user_id))).all()
        assert [r.user_id for r in rows if r.regen_queued_at is not None] == [1, 3]
    shown = await profile_document(settling.store, 1)  # due as the store's policy says
    assert shown["regen_queue"]["due_at"] == (T0 + 5 * S).isoformat()


async def test_a_runtime_hands_its_policy_to_every_object(database_url: str) -> None:
    settling = Runtime(Settings(database_url=database_url, regen_settle=5 * S, regen_rate=60))
    immediate = Runtime(Settings(database_url=database_url, regen_settle=0 * S, regen_rate=0))
    try:
        assert not settling.regen_policy.immediate and immediate.regen_policy.immediate
        for rt in (settling, immediate):
            objects = (rt.store, rt.pipeline, rt.sweeper)
            assert {o.policy for o in objects} == {rt.regen_policy}
        assert HighlightStore(settling.sessions).policy == IMMEDIATE  # nothing to inherit
    finally:
        await settling.close()
        await immediate.close()


async def test_an_immediate_worker_still_releases_what_a_scheduled_cli_queued(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A CLI (or a worker) configured with a scheduler queues; a worker without one must
    not leave that request waiting forever."""
    cli_store = HighlightStore(sessions, policy=RegenPolicy(rate_per_min=60, burst=3))
    await cli_store.upsert_auto(result(1, generated_at=T0), "s1")
    await cli_store.mark_stale(1, "manual", actor="cli")
    assert await queued_requests(sessions) == []  # queued on the row, not yet requested
    immediate = Runtime(Settings(database_url=database_url, regen_settle=0 * S, regen_rate=0))
    try:
        assert await immediate.schedule_once() == 1
    finally:
        await immediate.close()
    (request,) = await relay(sessions)
    assert request["user_id"] == 1 and request["trigger"] == "operator:cli"
