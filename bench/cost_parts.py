"""Issue 26's parts: the scheduler step with both budgets on a long queue, and the relay
publishing to two topics.

``budget``: 100,000 queued requests (one in ten by comments, the rest by expiry and
reseed, every row with reported usage), then scheduler steps with the request budget only
(the reference: the step before token budgets and lanes) and with both budgets and the
batch lane's own, alternately in the same run; each step is rolled back, so every step
sees the same queue. ``relay``: 100,000 requests in the outbox, half in each lane, published
by a running worker to one topic (the reference) and to two
(``WB_TOPIC_REGEN_REQUESTS_BATCH``): messages a second from the rows' commit until the
outbox is empty.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from bench.harness import Bench, Row, log, ok
from bench.streams import Worker
from worker.domain.scheduling import RegenPolicy
from worker.services import scheduler
from worker.storage.database import session_factory

QUEUED = 100_000
STEPS = 40  # per policy, alternating
REQUEST_ONLY = RegenPolicy(rate_per_min=6000, burst=500)
BOTH = RegenPolicy(
    rate_per_min=6000,
    burst=500,
    tokens_per_min=600_000,
    batch_rate_per_min=6000,
    batch_tokens_per_min=600_000,
)
QUEUE = (
    "UPDATE user_profile_highlights SET is_stale = true, stale_reason = 'expired', "
    "stale_since = now(), regen_queued_at = now(), regen_first_change_at = now() - interval "
    "'5 minutes', regen_last_change_at = now() - interval '5 minutes', "
    "regen_priority = CASE WHEN user_id % 10 = 0 THEN 2 WHEN user_id % 10 = 1 THEN 5 ELSE 4 END, "
    "regen_queued_reason = CASE WHEN user_id % 10 = 0 THEN 'new_comment' ELSE 'expired' END, "
    "usage_input_tokens = 900 + user_id % 500, usage_output_tokens = 200, "
    "usage_cost_usd = 0.004 WHERE user_id <= :n"
)


async def _step_ms(b: Bench, policy: RegenPolicy) -> float:
    """One step's time in ms, rolled back (the queue stays as seeded)."""
    async with session_factory(b.engine)() as session:
        started = time.perf_counter()
        done = await scheduler.publish_due(session, datetime.now(UTC), policy)
        await session.flush()  # what its commit would write
        elapsed = time.perf_counter() - started
        await session.rollback()
    if done.count == 0:
        raise RuntimeError("the step published nothing")
    return elapsed * 1000


async def budget_part(b: Bench) -> list[Row]:
    """The step's cost at 100,000 queued, request budget alone against both budgets."""
    await b.seed_highlights(QUEUED)
    await b.sql(QUEUE, n=QUEUED)
    await b.sql("TRUNCATE regen_budget")
    await b.vacuum()
    times: dict[str, list[float]] = {"request": [], "both": []}
    for _ in range(STEPS):
        times["request"].append(await _step_ms(b, REQUEST_ONLY))
        times["both"].append(await _step_ms(b, BOTH))
    before, after = (statistics.median(times[k]) for k in ("request", "both"))
    log(f"budget: step medians {before:.1f} ms (requests) / {after:.1f} ms (both)")
    return [
        (
            f"scheduler step at {QUEUED:,} queued, {REQUEST_ONLY.burst} a step: "
            "request + token budgets, two lanes",
            f"{after:.1f} ms (median of {STEPS})",
            f"{before:.1f} ms (request budget only)",
            "<= 2x",
            f"{after / before:.2f}x {ok(after <= 2 * before)}",
        )
    ]


OUTBOX_ROWS = (
    "INSERT INTO outbox (topic, messages, message_count, created_at) "
    "SELECT CASE WHEN c % 2 = 0 THEN 'regen-requests' ELSE 'regen-requests-batch' END, "
    "string_agg(g || E'\\t' || json_build_object('event_id', 'r' || g, 'user_id', g, "
    "'lane', CASE WHEN c % 2 = 0 THEN 'interactive' ELSE 'batch' END)::text, E'\\n' "
    "ORDER BY g), count(*), now() "
    "FROM generate_series(1, CAST(:n AS integer)) g, LATERAL (SELECT g / 500 AS c) chunk "
    "GROUP BY c ORDER BY c"
)


async def _relay_rate(b: Bench, messages: int, env: dict[str, str]) -> float:
    worker = Worker(b, {"WB_LOG_LEVEL": "warning", **env}).start()
    try:
        await worker.proc.wait_ready(timeout=120)
        await b.sql("TRUNCATE outbox")
        started = time.monotonic()
        await b.sql(OUTBOX_ROWS, n=messages)
        await worker.until("SELECT count(*) = 0 FROM outbox", 1)
        return messages / (time.monotonic() - started)
    finally:
        worker.stop()


async def relay_part(b: Bench, messages: int) -> list[Row]:
    """The relay's throughput to two topics against one, same messages, same run."""
    await b.create_topic("bench.regen.batch")
    one = await _relay_rate(b, messages, {})
    two = await _relay_rate(b, messages, {"WB_TOPIC_REGEN_REQUESTS_BATCH": "bench.regen.batch"})
    log(f"relay: {one:,.0f}/s to one topic, {two:,.0f}/s to two")
    row = (
        f"relay: {messages:,} requests, half in the batch lane, to two topics",
        f"{two:,.0f}/s",
        f"{one:,.0f}/s (one topic)",
        ">= 0.8x",
        f"{two / one:.2f}x {ok(two >= 0.8 * one)}",
    )
    return [row]
