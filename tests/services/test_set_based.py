"""Results and request mappings set-based on PostgreSQL: a fixed number of statements per
batch, and the same effects as the ORM path (which SQLite runs) on the same events."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.database import truncate_all, waiting_on_lock
from tests.helpers.factories import C, G, R, comment, generated, later, queued_messages, raw
from tests.helpers.statements import StatementsSent
from worker.domain.batch import RawMessage
from worker.domain.cost import Spend
from worker.domain.scheduling import IMMEDIATE, RegenPolicy
from worker.domain.snapshot import element, signed
from worker.domain.wire import InputStream
from worker.services import outbox
from worker.services.pipeline import Pipeline
from worker.services.spend import spend_since
from worker.services.store import HighlightStore
from worker.storage.models import (
    CommentInputRow,
    FreshTransitionRow,
    HighlightRow,
    ParkedCommentRow,
    ProcessedEventRow,
    SignalActivityRow,
    SignalRequestRow,
)


def _postgres_only(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    engine: AsyncEngine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("the set-based paths are PostgreSQL's")
    return engine


def mapping(eid: str, req: str, user: int, minutes: int = 0) -> RawMessage:
    doc = {"event_id": eid, "request_id": req, "user_id": user}
    return raw({**doc, "occurred_at": later(minutes).isoformat()})


async def test_a_result_batch_costs_the_same_statements_at_any_size(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """Half the results create rows, half answer pending requests (some answered by an
    older generation: asked again), with superseded, conflicting and duplicate ones."""
    engine = _postgres_only(sessions)
    clock.now = T0 + timedelta(hours=2)
    pipeline = Pipeline(sessions, clock=clock)
    for user in range(1, 1001):
        await store.upsert_auto(store_result(user), f"snap-{user}")
        await store.mark_stale(user, "new_comment")  # a pending request at generation 1
    counts = []
    for size, first in ((10, 0), (600, 10)):
        batch = []
        for i in range(first, first + size):
            user, kind = 1 + i, i % 6
            if kind in (0, 1, 2):  # a row to create
                batch.append(generated(f"g{i}", 5000 + i, later(5), "new"))
            elif kind == 3:  # answers the pending request, reporting its usage
                usage = {"input_tokens": i, "output_tokens": 7, "cost_usd": 0.01}
                batch.append(generated(f"g{i}", user, later(5), "b", generation=1, usage=usage))
            elif kind == 4:  # superseded (older than the stored one)
                batch.append(generated(f"g{i}", user, later(-5), "old"))
            else:  # a conflict, then a duplicate of the first event
                batch.append(generated(f"g{i}", user, later(5), "x", base_snapshot_hash="no"))
        batch.append(batch[0])
        with StatementsSent(engine) as statements:
            res = await pipeline.process(G, batch)
        assert sum(res.outcomes.values()) == size + 1
        counts.append(len(statements.seen))
    assert counts == [3, 3]  # claim; create and lock; every write as one statement


async def test_a_mapping_batch_costs_the_same_statements_at_any_size(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """Each mapping releases its parked comments (two per request, some for users with
    no row yet); the statement count does not grow with the batch."""
    engine = _postgres_only(sessions)
    clock.now = T0 + timedelta(hours=2)
    pipeline = Pipeline(sessions, clock=clock)
    for user in range(1, 301):
        await store.upsert_auto(store_result(user), f"snap-{user}")
    counts, released = [], []
    for size, first in ((5, 0), (400, 5)):
        parked = [
            comment(f"c{i}-{k}", None, later(1 + k), req=f"req-{i}")
            for i in range(first, first + size)
            for k in range(2)
        ]
        res = await pipeline.process(C, parked)
        assert res.outcomes == {("comments", "parked"): 2 * size}
        batch = [mapping(f"m{i}", f"req-{i}", 1 + i % 350) for i in range(first, first + size)]
        with StatementsSent(engine) as statements:
            res = await pipeline.process(R, batch)
        counts.append(len(statements.seen))
        released.append(res.outcomes[("comments", "unparked")])
    # claim + locks; map, unpark, create and lock; the input states; writes
    assert counts == [4, 4]
    assert released == [10, 800]
    async with sessions() as session:
        assert (await session.scalars(select(ParkedCommentRow))).all() == []


def store_result(user: int) -> Any:
    from tests.helpers.factories import result

    return result(user)


async def test_a_request_mapped_twice_in_one_batch_releases_to_its_first_mapping(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    clock.now = T0 + timedelta(hours=2)
    pipeline = Pipeline(sessions, clock=clock)
    await pipeline.process(C, [comment("c1", None, later(1), req="q")])
    res = await pipeline.process(R, [mapping("m1", "q", 7, 1), mapping("m2", "q", 8, 2)])
    assert res.outcomes[("comments", "missing_requested")] == 1
    async with sessions() as session:
        users = (await session.scalars(select(HighlightRow.user_id))).all()
        mapped = await session.scalar(select(SignalRequestRow.user_id))
    assert users == [7] and mapped == 8


# -- differential: the set-based path against the ORM path on the same events ----------


def _events(seed: int) -> Iterator[tuple[InputStream, list[RawMessage]]]:
    """Batches of random events about few users and requests, so that rules collide:
    stale marks, coalescing, parked comments, re-mapped requests, results that create rows,
    answer (by request id or generation) or fall behind the fence, superseded, conflicting
    and duplicate results, and redeliveries."""
    rnd = random.Random(seed)
    ids = itertools.count()
    sent: list[tuple[InputStream, RawMessage]] = []
    for _ in range(14):
        stream = rnd.choice([C, C, R, G, G])
        batch = [_one(rnd, stream, next(ids)) for _ in range(rnd.randint(1, 8))]
        redelivered = [m for s, m in sent if s is stream]
        if redelivered and rnd.random() < 0.3:
            batch.append(rnd.choice(redelivered))
        sent.extend((stream, m) for m in batch)
        yield stream, batch


def _one(rnd: random.Random, stream: InputStream, n: int) -> RawMessage:
    user, at = rnd.randint(1, 5), rnd.randint(0, 40)
    req = f"q{rnd.randint(1, 4)}"
    if stream is C:
        kind = rnd.choice(["created", "created", "edited", "deleted"])
        cid = f"k{rnd.randint(1, 6)}"  # few comments: edits and deletions meet their own
        return comment(f"c{n}", rnd.choice([user, None]), later(at), kind, req=req, cid=cid)
    if stream is R:
        return mapping(f"m{n}", req, user, at)
    extra: dict[str, Any] = {}
    if rnd.random() < 0.4:
        extra["generation"] = rnd.randint(0, 4)
    if rnd.random() < 0.3:
        extra["base_snapshot_hash"] = f"s{rnd.randint(0, 3)}"
    if rnd.random() < 0.3:
        extra["regen_request_id"] = f"{rnd.randint(0, 12):032x}"
    if rnd.random() < 0.5:
        extra["input_version"] = rnd.randint(0, 5)
    if rnd.random() < 0.5:
        extra["usage"] = {"input_tokens": rnd.randint(0, 9), "cost_usd": rnd.randint(0, 9) / 8}
    return generated(f"g{n}", user, later(at), f"s{rnd.randint(0, 3)}", **extra)


async def _run(
    sessions: async_sessionmaker[AsyncSession], seed: int, set_based: bool, policy: RegenPolicy
) -> dict[str, Any]:
    engine: AsyncEngine = sessions.kw["bind"]
    await truncate_all(engine)
    counter = itertools.count()
    patch = pytest.MonkeyPatch()
    patch.setattr(outbox, "new_request_id", lambda: f"{next(counter):032x}")
    clock = FakeClock(now=T0 + timedelta(hours=1), step=timedelta(seconds=1))
    pipeline = Pipeline(sessions, clock=clock, set_based=set_based, policy=policy)
    batches = []
    try:
        for stream, batch in _events(seed):
            res = await pipeline.process(stream, batch)
            batches.append(
                (
                    dict(res.outcomes),
                    dict(res.regen_requests),
                    sorted(res.turnaround_s),
                    [d.reason.value for d in res.dead_letters],
                    sorted(res.spend.by_key.items()),
                )
            )
    finally:
        patch.undo()
    return {"batches": batches, **(await _state(sessions))}


async def _state(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    async with sessions() as session:

        async def rows(model: Any, *order: Any) -> list[dict[str, Any]]:
            found = (await session.scalars(select(model).order_by(*order))).all()
            return [
                {c.key: getattr(r, c.key) for c in model.__table__.columns if c.key != "id"}
                for r in found
            ]

        state = {
            "highlights": await rows(HighlightRow, HighlightRow.user_id),
            "parked": [
                (p["event_id"], p["request_id"])
                for p in await rows(ParkedCommentRow, ParkedCommentRow.event_id)
            ],
            "mappings": await rows(SignalRequestRow, SignalRequestRow.request_id),
            "fresh": await rows(
                FreshTransitionRow, FreshTransitionRow.user_id, FreshTransitionRow.id
            ),
            "activity": await rows(SignalActivityRow, SignalActivityRow.user_id),
            "inputs": await rows(
                CommentInputRow, CommentInputRow.user_id, CommentInputRow.comment_id
            ),
            "processed": await rows(
                ProcessedEventRow, ProcessedEventRow.stream, ProcessedEventRow.event_id
            ),
            # Booked by the database's minute: the two runs may straddle one, so by key.
            "spend": sorted((await spend_since(session, T0 - timedelta(days=3650))).by_key.items()),
        }
    queued = [(m.key, m.payload()) for m in await queued_messages(sessions)]
    return {**state, "outbox": queued}


def _merged(batches: list[Any]) -> Spend:
    """The spend the batches reported (what the counters add), merged."""
    merged = Spend()
    for *_, booked in batches:
        merged.merge(Spend(dict(booked)))
    return merged


# Under a settle time or a budget a stale mark queues its request on the row (settling,
# priority, unseen comments: the rows compared) instead of writing it to the outbox.
SETTLE = RegenPolicy(settle=timedelta(seconds=5), max_wait=timedelta(seconds=30))
BUDGET = RegenPolicy(rate_per_min=60, burst=2)
POLICIES = {"immediate": IMMEDIATE, "settle": SETTLE, "budget": BUDGET}
RUNS = [("immediate", seed) for seed in range(12)] + [
    (name, seed) for name in ("settle", "budget") for seed in range(6)
]


@pytest.mark.parametrize(("policy", "seed"), RUNS)
async def test_the_set_based_path_agrees_with_the_orm_path(
    sessions: async_sessionmaker[AsyncSession], policy: str, seed: int
) -> None:
    """Same events, same clock, same request ids, same policy: the same outcomes and the
    same rows (queued requests included), map, parked comments, activity, processed events
    and outbox. On SQLite both runs take the ORM path (the test then checks that it is
    deterministic)."""
    orm = await _run(sessions, seed, False, POLICIES[policy])
    assert await _run(sessions, seed, True, POLICIES[policy]) == orm
    requested = sum(sum(batch[1].values()) for batch in orm["batches"])
    assert requested > 0  # the events asked for regenerations ...
    assert (orm["outbox"] == []) is (policy != "immediate")  # ... queued unless immediate
    assert orm["spend"] and orm["spend"] == sorted(_merged(orm["batches"]).by_key.items())
    # Each row's snapshot is its stored live input set's: the fingerprint is the digest of
    # the live comments, the version moved once per change (at most one per event).
    live: dict[int, int] = {}
    for held in orm["inputs"]:
        if not held["deleted"]:
            add = element(held["comment_id"], held["version_event"])
            live[held["user_id"]] = signed(live.get(held["user_id"], 0) + add)
    for row in orm["highlights"]:
        assert row["input_fingerprint"] == live.get(row["user_id"], 0)
        assert row["input_version"] <= sum(1 for i in orm["processed"] if i["stream"] == "comments")
    async with sessions() as session:
        assert await session.scalar(text("SELECT 1")) == 1


# -- the park/map race, closed for whole batches ------------------------------------------


LOCK_Q = "SELECT pg_advisory_xact_lock(hashtextextended('q', 7))"


async def test_a_comment_batch_waits_for_a_mapping_in_flight_and_then_resolves(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """A mapping transaction holds the request's lock and has saved the mapping, not yet
    committed: a comment batch must not park the comment (nobody would release it)."""
    import asyncio

    from tests.helpers.live import eventually

    engine = _postgres_only(sessions)
    clock.now = T0 + timedelta(hours=2)
    pipeline = Pipeline(sessions, clock=clock)
    await store.upsert_auto(store_result(4), "snap-4")
    async with engine.connect() as other:
        await other.execute(text(LOCK_Q))
        await other.execute(
            text(
                "INSERT INTO signal_requests (request_id, user_id, occurred_at, created_at) "
                "VALUES ('q', 4, now(), now())"
            )
        )
        batch = asyncio.create_task(
            pipeline.process(
                C, [comment("c1", None, later(1), req="q"), comment("c2", 4, later(1))]
            )
        )
        await eventually(
            lambda: waiting_on_lock(engine, wait_event="advisory"), timeout=10, what="lock wait"
        )
        await other.commit()
    res = await asyncio.wait_for(batch, timeout=10)
    assert res.outcomes == {("comments", "stale_marked"): 1, ("comments", "coalesced"): 1}


async def test_a_mapping_batch_waits_for_a_comment_being_parked_and_releases_it(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """A comment transaction holds the request's lock and has parked its comment, not yet
    committed: the mapping batch waits, then releases that comment exactly once."""
    import asyncio

    from tests.helpers.live import eventually

    engine = _postgres_only(sessions)
    clock.now = T0 + timedelta(hours=2)
    pipeline = Pipeline(sessions, clock=clock)
    await store.upsert_auto(store_result(4), "snap-4")
    doc = {
        "event_id": "c1",
        "type": "comment.created",
        "comment_id": "c-c1",
        "request_id": "q",
        "occurred_at": later(1).isoformat(),
    }
    async with engine.connect() as other:
        await other.execute(text(LOCK_Q))
        await other.execute(
            text(
                "INSERT INTO parked_comments (event_id, request_id, payload, parked_at) "
                "VALUES ('c1', 'q', CAST(:doc AS jsonb), now())"
            ),
            {"doc": json.dumps(doc)},
        )
        batch = asyncio.create_task(pipeline.process(R, [mapping("m1", "q", 4)]))
        await eventually(
            lambda: waiting_on_lock(engine, wait_event="advisory"), timeout=10, what="lock wait"
        )
        await other.commit()
    res = await asyncio.wait_for(batch, timeout=10)
    assert res.outcomes[("comments", "unparked")] == 1
    assert res.outcomes[("comments", "stale_marked")] == 1
    again = await pipeline.process(R, [mapping("m2", "q", 4, 1)])
    assert ("comments", "unparked") not in again.outcomes


async def test_a_released_comments_row_created_concurrently_is_locked_on_its_own(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction inserts the user's row while the mapping batch creates it: the
    batch's insert waits, does nothing once that commits, and the row is in neither half
    of the statement's answer (its snapshot predates it): locked on its own, then the
    released comment is applied to it."""
    import asyncio

    from tests.helpers.live import eventually
    from worker.services import locking, mappings

    engine = _postgres_only(sessions)
    clock.now = T0 + timedelta(hours=2)
    pipeline = Pipeline(sessions, clock=clock)
    await pipeline.process(C, [comment("c1", None, later(1), req="q")])
    late: list[set[int]] = []

    async def lock_states(session: AsyncSession, users: set[int], now: Any) -> Any:
        late.append(users)
        return await original(session, users, now)

    original = locking.lock_states
    monkeypatch.setattr(mappings, "lock_states", lock_states)
    async with engine.connect() as other:
        await other.execute(
            text(
                "INSERT INTO user_profile_highlights (user_id, created_at, updated_at) "
                "VALUES (4, now(), now())"
            )
        )
        batch = asyncio.create_task(pipeline.process(R, [mapping("m1", "q", 4)]))
        await eventually(
            lambda: waiting_on_lock(engine, wait_event="transactionid"), timeout=10, what="row wait"
        )
        await other.commit()
    res = await asyncio.wait_for(batch, timeout=10)
    assert late == [{4}]
    assert res.outcomes[("comments", "unparked")] == 1
    assert res.outcomes[("comments", "missing_requested")] == 1
    async with sessions() as session:
        row = await session.get(HighlightRow, 4)
    assert row is not None and row.is_stale
