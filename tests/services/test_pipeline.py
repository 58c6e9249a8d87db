"""The pipeline's rules, on SQLite and PostgreSQL, without Kafka (the agents are adapters)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.database import waiting_on_lock
from tests.helpers.factories import (
    C,
    G,
    R,
    comment,
    generated,
    later,
    queued_requests,
    raw,
    result,
)
from tests.helpers.live import eventually
from tests.helpers.statements import StatementsSent
from worker.domain.wire import InputStream
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore
from worker.storage.models import HighlightRow, ParkedCommentRow, SignalActivityRow


@pytest.fixture
def pipeline(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> Pipeline:
    return Pipeline(sessions, clock=clock)


async def test_comment_after_generated_at_marks_stale_once(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    res = await pipeline.process(
        C, [comment("e1", 1, later(1)), comment("e2", 1, later(2), "edited")]
    )
    assert res.outcomes == {("comments", "stale_marked"): 1, ("comments", "coalesced"): 1}
    row = await store.get(1)
    assert row is not None and row.is_stale and row.stale_reason == "comment_edited"
    assert row.generation == 2
    reqs = await queued_requests(sessions)
    assert [(r["reason"], r["generation"], r["user_id"]) for r in reqs] == [("new_comment", 1, 1)]
    assert reqs[0]["trigger"] == "comment:e1"


async def test_comment_at_or_before_generated_at_is_already_included(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1, generated_at=later(10)), "snap-a")
    res = await pipeline.process(
        C, [comment("e1", 1, later(10)), comment("e2", 1, later(3), "edited")]
    )
    assert res.outcomes == {("comments", "already_included"): 2}
    row = await store.get(1)
    assert row is not None and not row.is_stale and row.generation == 0
    assert await queued_requests(sessions) == []


async def test_deleted_comment_always_marks_stale(
    pipeline: Pipeline, store: HighlightStore
) -> None:
    await store.upsert_auto(result(1, generated_at=later(10)), "snap-a")
    res = await pipeline.process(C, [comment("e1", 1, later(1), "deleted")])
    assert res.outcomes == {("comments", "stale_marked"): 1}
    row = await store.get(1)
    assert row is not None and row.stale_reason == "comment_deleted"


async def test_first_comment_for_unknown_user_requests_missing(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    res = await pipeline.process(C, [comment("e1", 9, later(1)), comment("e2", 9, later(2))])
    assert res.outcomes == {("comments", "missing_requested"): 1, ("comments", "coalesced"): 1}
    assert [r["reason"] for r in await queued_requests(sessions)] == ["missing"]
    row = await store.get(9)
    assert row is not None and not row.has_content and row.is_stale


async def test_redelivery_changes_nothing(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    batch = [comment("e1", 1, later(1)), comment("e1", 1, later(1))]
    first = await pipeline.process(C, batch)
    before = await store.get(1)
    second = await pipeline.process(C, batch)
    assert first.outcomes == {("comments", "stale_marked"): 1, ("comments", "duplicate"): 1}
    assert second.outcomes == {("comments", "duplicate"): 2}
    assert await store.get(1) == before
    assert len(await queued_requests(sessions)) == 1
    async with sessions() as session:
        activity = await session.get(SignalActivityRow, 1)
    assert activity is not None and activity.comment_count == 1


async def test_override_lock_goes_stale_without_request_until_cleared(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    await store.set_manual_override(1, "Curated", actor="ops")
    res = await pipeline.process(C, [comment("e1", 1, later(1))])
    assert res.outcomes == {("comments", "override_locked"): 1}
    assert await queued_requests(sessions) == []
    await store.clear_manual_override(1, actor="ops")
    assert [r["reason"] for r in await queued_requests(sessions)] == ["new_comment"]


async def test_unmapped_comment_is_parked_then_applied_when_mapping_arrives(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(4), "snap-a")
    parked = await pipeline.process(C, [comment("e1", None, later(1), req="req-9")])
    assert parked.outcomes == {("comments", "parked"): 1}
    assert (await store.get(4)).is_stale is False  # type: ignore[union-attr]
    mapped = await pipeline.process(
        R,
        [
            raw(
                {
                    "event_id": "m1",
                    "request_id": "req-9",
                    "user_id": 4,
                    "occurred_at": later(0).isoformat(),
                }
            )
        ],
    )
    assert mapped.outcomes == {
        ("requests", "mapped"): 1,
        ("comments", "stale_marked"): 1,
        ("comments", "unparked"): 1,
    }
    assert (await store.get(4)).is_stale is True  # type: ignore[union-attr]
    async with sessions() as session:
        assert (await session.scalars(select(ParkedCommentRow))).all() == []
    # Later comments on the same request resolve through the map directly.
    direct = await pipeline.process(C, [comment("e2", None, later(2), req="req-9")])
    assert direct.outcomes == {("comments", "coalesced"): 1}


async def test_result_for_current_generation_freshens_and_measures_turnaround(
    pipeline: Pipeline, store: HighlightStore, clock: FakeClock
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    await pipeline.process(C, [comment("e1", 1, later(1))])
    clock.advance(timedelta(seconds=30))
    res = await pipeline.process(
        G, [generated("g1", 1, later(2), "snap-b", generation=1, base_snapshot_hash="snap-a")]
    )
    assert res.outcomes == {("generated", "applied"): 1}
    assert res.turnaround_s == [30.0]
    row = await store.get(1)
    assert row is not None and not row.is_stale and row.snapshot_hash == "snap-b"


async def test_answered_but_outdated_result_is_requested_again(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    await pipeline.process(C, [comment("e1", 1, later(1))])  # request at generation 1
    await pipeline.process(C, [comment("e2", 1, later(2))])  # coalesced, generation 2
    res = await pipeline.process(G, [generated("g1", 1, later(3), "snap-b", generation=1)])
    assert res.outcomes == {("generated", "applied_still_stale"): 1}
    reqs = await queued_requests(sessions)
    assert [(r["reason"], r["generation"]) for r in reqs] == [
        ("new_comment", 1),
        ("new_comment", 2),
    ]
    row = await store.get(1)
    assert row is not None and row.is_stale and row.regen_request_id == reqs[1]["event_id"]


async def test_conflicting_and_superseded_results_are_counted_not_applied(
    pipeline: Pipeline, store: HighlightStore, clock: FakeClock
) -> None:
    await store.upsert_auto(result(1, generated_at=later(5)), "snap-a")
    clock.now = later(10)  # received after they were generated (or clamped to receipt)
    res = await pipeline.process(
        G,
        [
            generated("g1", 1, later(1), "old"),
            generated("g2", 1, later(6), "snap-x", base_snapshot_hash="not-a"),
        ],
    )
    assert res.outcomes == {("generated", "superseded"): 1, ("generated", "conflict"): 1}
    row = await store.get(1)
    assert row is not None and row.snapshot_hash == "snap-a"


@pytest.mark.parametrize(
    ("stream", "value", "reason"),
    [
        (C, b"not json", "not_json"),
        (C, b"\xff\xfe", "not_utf8"),
        (
            C,
            b'{"event_id": "x", "type": "comment.liked", "comment_id": "c", "request_id": "r",'
            b' "occurred_at": "2026-01-01T00:00:00Z"}',
            "invalid",
        ),
        (
            C,
            b'{"event_id": "x", "type": "comment.created", "comment_id": "c", "request_id": "r",'
            b' "occurred_at": "2026-01-01T00:00:00"}',
            "bad_timestamp",
        ),
        (
            R,
            b'{"event_id": "x", "request_id": "r", "user_id": -4,'
            b' "occurred_at": "2026-01-01T00:00:00Z"}',
            "invalid",
        ),
        (G, b'{"event_id": "x"}', "invalid"),
        (
            G,
            json.dumps(
                {
                    "event_id": "nul",
                    "user_id": 1,
                    "bio_text": "a\u0000b",
                    "proof_points": [],
                    "quotes": [],
                    "source_group": "g",
                    "snapshot_hash": "s",
                    "llm_model": "m",
                    "generated_at": "2026-01-01T12:00:00Z",
                }
            ).encode(),
            "invalid",
        ),
    ],
)
async def test_bad_input_becomes_a_dead_letter_and_the_rest_goes_on(
    pipeline: Pipeline, store: HighlightStore, stream: InputStream, value: bytes, reason: str
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    good = (
        comment("ok", 1, later(1))
        if stream is C
        else raw(
            {"event_id": "ok", "request_id": "r", "user_id": 1, "occurred_at": later(1).isoformat()}
        )
        if stream is R
        else generated("ok", 1, later(1), "snap-b")
    )
    res = await pipeline.process(stream, [raw(value), good])
    assert [d.reason.value for d in res.dead_letters] == [reason]
    assert res.dead_letters[0].detail
    assert res.outcomes[(stream.value, "dead_lettered")] == 1
    assert sum(n for (s, o), n in res.outcomes.items() if o != "dead_lettered") == 1


async def test_timestamps_from_the_future_are_refused(pipeline: Pipeline, clock: FakeClock) -> None:
    res = await pipeline.process(C, [comment("e1", 1, T0 + timedelta(days=2))])
    assert [d.reason.value for d in res.dead_letters] == ["bad_timestamp"]


@pytest.mark.postgres
async def test_a_poisonous_event_is_isolated_and_the_rest_of_its_batch_applied(
    pg_url: str,
) -> None:
    """A failure that is not the database's (a trigger that refuses one user: fault
    injection in the real database) dead-letters that event alone; the batch's other
    events are applied one by one."""
    from sqlalchemy import text

    from tests.helpers.database import truncate_all
    from worker.storage import migrate
    from worker.storage.database import create_engine, session_factory

    engine = create_engine(pg_url)
    await migrate.upgrade(engine)
    await truncate_all(engine)
    sessions = session_factory(engine)
    store, pipeline = HighlightStore(sessions), Pipeline(sessions, clock=FakeClock())
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION wb_test_poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.user_id = 666 THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; "
                "END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER wb_test_poison BEFORE INSERT OR UPDATE ON user_profile_highlights "
                "FOR EACH ROW EXECUTE FUNCTION wb_test_poison()"
            )
        )
    try:
        for user in (1, 2):
            await store.upsert_auto(result(user), f"s{user}")
        poison = comment("p", 666, later(1))
        res = await pipeline.process(
            C, [comment("a", 1, later(1)), poison, comment("b", 2, later(1))]
        )
        stale = [(await store.get(u)).is_stale for u in (1, 2)]  # type: ignore[union-attr]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER wb_test_poison ON user_profile_highlights"))
            await conn.execute(text("DROP FUNCTION wb_test_poison()"))
        await truncate_all(engine)
        await engine.dispose()
    assert [(d.message, d.reason.value) for d in res.dead_letters] == [(poison, "internal_error")]
    assert "poisoned row" in res.dead_letters[0].detail
    assert res.outcomes[("comments", "stale_marked")] == 2
    assert stale == [True, True]


async def test_a_comment_batch_on_postgresql_costs_the_same_statements_at_any_size(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Set-based: the statement count of a batch does not grow with its events (a mix of
    stale marks, coalesced marks, already-included comments and unknown users), and is
    three: each round trip waits for the worker's event loop."""
    engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("the set-based comment path is PostgreSQL's")
    for user in range(1, 301):
        await store.upsert_auto(result(user), f"snap-{user}")
    counts = []
    for size, first in ((10, 0), (600, 10)):
        batch = [
            comment(f"s{first + i}", 1 + (first + i) % 400, later(1 + i % 3)) for i in range(size)
        ]
        with StatementsSent(engine) as statements:
            res = await pipeline.process(C, batch)
        assert sum(res.outcomes.values()) == size
        counts.append(len(statements.seen))
    # claim; create and lock, with the input states as of the statement's snapshot (read
    # again only for users whose input_version moved meanwhile: none here); every write
    assert counts == [3, 3]
    async with sessions() as session:
        stale = await session.scalar(
            select(func.count()).select_from(HighlightRow).where(HighlightRow.is_stale)
        )
    assert stale == 400  # 300 existing marked, 100 unknown users created and asked for


async def test_more_deletions_than_comments_never_count_below_zero(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A batch where one user's deletions outnumber comments (a first activity row must be
    clamped at 0) beside a user whose count rises, and a later comment counting from 0."""
    await store.upsert_auto(result(5), "snap-5")
    await store.upsert_auto(result(6), "snap-6")
    batch = [
        comment("d1", 5, later(1), "deleted"),
        comment("d2", 5, later(2), "deleted"),
        comment("c1", 5, later(3)),
        comment("c2", 6, later(1)),
        comment("c3", 6, later(2)),
    ]
    await pipeline.process(C, batch)
    await pipeline.process(C, [comment("c4", 5, later(4))])
    async with sessions() as session:
        counts = {
            a.user_id: (a.comment_count, a.last_comment_id)
            for a in (await session.scalars(select(SignalActivityRow))).all()
        }
    assert counts == {5: (1, "c-c4"), 6: (2, "c-c3")}


async def test_a_row_another_transaction_creates_meanwhile_is_locked_too(
    pipeline: Pipeline, store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Creating and locking is one statement; a row a concurrent transaction inserts (not
    yet committed when the statement starts) is in neither of its results and must be
    locked on its own, not lost."""
    engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("the set-based comment path is PostgreSQL's")
    async with engine.connect() as other:
        await other.execute(
            text(
                "INSERT INTO user_profile_highlights (user_id, created_at, updated_at) "
                "VALUES (777, now(), now())"
            )
        )
        batch = asyncio.create_task(pipeline.process(C, [comment("late", 777, later(1))]))

        await eventually(
            lambda: waiting_on_lock(engine, query_like="WITH created AS%"),
            timeout=10,
            what="the batch to wait for row 777",
        )
        await other.commit()
    res = await asyncio.wait_for(batch, timeout=10)
    assert res.dead_letters == []
    assert res.outcomes == {("comments", "missing_requested"): 1}
    row = await store.get(777)
    assert row is not None and row.is_stale and row.regen_request_id is not None
