"""The scheduler with real workers, a real broker and PostgreSQL: settling a burst, and a
budget shared by two workers, in priority order, with one of them killed midway.

Scaled to fit CI: 30 comments over 6 s with settle 2 s (the issue says 30 over 20 s with
settle 5 s); the issue's 1,000 users at 1,200 a minute (not 120: 50 s a run instead of 8
minutes) with bursts of 20.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.budget import assert_within_budget
from tests.helpers.cli import wb
from tests.helpers.database import until_queued
from tests.helpers.factories import comment_doc, result
from tests.helpers.live import Kafka, WorkerProcess, eventually, http_get
from worker.domain.values import UpsertMeta
from worker.services.store import HighlightStore

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]

COMMENTS = "signal.comments"
REGEN = "profile.highlights.regen-requests"
HOUR_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
# The budget test's rate: 1,200/min on CI; WB_TEST_BUDGET_PER_MIN=120 runs the issue's
# exact scale (about 8 minutes a broker).
BUDGET_RATE_PER_S = float(os.environ.get("WB_TEST_BUDGET_PER_MIN", "1200")) / 60
BUDGET_BURST = 20
SCHEDULED = {"WB_SWEEP_INTERVAL": "30", "WB_GAUGE_INTERVAL": "1", "WB_REGEN_TICK": "100ms"}


@pytest.fixture
def spawn_defaults() -> dict[str, str]:
    """Every worker of this module: sweeps, gauges and scheduler steps often."""
    return SCHEDULED


async def seed(store: HighlightStore, users: range) -> None:
    for user in users:
        await store.upsert_auto(result(user, generated_at=HOUR_AGO), f"seed-{user}")


async def published(kafka: Kafka, users: range) -> list[tuple[float, dict[str, Any]]]:
    """(broker timestamp in s, payload) of the requests for ``users``, in timestamp order."""
    records = await kafka.read_all(REGEN)
    found = [(r.timestamp / 1000, json.loads(r.value)) for r in records]
    return sorted(((t, p) for t, p in found if p["user_id"] in users), key=lambda tp: tp[0])


# After the settled request, a quiet window: nothing queued for the user, nothing left in
# the outbox, and the schedulers still stepping (each step writes the budget row's
# ``refilled_at``) for this long after the request went out, without another.
QUIET_S = 3.0
LEFT = (
    "SELECT (SELECT count(*) FROM user_profile_highlights WHERE regen_queued_at IS NOT NULL "
    "AND user_id = :id) + (SELECT count(*) FROM outbox)"
)
LAST_STEP = "SELECT refilled_at FROM regen_budget WHERE id = 1"


async def quiet_after(sessions: async_sessionmaker[AsyncSession], user: int, until: float) -> None:
    """Until nothing for ``user`` is queued or unpublished and a scheduler step ran at or
    after ``until`` (epoch seconds): the time is the window's, the steps bound it (a worker
    that stalled would not make it pass)."""

    async def nothing_left() -> bool:
        async with sessions() as session:
            return await session.scalar(text(LEFT), {"id": user}) == 0

    async def stepped() -> bool:
        async with sessions() as session:
            last: datetime | None = await session.scalar(text(LAST_STEP))
        return last is not None and last.timestamp() >= until

    await eventually(nothing_left, timeout=30, what="the queue and the outbox to empty")
    await eventually(stepped, timeout=max(until - time.time(), 0) + 30, what="scheduler steps")


@pytest.fixture
async def settle_worker(spawn: Callable[..., WorkerProcess]) -> AsyncIterator[WorkerProcess]:
    env = {
        "WB_REGEN_SETTLE": "2s",
        "WB_REGEN_MAX_WAIT": "30s",
        "WB_REGEN_RATE": "6000",
        "WB_SERVE_STALE_FOR": "1h",
    }
    proc = spawn(env, "wbsched-settle")
    await proc.wait_ready()
    yield proc


async def test_a_burst_of_comments_gives_one_request_after_it_settles(
    settle_worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = 7001
    await seed(live_store, range(user, user + 1))
    last_sent = 0.0
    for i in range(30):  # 30 comments over 6 s
        if i:
            await asyncio.sleep(6 / 29)
        last_sent = time.time()  # the comment's time: it cannot be applied before
        doc = comment_doc(f"burst-{i}", user, datetime.now(UTC), "created", "req-burst")
        await kafka.send(COMMENTS, doc, key=str(user))

    async def one() -> list[tuple[float, dict[str, Any]]]:
        return await published(kafka, range(user, user + 1))

    (at, request), *_ = await eventually(one, timeout=30, what="the settled request")
    await quiet_after(live_sessions, user, at + QUIET_S)  # nothing else may follow
    assert len(await one()) == 1
    assert at >= last_sent + 2 - 0.05, f"published {at - last_sent:.2f}s after the last"
    assert request["priority"] == 2 and request["generation"] == 30


@pytest.mark.timeout(300 + 2 * 1000 / BUDGET_RATE_PER_S)
async def test_budget_shared_by_two_workers_in_priority_order_one_killed_midway(
    spawn: Callable[..., WorkerProcess],
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    users = range(8001, 9001)
    rate, burst = BUDGET_RATE_PER_S, BUDGET_BURST
    drain_s = len(users) / rate  # the budget's time for them all
    env = {"WB_REGEN_SETTLE": "0", "WB_REGEN_RATE": f"{rate * 60:g}", "WB_REGEN_BURST": str(burst)}
    first, second = spawn(env, "wbsched-budget"), spawn(env, "wbsched-budget")
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    await seed(live_store, users)
    # Paused (the operator's command) until every request is queued: then the order of
    # release is the queue's, not the order the comments happened to be applied in.
    await live_store.pause_regeneration(datetime.now(UTC) + timedelta(hours=1), actor="test")
    deleted = set(users[::5])  # 200 deletions (privacy) among 800 new comments
    docs = [
        comment_doc(f"b-{u}", u, datetime.now(UTC), "deleted" if u in deleted else "created", "r")
        for u in users
    ]
    for start in range(0, len(docs), 100):
        await asyncio.gather(
            *(kafka.send(COMMENTS, d, key=str(d["user_id"])) for d in docs[start : start + 100])
        )

    await until_queued(live_sessions, users, 60, "every user's request queued")
    await live_store.pause_regeneration(None, actor="test")

    async def half() -> bool:
        return len(await published(kafka, users)) >= len(users) // 2

    await eventually(half, timeout=60 + drain_s, what="half the requests published")
    first.kill()  # SIGKILL midway: its open transaction rolls back, nothing is lost

    async def everyone() -> list[tuple[float, dict[str, Any]]] | None:
        found = await published(kafka, users)
        return found if {p["user_id"] for _, p in found} == set(users) else None

    found = await eventually(everyone, timeout=60 + drain_s, what="every user's request")
    firsts: dict[int, tuple[float, int]] = {}
    for t, p in found:
        firsts.setdefault(p["user_id"], (t, p["priority"]))
    times = sorted(t for t, _ in firsts.values())
    assert_within_budget(times, rate, burst)  # never faster, across both workers
    assert times[-1] - times[0] >= (len(users) - burst) / rate - 1
    last_privacy = max(t for t, prio in firsts.values() if prio == 0)
    first_comment = min(t for t, prio in firsts.values() if prio == 2)
    assert {prio for _, prio in firsts.values()} == {0, 2}
    assert last_privacy <= first_comment + 0.5  # deletions went first


async def test_a_deleted_comments_quote_is_gone_from_the_served_answer_at_once(
    settle_worker: WorkerProcess, kafka: Kafka, live_store: HighlightStore
) -> None:
    user = 7101
    quotes = ["Always explains the why.", {"text": "Fixed my build.", "comment_id": "c-7101"}]
    await live_store.upsert_auto(result(user, generated_at=HOUR_AGO, quotes=quotes), "q")
    url = f"{settle_worker.url}/profiles/{user}/highlight"
    status, doc = await asyncio.to_thread(http_get, url)
    assert status == 200 and isinstance(doc, dict) and len(doc["quotes"]) == 2
    deletion = {
        **comment_doc("del-7101", user, datetime.now(UTC), "deleted", "r"),
        "comment_id": "c-7101",
    }
    sent = time.monotonic()
    await kafka.send(COMMENTS, deletion, key=str(user))

    async def withheld() -> dict[str, Any] | None:
        _, served = await asyncio.to_thread(http_get, url)
        assert isinstance(served, dict)
        return served if served.get("quotes") == ["Always explains the why."] else None

    served = await eventually(withheld, timeout=10, what="the quote withheld")
    took = time.monotonic() - sent
    assert took < 2.0, f"withheld after {took:.2f}s"
    assert served["status"] == "stale" and served["display"] == "highlight"  # before any result
    assert await published(kafka, range(user, user + 1)) == []  # still settling: no request yet


async def test_a_steady_trickle_cannot_postpone_past_max_wait(
    spawn: Callable[..., WorkerProcess], kafka: Kafka, live_store: HighlightStore
) -> None:
    env = {"WB_REGEN_SETTLE": "2s", "WB_REGEN_MAX_WAIT": "4s", "WB_REGEN_RATE": "6000"}
    proc = spawn(env, "wbsched-maxwait")
    await proc.wait_ready()
    user = 7201
    await seed(live_store, range(user, user + 1))
    first_sent = time.time()
    for i in range(10):  # a comment every second: never 2 s of quiet
        doc = comment_doc(f"trickle-{i}", user, datetime.now(UTC), "created", "req-trickle")
        await kafka.send(COMMENTS, doc, key=str(user))
        await asyncio.sleep(1)
    last_sent = time.time()

    async def one() -> list[tuple[float, dict[str, Any]]]:
        return await published(kafka, range(user, user + 1))

    (at, _), *rest = await eventually(one, timeout=30, what="the request")
    assert first_sent + 4 - 0.05 <= at <= first_sent + 4 + 2.0, f"{at - first_sent:.2f}s"
    assert at < last_sent - 3  # went out while the trickle went on
    assert rest == []  # the later comments coalesced into the pending request


async def test_a_pause_holds_a_worker_that_requests_at_once(
    spawn: Callable[..., WorkerProcess],
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
    live_db_url: str,
) -> None:
    """The issue's finding: with ``WB_REGEN_SETTLE=0 WB_REGEN_RATE=0``, ``pause-regeneration
    --for 10m`` said "paused" and the next 20 stale marks were all published. Now they
    queue while the pause holds and go out, once each, when it ends."""
    immediate = {"WB_REGEN_SETTLE": "0", "WB_REGEN_RATE": "0"}
    proc = spawn(immediate, "wbsched-pause")
    await proc.wait_ready()
    users = range(7301, 7321)
    await seed(live_store, users)
    env = {**immediate, "WB_DATABASE_URL": live_db_url}
    paused = await asyncio.to_thread(
        wb, "signal-profile", "pause-regeneration", "--for", "10m", env=env
    )
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("regeneration paused until ")
    try:
        for user in users:
            doc = comment_doc(f"pause-{user}", user, datetime.now(UTC), "created", "req-pause")
            await kafka.send(COMMENTS, doc, key=str(user))

        await until_queued(live_sessions, users, 30, "the 20 stale marks queued, not requested")
        assert await published(kafka, users) == []
    finally:
        resumed = await asyncio.to_thread(wb, "signal-profile", "resume-regeneration", env=env)
        assert resumed.returncode == 0, resumed.stderr

    async def everyone() -> list[tuple[float, dict[str, Any]]] | None:
        found = await published(kafka, users)
        return found if {p["user_id"] for _, p in found} == set(users) else None

    found = await eventually(everyone, timeout=30, what="every request after the pause")
    assert sorted(p["user_id"] for _, p in found) == list(users)  # one each


async def test_a_comment_created_and_deleted_while_settling_publishes_nothing(
    settle_worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
    live_db_url: str,
) -> None:
    """The inputs end as the stored highlight covers them: the due request is skipped (one
    skip counted), the row is fresh again with its ``stale_after``, nothing is published,
    and ``wb signal-profile show`` says when."""
    user = 7401
    covered = UpsertMeta(input_version=0)  # a generator that echoes: coverage known
    await live_store.upsert_auto(result(user, generated_at=HOUR_AGO), "snap-7401", covered)
    before = await live_store.get(user)
    assert before is not None and before.covered_fingerprint == before.input_fingerprint
    for kind, eid in (("created", "cd-1"), ("deleted", "cd-2")):
        doc = {**comment_doc(eid, user, datetime.now(UTC), kind, "r"), "comment_id": "c-7401"}
        await kafka.send(COMMENTS, doc, key=str(user))

    async def skipped() -> bool:
        row = await live_store.get(user)
        return row is not None and row.regen_skipped_at is not None

    await eventually(skipped, timeout=30, what="the settled request skipped")
    row = await live_store.get(user)
    assert row is not None and not row.is_stale and row.input_version == 2
    assert row.stale_after == before.stale_after and row.covered_version == 2
    assert row.input_fingerprint == before.input_fingerprint
    assert row.regen_skipped_at is not None
    await quiet_after(live_sessions, user, row.regen_skipped_at.timestamp() + QUIET_S)
    assert await published(kafka, range(user, user + 1)) == []
    _, body = await asyncio.to_thread(http_get, f"{settle_worker.url}/metrics")
    assert 'wb_regen_skipped_total{reason="unchanged"} 1.0' in str(body)
    shown = wb("signal-profile", "show", str(user), env={"WB_DATABASE_URL": live_db_url})
    stored = json.loads(shown.stdout)["highlight"]
    assert datetime.fromisoformat(stored["regen_skipped_at"]) == row.regen_skipped_at
    assert stored["input_fingerprint"] == stored["covered_fingerprint"]
