"""The broker's floor for the latency part: the same comments at the same rate, produced ->
fetched by a plain aiokafka consumer in the bench's process, with no database at all.

Why: the stale mark's latency is the broker's delivery plus the consumer's work. On Apache
Kafka the delivery is a few milliseconds (p50 / p99 5 / 8-9 ms at 2,000 comments/s, the
JVM at a third of a core throughout). On the embedded Tansu (memory storage) the broker's
CPU grows with what the topic holds: 0.4-0.5 of a core in the timed run's first 5 s, 0.9
in its last, its own delivery p99 30-42 ms over the 20 s, and past 100 ms after 30 s at
that rate (docs/performance.md, 2026-12-07). Printed beside the worker and the lean reference, the
floor says how much of their p99 is the broker's, in the same run, on the same broker.

The consumer fetches at the worker's busy pace (``BUSY_FETCH_WAIT_MS``, 1 byte), as the
lean reference of the latency part does; "fetched" is when ``getmany`` handed it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psutil
from aiokafka import AIOKafkaConsumer

from bench import commit_latency as cl
from bench.harness import Bench
from worker.kafka.consumer import BUSY_FETCH_WAIT_MS

CPU_WINDOW_S = 5  # the broker's CPU is read over the run's first and last 5 seconds


@contextlib.asynccontextmanager
async def fetching(b: Bench, topic: str, clock: cl.Clock) -> AsyncIterator[None]:
    """A consumer of ``topic`` noting each comment's fetch time in ``clock.committed``
    (the clock's "done" side) until the block ends."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=b.broker.address,
        group_id=f"floor-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=BUSY_FETCH_WAIT_MS,
    )
    await consumer.start()

    async def take() -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in fetched.values():
                for record in records:
                    clock.committed.setdefault(json.loads(record.value)["event_id"], now)

    taking = asyncio.create_task(take())
    try:
        yield
    finally:
        taking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        await consumer.stop()


@dataclass(frozen=True)
class Floor:
    """The broker's delivery, and its CPU (cores) in the run's first and last seconds."""

    figures: cl.Figures
    cores_first: float
    cores_last: float


def broker_cpu(pids: tuple[int, ...]) -> float:
    """CPU seconds the broker's processes used so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


async def cpu_samples(pids: tuple[int, ...], samples: list[tuple[float, float]]) -> None:
    """(time, the broker's CPU seconds) once a second, until cancelled."""
    while True:
        samples.append((time.monotonic(), broker_cpu(pids)))
        await asyncio.sleep(1)


def cores(samples: list[tuple[float, float]], first: bool) -> float:
    """Cores used over the first (or last) ``CPU_WINDOW_S`` of ``samples``."""
    span = samples[: CPU_WINDOW_S + 1] if first else samples[-CPU_WINDOW_S - 1 :]
    if len(span) < 2:
        return float("nan")
    return (span[-1][1] - span[0][1]) / (span[-1][0] - span[0][0])


async def broker_floor(b: Bench, rate: int, seconds: int, users: int) -> Floor:
    """Own users' comments at ``rate`` for ``seconds`` (after the warm-up), produced ->
    fetched, on a topic of their own."""
    topic = "bench.lat-floor"
    await b.create_topic(topic)
    clock = cl.Clock()
    pick = cl.own_users(users)
    samples: list[tuple[float, float]] = []

    async def fetched(_: Bench) -> int:
        return sum(1 for e in clock.warm if e in clock.committed)

    async with fetching(b, topic, clock):
        await cl.warm_up(b, topic, rate, pick, clock.warm, rate * seconds, fetched)
        sampling = asyncio.create_task(cpu_samples(b.broker.pids, samples))
        try:
            achieved = await cl.steady_comments(b, topic, rate, seconds, pick, clock.sent)
        finally:
            sampling.cancel()
        await cl.settle(clock)
    return Floor(cl.figures(clock, achieved, None), cores(samples, True), cores(samples, False))
