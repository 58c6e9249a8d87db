"""The lean reference: the comment stream's essential work on the same stack, nothing else.

Issue 28: the no-op Faust agent stopped being the bar once the worker took whole fetches;
the bar is what this machine can do for this job. This is that job written as plainly as
it can be: aiokafka ``getmany`` (at most 500 events) -> one transaction of set-based
statements on asyncpg -> commit the offsets. The statements write what the worker writes
for a ``comment.created`` (the bench produces only those):

1. claim the event ids in ``processed_events`` (the worker's dedup table and key; the
   outcome is stored at once, as the mapping stream does);
2. record the comment activity in ``signal_activity`` (count, latest comment);
3. create the users' missing rows and mark them stale with a generation bump per comment
   (``missing`` without a highlight, ``new_comment`` when the comment is newer than it), a
   request id for each user with no pending or queued request;
4. queue one request per newly asked user in the outbox, one row per batch in the relay's
   ``key<TAB>json`` format (3 and 4 are one statement: 4 reads 3's ``RETURNING``).

No retries, metrics, scheduler, dead letters, parking or validation beyond ``json.loads``:
the reference is the floor of the work, not a second worker. Its requests go straight to
the outbox (the worker's scheduler holds them for ``WB_REGEN_SETTLE``). The comment-newer
test reads the highlight without a lock (nothing else writes ``generated_at`` in the bench).

Run as a child process (``python -m bench.lean``, environment as ``noop_agent``'s plus
``BENCH_GROUP``, ``BENCH_DATABASE_URL`` and ``BENCH_FETCH_WAIT_MS``, the fetch's max wait:
``IDLE_FETCH_WAIT_MS`` unless the latency part gives the worker's busy wait): prints its CPU
seconds from the first batch to the last as one JSON line; the parent takes the rate from
``processed_events`` exactly as for the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from tests.helpers.postgres import asyncpg_dsn
from worker.domain.scheduling import Priority
from worker.storage.pgarray import literal

BATCH = 500
IDLE_FETCH_WAIT_MS = 100  # the worker's default WB_CONSUMER_FETCH_WAIT

CLAIM = """
INSERT INTO processed_events (stream, event_id, outcome, processed_at)
SELECT 'comments', e, 'stale_marked', CAST($2 AS timestamptz)
FROM unnest(CAST($1::text AS text[])) AS e
ON CONFLICT (stream, event_id) DO NOTHING RETURNING event_id"""

ACTIVITY = """
INSERT INTO signal_activity AS s (user_id, comment_count, last_comment_at, last_comment_id,
                                  last_comment_type, updated_at)
SELECT u, count(*), max(at), (array_agg(id ORDER BY at DESC, id DESC))[1], 'comment.created',
       CAST($4 AS timestamptz)
FROM unnest(CAST($1::text AS bigint[]), CAST($2::text AS timestamptz[]),
            CAST($3::text AS text[])) AS v(u, at, id)
GROUP BY u ORDER BY u
ON CONFLICT (user_id) DO UPDATE SET
    comment_count = s.comment_count + excluded.comment_count,
    last_comment_id = CASE WHEN s.last_comment_at IS NULL
        OR excluded.last_comment_at > s.last_comment_at
        THEN excluded.last_comment_id ELSE s.last_comment_id END,
    last_comment_type = CASE WHEN s.last_comment_at IS NULL
        OR excluded.last_comment_at > s.last_comment_at
        THEN excluded.last_comment_type ELSE s.last_comment_type END,
    last_comment_at = greatest(s.last_comment_at, excluded.last_comment_at),
    updated_at = excluded.updated_at"""

# A user asks for a regeneration when it has none pending or queued and no override lock.
ASK = "h.regen_request_id IS NULL AND NOT h.manual_override AND h.regen_queued_at IS NULL"
# $1-$3 the claimed events' users, times, ids; $4 now; $5 the batch's request-id prefix (16
# hex digits, then the user id's: the sweep's scheme), which also tells a request just
# asked for (its id is this batch's) from one already pending.
MARK_AND_QUEUE = f"""
WITH v AS (
    SELECT e.u, count(*) AS n, (array_agg(e.id ORDER BY e.at, e.id))[1] AS first_id,
           $5 || lpad(to_hex(e.u), 16, '0') AS request_id, CAST($4 AS timestamptz) AS now
    FROM unnest(CAST($1::text AS bigint[]), CAST($2::text AS timestamptz[]),
                CAST($3::text AS text[])) AS e(u, at, id)
    LEFT JOIN user_profile_highlights h ON h.user_id = e.u
    WHERE h.generated_at IS NULL OR e.at > h.generated_at
    GROUP BY e.u
), marked AS (
    INSERT INTO user_profile_highlights AS h (user_id, is_stale, stale_since, stale_reason,
        generation, regen_request_id, regen_requested_at, regen_generation, regen_attempts,
        created_at, updated_at)
    SELECT u, true, now, 'missing', n, request_id, now, 1, 1, now, now FROM v ORDER BY u
    ON CONFLICT (user_id) DO UPDATE SET
        generation = h.generation + excluded.generation, is_stale = true,
        stale_since = CASE WHEN h.is_stale THEN h.stale_since ELSE excluded.stale_since END,
        stale_reason = CASE WHEN h.generated_at IS NULL THEN 'missing' ELSE 'new_comment' END,
        updated_at = excluded.updated_at,
        regen_request_id = CASE WHEN {ASK} THEN excluded.regen_request_id
            ELSE h.regen_request_id END,
        regen_requested_at = CASE WHEN {ASK} THEN excluded.regen_requested_at
            ELSE h.regen_requested_at END,
        regen_generation = CASE WHEN {ASK} THEN h.generation + 1 ELSE h.regen_generation END,
        regen_attempts = CASE WHEN {ASK} THEN 1 ELSE h.regen_attempts END
    RETURNING h.user_id, h.regen_generation, h.snapshot_hash, h.regen_request_id, h.stale_reason
), queued AS (
    INSERT INTO outbox (topic, messages, message_count, created_at)
    SELECT 'regen-requests', string_agg(format(
        E'%s\\t{{"event_id":"%s","user_id":%s,"reason":"%s","generation":%s,'
        '"snapshot_hash":%s,"requested_at":%s,"trigger":"comment:%s","priority":%s}}',
        m.user_id, m.regen_request_id, m.user_id, m.stale_reason, m.regen_generation,
        coalesce(to_json(m.snapshot_hash)::text, 'null'), to_json(v.now), v.first_id,
        CASE WHEN m.stale_reason = 'missing' THEN {int(Priority.MISSING)}
             ELSE {int(Priority.COMMENT)} END
    ), E'\\n'), count(*), min(v.now)
    FROM marked m JOIN v ON v.u = m.user_id AND m.regen_request_id = v.request_id
    HAVING count(*) > 0
)
SELECT count(*) FROM marked"""


async def apply(conn: asyncpg.Connection, docs: list[dict[str, Any]]) -> int:
    """One batch in one transaction; returns how many events it claimed."""
    now = datetime.now(UTC)
    ids = [d["event_id"] for d in docs]
    async with conn.transaction():
        claimed = {r[0] for r in await conn.fetch(CLAIM, literal("text", ids), now)}
        if len(claimed) < len(docs):
            docs = [d for d in docs if d["event_id"] in claimed]
        if docs:
            columns = (
                literal("bigint", [d["user_id"] for d in docs]),
                literal("text", [d["occurred_at"] for d in docs]),
                literal("text", [d["event_id"] for d in docs]),
            )
            await conn.execute(ACTIVITY, *columns, now)
            await conn.fetchval(MARK_AND_QUEUE, *columns, now, secrets.token_hex(8))
    return len(docs)


async def consume(
    broker: str, topic: str, group: str, db_url: str, expected: int, fetch_wait_ms: int
) -> float:
    """Consume ``expected`` events of ``topic`` in consumer group ``group``, each fetch held
    at most ``fetch_wait_ms`` by the broker; returns the CPU seconds from the first batch
    to the last."""
    _, kwargs = asyncpg_dsn(db_url)
    conn = await asyncpg.connect(**kwargs)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_wait_ms,
        session_timeout_ms=6000,  # and the bench's workers' group timings
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    seen, cpu = 0, 0.0
    try:
        while seen < expected:
            fetched = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            docs = [json.loads(r.value) for records in fetched.values() for r in records]
            if not docs:
                continue
            cpu = cpu or time.process_time()
            await apply(conn, docs)
            await consumer.commit()
            seen += len(docs)
        return time.process_time() - cpu
    finally:
        await consumer.stop()
        await conn.close()


def main() -> None:
    env = os.environ
    expected = int(env["BENCH_EXPECTED"])
    cpu = asyncio.run(
        consume(
            env["BENCH_BROKER"],
            env["BENCH_TOPIC"],
            env["BENCH_GROUP"],
            env["BENCH_DATABASE_URL"],
            expected,
            int(env.get("BENCH_FETCH_WAIT_MS", IDLE_FETCH_WAIT_MS)),
        )
    )
    print(json.dumps({"events": expected, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
