"""The bench's shared harness: one run's data and broker (``Bench``), its clock and child
processes, and the figures' row format, for the parts in ``bench.ingest`` and
``bench.streams`` (``python -m bench`` is only the entry point that runs them).

Its own module so that every part and the entry point import one copy: importing
``bench.__main__`` under ``python -m bench`` loads a second module, with a second ``NOW``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text

from bench.brokers import BrokerAt
from bench.profile import IngestProfile
from tests.helpers.live import WorkerProcess
from worker.storage.database import create_engine

PARTITIONS = 4
NOW = datetime.now(UTC).replace(microsecond=0)
GENERATED_AT = NOW - timedelta(days=1)

Row = tuple[str, str, str, str, str]  # measure, measured, reference, target, ok
Message = tuple[str, str, dict[str, Any]]  # topic, key, value


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_comment(event_id: str, i: int, user: int, at: str) -> dict[str, Any]:
    """The bench's comment ``i`` (a creation) about ``user`` at ``at``: the ingest's and
    ``bench.write_plan``'s one shape."""
    return {
        "event_id": event_id,
        "type": "comment.created",
        "comment_id": f"c{i}",
        "request_id": f"r{i}",
        "user_id": user,
        "occurred_at": at,
    }


def ok(flag: bool) -> str:
    return "yes" if flag else "NO"


class Bench:
    def __init__(self, args: argparse.Namespace, broker: BrokerAt, db_url: str, logs: Path) -> None:
        self.args, self.broker, self.db_url, self.logs = args, broker, db_url, logs
        self.engine = create_engine(db_url, pool_size=4)
        self.noop_cpu_us = self.ingest_cpu_us = 0.0
        self.rows: list[tuple[str, str, str, str]] = []

    # --- setup -------------------------------------------------------------------------
    async def sql(self, statement: str, **params: Any) -> Any:
        async with self.engine.begin() as conn:
            return await conn.execute(text(statement), params)

    async def seed_highlights(self, users: int, expired_share: float = 0.0) -> None:
        await self.sql(
            "TRUNCATE user_profile_highlights, outbox, processed_events, "
            "signal_activity, parked_comments, signal_requests, comment_inputs, "
            "deleted_comments"
        )
        await self.sql(
            "INSERT INTO user_profile_highlights (user_id, bio_text, proof_points_json, "
            "quotes_json, source_group, snapshot_hash, llm_model, generated_at, stale_after, "
            "manual_override, is_stale, generation, regen_attempts, created_at, updated_at) "
            "SELECT g, 'bio', '[]', '[]', 'grp', 'snap-' || g, 'm', :gen, "
            "CASE WHEN random() < :share THEN CAST(:past AS timestamptz) "
            "ELSE CAST(:future AS timestamptz) END, false, false, 0, 0, :gen, :gen "
            "FROM generate_series(1, :users) g",
            gen=GENERATED_AT,
            share=expired_share,
            past=NOW - timedelta(hours=1),
            future=NOW + timedelta(days=30),
            users=users,
        )
        await self.sql("ANALYZE user_profile_highlights")

    async def reset_highlights(self) -> None:
        """Back to the seeded state: every row fresh with no inputs, nothing queued or
        requested, no processed events. The inputs too: the parts (and the brokers of one
        run) send comments of the same ids for the same users, which a row's input set
        that kept them would take as redelivered and skip (no stale mark, no request), so
        every part after the first measured a cheaper path than the first."""
        await self.sql(
            "TRUNCATE outbox, processed_events, signal_activity, comment_inputs, deleted_comments"
        )
        await self.sql(
            "UPDATE user_profile_highlights SET is_stale = false, stale_reason = NULL, "
            "stale_since = NULL, generation = 0, regen_request_id = NULL, "
            "regen_requested_at = NULL, regen_generation = NULL, regen_attempts = 0, "
            "regen_queued_at = NULL, regen_first_change_at = NULL, "
            "regen_last_change_at = NULL, regen_priority = NULL, regen_queued_reason = NULL, "
            "regen_queued_trigger = NULL, regen_unseen = 0, input_version = 0, "
            "input_fingerprint = 0, covered_version = NULL, covered_fingerprint = NULL, "
            "regen_skipped_at = NULL, regen_request_lane = NULL, regen_request_reason = NULL, "
            "regen_token_estimate = NULL, updated_at = generated_at "
            "WHERE is_stale OR regen_queued_at IS NOT NULL OR input_version <> 0 "
            "OR regen_skipped_at IS NOT NULL"
        )
        await self.vacuum()

    async def vacuum(self) -> None:
        """Each part starts from a steady table, not from the previous part's dead rows
        (else autovacuum competes with the next measurement), and after a checkpoint (else
        one measurement pays for writing out the pages the previous one dirtied)."""
        async with self.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text("VACUUM ANALYZE user_profile_highlights, processed_events"))
            await auto.execute(text("CHECKPOINT"))

    async def create_topic(self, name: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.address)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
        finally:
            await admin.close()

    async def produce_comments(self, topic: str, events: int, users: int) -> None:
        """``events`` comments newer than every highlight, over ``users`` random users."""
        await self.create_topic(topic)
        rng = random.Random(7)
        at = (NOW - timedelta(hours=1)).isoformat()

        def comments() -> Iterator[Message]:
            for i in range(events):
                user = rng.randint(1, users)
                doc = bench_comment(f"{topic}-{i}", i, user, at)
                yield topic, str(user), doc

        await self.produce(comments())

    async def produce(self, messages: Iterable[Message]) -> int:
        """Send ``messages`` (5,000 in flight at most) and return how many were sent."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.address, linger_ms=20, max_batch_size=256 * 1024, acks=1
        )
        await producer.start()
        sent = 0
        try:
            pending = []
            for topic, key, value in messages:
                pending.append(producer.send(topic, json.dumps(value).encode(), key=key.encode()))
                sent += 1
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)
            await producer.flush()
        finally:
            await producer.stop()
        return sent

    # --- measurements ------------------------------------------------------------------
    async def raw_consume(self, topic: str, events: int) -> float:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.broker.address,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=f"raw-{uuid.uuid4().hex[:6]}",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            # Wait for the assignment and the first fetch, then time everything after it.
            first_batch = await consumer.getmany(timeout_ms=10_000, max_records=1)
            seen = sum(len(r) for r in first_batch.values())
            started = time.monotonic()
            while seen < events:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                seen += sum(len(r) for r in batch.values())
            return (events - 1) / (time.monotonic() - started)
        finally:
            await consumer.stop()

    def noop_faust(self, topic: str, events: int) -> float:
        env = {
            **os.environ,
            "BENCH_TOPIC": topic,
            "BENCH_EXPECTED": str(events),
            "BENCH_BROKER": self.broker.address,
            "BENCH_APP_ID": f"noop-{uuid.uuid4().hex[:6]}",
        }
        done = run_child("bench.noop_agent", env, timeout=600)
        # Faust routes a worker's stdout to its log (stderr): look in both.
        found = re.findall(r'\{"events".*?\}', done.stdout + done.stderr)
        if not found:
            raise RuntimeError(f"no-op agent failed: {done.stderr[-2000:]}")
        figures = json.loads(found[-1])
        self.noop_cpu_us = float(figures["cpu"]) / events * 1e6  # the stream parts' CPU row
        return float(figures["rate"])

    def worker_env(self, settings: dict[str, str]) -> dict[str, str]:
        """The environment of a bench worker: no sweep, quiet logs, the settings a worker
        has on this broker (``BrokerAt.worker_env``), then the part's ``settings``."""
        return {
            "WB_SWEEP_INTERVAL": "1h",
            "WB_LOG_LEVEL": "warning",
            **self.broker.worker_env,
            **settings,
        }

    async def worker_ingest(
        self, topic: str, events: int, workers: int = 1, extra: dict[str, str] | None = None
    ) -> tuple[float, float]:
        """Sustained events/s from the first to the last commit; and peak RSS (MB)."""
        env = self.worker_env({"WB_TOPIC_COMMENTS": topic, **(extra or {})})
        first = WorkerProcess(self.broker.address, self.db_url, self.logs, extra_env=env)
        procs = [first] + [
            WorkerProcess(
                self.broker.address, self.db_url, self.logs, app_id=first.app_id, extra_env=env
            )
            for _ in range(workers - 1)
        ]
        profile = IngestProfile(self.engine, f"{topic}-{workers}w")  # BENCH_PROFILE only
        await profile.begin()
        for proc in procs:
            proc.start()
        peak, cpu = 0.0, [0.0, 0.0]  # the workers' CPU seconds at the first and last claim
        try:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                used = 0.0
                for proc in procs:
                    rss, cpu_s = proc.usage()
                    peak, used = max(peak, rss), used + cpu_s
                count = await self.claimed()
                cpu = [cpu[0] or (used if count else 0.0), used]
                if count and first.process is not None:
                    profile.first_claim(first.process.pid)
                if count >= events:
                    break
                await asyncio.sleep(0.2)
            self.ingest_cpu_us = (cpu[1] - cpu[0]) / events * 1e6
            await profile.end(events)
            return await self.claims_rate(events), peak
        finally:
            profile.stop()
            for proc in procs:
                proc.stop()

    async def claimed(self) -> int:
        """Events the consumers (the worker or the lean reference) have claimed so far."""
        return int((await self.sql("SELECT count(*) FROM processed_events")).scalar())

    async def claims_rate(self, events: int) -> float:
        """``events`` over the span from the first claim's batch to the last's (each batch's
        clock at its start): the worker and the lean reference are read the same way."""
        query = "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) FROM "
        span = (await self.sql(query + "processed_events")).scalar()
        return events / max(float(span), 1e-6)

    async def sweep(self, rows: int) -> dict[str, float]:
        await self.seed_highlights(rows, expired_share=0.3)
        await self.vacuum()
        env = {**os.environ, "BENCH_DATABASE_URL": self.db_url}
        done = await asyncio.to_thread(run_child, "bench.sweep_run", env, 1800)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        ours = json.loads(done.stdout.strip().splitlines()[-1])
        marked = ours["actions"].get("expired", 0)
        await self.reset_highlights()
        started = time.monotonic()
        await self.sql(
            "UPDATE user_profile_highlights SET is_stale = true, stale_reason = "
            "'expired', stale_since = now(), generation = generation + 1 "
            "WHERE NOT is_stale AND stale_after <= now()"
        )
        reference = time.monotonic() - started
        return {
            "rows": rows,
            "marked": marked,
            "seconds": ours["seconds"],
            "reference_s": reference,
            "peak_rss_mb": ours["peak_rss_mb"],
        }


def run_child(module: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """A benchmark part in a process of its own (its own RSS, its own event loop)."""
    return subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        cwd=Path(__file__).parent.parent,
    )
