"""What regeneration costs, with real workers, a real broker and PostgreSQL: a token budget
shared by two workers held on the topic's timestamps, the batch lane on its own topic
while a 10,000-row expiry wave leaves a comment's request on time, and the daily spend cap
that lets only a deletion's request out.

Scaled to fit CI: 36,000 tokens a minute (not the issue's 6,000) with every user last
using 1,200: thirty a minute, a burst of thirty, 40 users in about 20 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.budget import assert_within_budget
from tests.helpers.database import until_queued
from tests.helpers.factories import comment_doc, generated_doc, result
from tests.helpers.live import Kafka, WorkerProcess, eventually, http_get
from worker.domain.cost import Usage
from worker.domain.values import UpsertMeta
from worker.services.store import HighlightStore

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]

COMMENTS, GENERATED = "signal.comments", "profile.highlights.generated"
REGEN = "profile.highlights.regen-requests"
BATCH = "profile.highlights.regen-requests.batch"
HOUR_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
TOKENS_PER_MIN, USED = 36_000, 1_200


@pytest.fixture
def spawn_defaults() -> dict[str, str]:
    return {"WB_SWEEP_INTERVAL": "1", "WB_GAUGE_INTERVAL": "1", "WB_REGEN_TICK": "100ms"}


async def requests_on(kafka: Kafka, topic: str, users: set[int]) -> list[tuple[float, Any]]:
    """(broker timestamp in s, payload) of the requests for ``users``, by timestamp."""
    found = [(r.timestamp / 1000, json.loads(r.value)) for r in await kafka.read_all(topic)]
    return sorted(((t, p) for t, p in found if p["user_id"] in users), key=lambda tp: tp[0])


@pytest.mark.timeout(240)
async def test_a_token_budget_shared_by_two_workers_holds_on_the_topic(
    spawn: Callable[[dict[str, str], str], WorkerProcess],
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    users = range(9101, 9141)
    env = {
        "WB_REGEN_SETTLE": "0",
        "WB_REGEN_RATE": "6000",  # the request budget never bites here: tokens do
        "WB_REGEN_TOKENS_PER_MIN": str(TOKENS_PER_MIN),
    }
    first, second = spawn(env, "wbcost-tokens"), spawn(env, "wbcost-tokens")
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    for user in users:  # each last used 1,200 tokens
        meta = UpsertMeta(usage=Usage(1000, 200, 0.01))
        await live_store.upsert_auto(result(user, generated_at=HOUR_AGO), f"t{user}", meta)
    await live_store.pause_regeneration(datetime.now(UTC) + timedelta(hours=1), actor="test")
    for user in users:
        doc = comment_doc(f"tok-{user}", user, datetime.now(UTC), "created", "r")
        await kafka.send(COMMENTS, doc, key=str(user))

    await until_queued(live_sessions, users, 60, "every request queued")
    await live_store.pause_regeneration(None, actor="test")

    async def everyone() -> list[tuple[float, Any]] | None:
        found = await requests_on(kafka, REGEN, set(users))
        return found if {p["user_id"] for _, p in found} == set(users) else None

    found = await eventually(everyone, timeout=120, what="every request published")
    firsts: dict[int, float] = {}
    for at, payload in found:
        firsts.setdefault(payload["user_id"], at)
    times = sorted(firsts.values())
    rate, burst = TOKENS_PER_MIN / USED / 60, TOKENS_PER_MIN // USED
    # A request goes while the bucket is above zero: one more than a minute's worth.
    assert_within_budget(times, rate, burst + 1)
    assert times[-1] - times[0] >= (len(users) - burst - 1) / rate - 1
    async with live_sessions() as session:
        charged = await session.scalars(
            text(
                "SELECT DISTINCT regen_token_estimate FROM user_profile_highlights "
                "WHERE user_id = ANY(:ids)"
            ),
            {"ids": list(users)},
        )
        assert set(charged.all()) == {USED}


WAVE = range(200_001, 210_001)
SEED_WAVE = text(
    "INSERT INTO user_profile_highlights (user_id, bio_text, proof_points_json, quotes_json, "
    "source_group, snapshot_hash, llm_model, generated_at, stale_after, manual_override, "
    "is_stale, generation, regen_attempts, created_at, updated_at) "
    "SELECT g, 'b', '[]', '[]', 'g', 's', 'm', now() - interval '2 days', "
    "now() - interval '1 hour', false, false, 0, 0, now(), now() "
    "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) g"
)


@pytest.mark.timeout(240)
async def test_the_batch_lane_on_its_own_topic_leaves_a_comment_on_time(
    spawn: Callable[[dict[str, str], str], WorkerProcess],
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """10,000 expired rows: their requests go only to the batch topic, each with its lane
    and ``respond_by``, within the batch lane's own budget; a comment meanwhile gets its
    request on the request topic as soon as it has settled."""
    env = {
        "WB_TOPIC_REGEN_REQUESTS_BATCH": BATCH,
        "WB_REGEN_SETTLE": "1s",
        "WB_REGEN_RATE": "600",
        "WB_REGEN_BATCH_RATE": "600",
    }
    user = 9201
    await live_store.upsert_auto(result(user, generated_at=HOUR_AGO), "lane")
    async with live_sessions.begin() as session:
        await session.execute(SEED_WAVE, {"first": WAVE[0], "last": WAVE[-1]})
    proc = spawn(env, "wbcost-lanes")
    await proc.wait_ready()

    async def wave_started() -> list[tuple[float, Any]]:
        return await requests_on(kafka, BATCH, set(WAVE))

    expiries = await eventually(wave_started, timeout=60, what="the expiry wave on its topic")
    sent = time.time()
    await kafka.send(COMMENTS, comment_doc("lane-c", user, datetime.now(UTC), "created", "r"))

    async def comment_request() -> list[tuple[float, Any]]:
        return await requests_on(kafka, REGEN, {user})

    (at, request), *_ = await eventually(comment_request, timeout=30, what="the comment's")
    # Its settle (1 s) and a few steps: 1.1-1.6 s alone, 2.7 s once in CI with four test
    # processes on two cores (2026-12-06, the previous main alike); starved behind the
    # wave it would wait minutes (10,000 at 600 a minute).
    assert at - sent <= 1 + 3.0, f"the comment's request {at - sent:.2f}s after it was sent"
    assert request["lane"] == "interactive" and "respond_by" not in request
    expiries = await requests_on(kafka, BATCH, set(WAVE))
    assert len(expiries) >= 100
    for published_at, payload in expiries:
        assert payload["lane"] == "batch" and payload["reason"] == "expired"
        deadline = datetime.fromisoformat(payload["respond_by"]).timestamp() - published_at
        assert timedelta(hours=23).total_seconds() < deadline <= timedelta(hours=24).total_seconds()
    assert await requests_on(kafka, REGEN, set(WAVE)) == []  # none in the interactive topic


@pytest.mark.timeout(180)
async def test_at_the_daily_cap_only_a_deletions_request_goes_out(
    spawn: Callable[[dict[str, str], str], WorkerProcess],
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    env = {"WB_REGEN_SETTLE": "0", "WB_REGEN_RATE": "0", "WB_REGEN_MAX_USD_PER_DAY": "1"}
    async with live_sessions.begin() as session:  # not the lane test's wave, still queued
        await session.execute(
            text("DELETE FROM user_profile_highlights WHERE user_id >= :w"), {"w": WAVE[0]}
        )
        await session.execute(text("DELETE FROM outbox"))
    proc = spawn(env, "wbcost-cap")
    await proc.wait_ready()
    commented, deleted, spender = 9301, 9302, 9303
    for user in (commented, deleted):
        await live_store.upsert_auto(result(user, generated_at=HOUR_AGO), f"cap{user}")
    costly = generated_doc("cap-g", spender, datetime.now(UTC), "x", usage={"cost_usd": 2.5})
    await kafka.send(GENERATED, costly, key=str(spender))

    async def capped() -> bool:
        async with live_sessions() as session:
            until = await session.scalar(text("SELECT capped_until FROM regen_budget"))
        return until is not None

    # A new group's first fetches, the result and a step: 5-8 s alone, 28-37 s in CI with
    # four test processes on two cores (the same at 37555dc alone: 7.8 s on Tansu).
    await eventually(capped, timeout=60, what="the day's spend at the cap")
    _, metrics = await asyncio.to_thread(http_get, f"{proc.url}/metrics")
    assert isinstance(metrics, str)
    assert 'wb_regen_cost_usd_total{lane="interactive",reason="unrequested"} 2.5' in metrics
    for eid, user, kind in (("cap-c", commented, "created"), ("cap-d", deleted, "deleted")):
        await kafka.send(COMMENTS, comment_doc(eid, user, datetime.now(UTC), kind, "r"))

    async def the_deletions() -> list[tuple[float, Any]]:
        return await requests_on(kafka, REGEN, {deleted})

    (at, request), *_ = await eventually(the_deletions, timeout=30, what="the deletion's")
    assert request["priority"] == 0 and request["lane"] == "interactive"

    async def held_after(seconds: float) -> bool:
        """The comment's request is still queued, and steps ran ``seconds`` past ``at``."""
        async with live_sessions() as session:
            row = await session.execute(
                text(
                    "SELECT regen_queued_at IS NOT NULL, (SELECT refilled_at FROM regen_budget "
                    "WHERE id = 1) FROM user_profile_highlights WHERE user_id = :id"
                ),
                {"id": commented},
            )
            queued, stepped = row.one()
        return bool(queued) and stepped.timestamp() >= at + seconds

    await eventually(lambda: held_after(2.0), timeout=30, what="steps after the deletion's")
    assert await requests_on(kafka, REGEN, {commented}) == []  # waits for the day to turn
