"""Input snapshots on SQLite and PostgreSQL: requests name them, results echoing a version
are judged by it, and a due request whose inputs the highlight covers is skipped."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers.clock import FakeClock
from tests.helpers.database import waiting_on_lock
from tests.helpers.factories import C, G, comment, generated, later, queued_requests, result
from tests.helpers.live import eventually
from worker.domain.scheduling import RegenPolicy
from worker.domain.snapshot import element, signed, wire
from worker.domain.wire import RegenRequestEvent
from worker.services import scheduler
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore
from worker.services.sweep import FreshnessScan
from worker.storage.models import HighlightRow

SETTLE = RegenPolicy(settle=timedelta(seconds=30), max_wait=timedelta(minutes=5))


async def _fresh(store: HighlightStore, user: int, pipeline: Pipeline, version: int = 0) -> None:
    """A fresh highlight that echoes ``version`` (its coverage is known)."""
    await pipeline.process(G, [generated(f"g{user}", user, later(0), "s0", input_version=version)])
    row = await store.get(user)
    assert row is not None and not row.is_stale and row.covered_version == version


async def test_requests_name_the_input_snapshot_and_a_result_behind_it_stays_stale(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    await _fresh(store, 1, pipeline)
    await pipeline.process(C, [comment("e1", 1, later(1), cid="k1")])
    first = (await queued_requests(sessions))[-1]
    assert RegenRequestEvent.model_validate(first).input_version == 1
    assert first["input_fingerprint"] == wire(signed(element("k1", "e1")))
    await pipeline.process(C, [comment("e2", 1, later(2), "edited", cid="k1")])  # coalesced
    # The answer to the first request covers version 1; a generator clock far ahead
    # changes nothing: version 2 is not covered.
    answer = generated(
        "g2", 1, later(600), "s1", input_version=1, regen_request_id=first["event_id"]
    )
    res = await pipeline.process(G, [answer])
    assert res.outcomes == {("generated", "applied_still_stale"): 1}
    row = await store.get(1)
    assert row is not None and row.is_stale and row.covered_version == 1
    follow = (await queued_requests(sessions))[-1]
    assert follow["event_id"] == row.regen_request_id != first["event_id"]
    assert follow["input_version"] == 2
    assert follow["input_fingerprint"] == wire(signed(element("k1", "e2")))
    # Its answer is newer by the inputs, though its generator's clock is behind the last.
    late = generated("g3", 1, later(3), "s2", input_version=2, regen_request_id=follow["event_id"])
    res = await pipeline.process(G, [late])
    assert res.outcomes == {("generated", "applied"): 1}
    row = await store.get(1)
    assert row is not None and not row.is_stale and row.snapshot_hash == "s2"
    assert (row.covered_version, row.covered_fingerprint) == (2, row.input_fingerprint)


async def test_a_fresh_row_judged_by_timestamps_becomes_stale_under_an_older_echo(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    clock.advance(timedelta(minutes=15))  # received after they happened (no skew clamp)
    pipeline = Pipeline(sessions, clock=clock)
    await store.upsert_auto(result(1, generated_at=later(10)), "s0")  # no echo: timestamps
    res = await pipeline.process(C, [comment("e1", 1, later(5), cid="k1")])
    assert res.outcomes == {("comments", "already_included"): 1}
    res = await pipeline.process(G, [generated("g1", 1, later(11), "s1", input_version=0)])
    assert res.outcomes == {("generated", "applied_still_stale"): 1}
    row = await store.get(1)
    assert row is not None and row.is_stale and row.regen_request_id is not None
    assert (await queued_requests(sessions))[-1]["input_version"] == 1


async def test_a_change_the_input_set_already_holds_changes_nothing(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    await _fresh(store, 1, pipeline)
    await pipeline.process(C, [comment("e2", 1, later(2), "edited", cid="k1")])
    row = await store.get(1)
    assert row is not None and row.input_version == 1
    older = [comment("e1", 1, later(1), cid="k1"), comment("e3", 1, later(1), "deleted", cid="k9")]
    res = await pipeline.process(C, older)
    # An older create changes nothing; a deletion of an unknown comment is a change.
    assert res.outcomes == {("comments", "unchanged_input"): 1, ("comments", "coalesced"): 1}
    after = await store.get(1)
    assert after is not None and after.input_version == 2
    assert after.input_fingerprint == row.input_fingerprint


async def test_a_comment_created_and_deleted_while_settling_buys_nothing(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    store = HighlightStore(sessions, clock=clock, policy=SETTLE)
    pipeline = Pipeline(sessions, clock=clock, policy=SETTLE)
    await _fresh(store, 1, pipeline)
    before = await store.get(1)
    assert before is not None
    await pipeline.process(C, [comment("e1", 1, later(1), cid="k1")])
    await pipeline.process(C, [comment("e2", 1, later(1), "deleted", cid="k1")])
    row = await store.get(1)
    assert row is not None and row.is_stale and row.input_version == 2
    clock.advance(timedelta(minutes=1))
    async with sessions.begin() as session:
        done = await scheduler.publish_due(session, clock.now, SETTLE)
    assert (done.count, done.skipped) == (0, 1)
    assert await queued_requests(sessions) == []
    row = await store.get(1)
    assert row is not None and not row.is_stale and row.regen_skipped_at == clock.now
    assert row.stale_after == before.stale_after and row.covered_version == 2


async def test_unchanged_requests_past_one_steps_skip_limit_are_skipped_not_published(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The skip query takes at most MAX_PER_STEP candidates; the step's own pick of due
    # rows, in queue order, may reach others: each is judged again before it goes out.
    monkeypatch.setattr(scheduler, "MAX_PER_STEP", 1)
    store = HighlightStore(sessions, clock=clock, policy=SETTLE)
    pipeline = Pipeline(sessions, clock=clock, policy=SETTLE)
    for user in (1, 2):
        await _fresh(store, user, pipeline)
        await pipeline.process(C, [comment(f"e{user}", user, later(1), cid=f"k{user}")])
        await pipeline.process(C, [comment(f"d{user}", user, later(1), "deleted", cid=f"k{user}")])
    await _fresh(store, 3, pipeline)
    await pipeline.process(C, [comment("e3", 3, later(1), cid="k3")])  # a live change
    clock.advance(timedelta(minutes=1))
    counts = []
    for _ in range(3):
        async with sessions.begin() as session:
            done = await scheduler.publish_due(session, clock.now, SETTLE)
        counts.append((done.count, done.skipped))
    assert sum(c for c, _ in counts) == 1 and sum(s for _, s in counts) == 2, counts
    assert [r["user_id"] for r in await queued_requests(sessions)] == [3]


async def test_expiry_operators_and_missing_highlights_are_never_skipped(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    store = HighlightStore(sessions, clock=clock, policy=SETTLE)
    pipeline = Pipeline(sessions, clock=clock, policy=SETTLE)
    for user in (1, 2):
        await _fresh(store, user, pipeline)
    await store.regenerate(1, actor="ops")  # inputs unchanged, but an operator asked
    await pipeline.process(C, [comment("e3", 3, later(1), cid="k1")])  # no highlight yet
    await pipeline.process(C, [comment("e4", 3, later(1), "deleted", cid="k1")])
    await pipeline.process(C, [comment("e5", 2, later(1), cid="k1")])
    await pipeline.process(C, [comment("e6", 2, later(1), "deleted", cid="k1")])
    clock.advance(timedelta(days=8))  # and user 2's highlight expired meanwhile
    async with sessions.begin() as session:
        done = await scheduler.publish_due(session, clock.now, SETTLE)
    assert (done.count, done.skipped) == (3, 0)
    assert sorted(r["user_id"] for r in await queued_requests(sessions)) == [1, 2, 3]


async def test_an_operators_request_outlives_a_result_of_the_current_inputs(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """The result answers the comment's request with the current inputs, but the operator
    asked after it was made: its queued request still goes out."""
    store = HighlightStore(sessions, clock=clock, policy=SETTLE)
    pipeline = Pipeline(sessions, clock=clock, policy=SETTLE)
    await _fresh(store, 1, pipeline)
    await pipeline.process(C, [comment("e1", 1, later(1), cid="k1")])
    clock.advance(timedelta(minutes=1))
    async with sessions.begin() as session:
        assert (await scheduler.publish_due(session, clock.now, SETTLE)).count == 1
    request = (await queued_requests(sessions))[-1]
    await store.regenerate(1, actor="ops")
    answer = {"input_version": 1, "generation": request["generation"]}
    res = await pipeline.process(G, [generated("g2", 1, later(2), "s1", **answer)])
    assert res.outcomes == {("generated", "applied_still_stale"): 1}
    async with sessions.begin() as session:
        done = await scheduler.publish_due(session, clock.now, SETTLE)
    assert (done.count, done.skipped) == (1, 0)
    assert (await queued_requests(sessions))[-1]["reason"] == "manual"


async def test_the_scans_judge_a_highlight_of_known_coverage_by_its_inputs(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """A comment stamped after the highlight's ``generated_at`` but covered by it (the
    result echoed its version) is not news to ``freshness-scan``, run after run; one the
    highlight does not cover is, whatever its timestamp."""
    pipeline = Pipeline(sessions, clock=clock)
    await _fresh(store, 1, pipeline)
    await _fresh(store, 2, pipeline)
    for user in (1, 2):
        await pipeline.process(C, [comment(f"e{user}", user, later(30), cid="k1")])
    answer = generated("g9", 1, later(1), "s9", input_version=1)  # generated "before" it
    assert (await pipeline.process(G, [answer])).outcomes == {("generated", "applied"): 1}
    async with sessions.begin() as session:  # user 2's mark lost, as if by an old bug
        await session.execute(
            update(HighlightRow).where(HighlightRow.user_id == 2).values(is_stale=False)
        )
    scan = FreshnessScan(sessions, retry_after=timedelta(hours=1), clock=clock)
    for run in range(2):
        totals, _ = await scan.run(restart=True)
        assert totals.actions == ({"new_comment": 1} if run == 0 else {})
        assert not (await store.get(1)).is_stale  # type: ignore[union-attr]
    assert (await store.get(2)).is_stale  # type: ignore[union-attr]


# -- a concurrent batch's input changes, committed while this batch waits for the lock ------

# What a concurrent comment batch does for user 5 / 6 and comment k1 (created by e1).
_CONCURRENT_CREATE = (
    "INSERT INTO comment_inputs (user_id, comment_id, version_at, version_event, deleted) "
    "VALUES (:u, 'k1', CAST(:at AS timestamptz), 'e1', false)",
    "UPDATE user_profile_highlights SET input_version = input_version + 1, "
    "input_fingerprint = :fp, is_stale = true WHERE user_id = :u",
)


@pytest.mark.parametrize("row_exists", [True, False], ids=["locked", "created-meanwhile"])
async def test_a_batch_waiting_for_the_lock_reads_the_inputs_committed_meanwhile(
    store: HighlightStore,
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    row_exists: bool,
) -> None:
    """Another batch changed the user's inputs (created k1) and holds the row lock (or the
    row it just created): this batch's statement started before that commit, so what it
    read of comment_inputs then is stale. The deletion of k1 must take k1's element off."""
    engine: AsyncEngine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("the set-based comment path is PostgreSQL's")
    pipeline = Pipeline(sessions, clock=clock)
    user = 5 if row_exists else 6
    if row_exists:
        await _fresh(store, user, pipeline)
    params = {"u": user, "at": later(1), "fp": signed(element("k1", "e1"))}
    async with engine.connect() as other:
        if not row_exists:
            await other.execute(
                text(
                    "INSERT INTO user_profile_highlights (user_id, created_at, updated_at) "
                    "VALUES (:u, now(), now())"
                ),
                params,
            )
        else:
            await other.execute(text(f"{LOCK_ROW} FOR UPDATE"), params)
        for statement in _CONCURRENT_CREATE:
            await other.execute(text(statement), params)
        batch = asyncio.create_task(
            pipeline.process(C, [comment("d1", user, later(2), "deleted", cid="k1")])
        )
        await eventually(
            lambda: waiting_on_lock(engine, wait_event="transactionid"),
            timeout=10,
            what="lock wait",
        )
        await other.commit()
    await asyncio.wait_for(batch, timeout=10)
    row = await store.get(user)
    assert row is not None and (row.input_version, row.input_fingerprint) == (2, 0)


LOCK_ROW = "SELECT user_id FROM user_profile_highlights WHERE user_id = :u"
