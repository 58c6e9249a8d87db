"""The broker alone, for the latency part: the same comments at the same rate, produced ->
fetched by a plain aiokafka consumer in the bench's process, with no database at all.

Why: the stale mark's latency is the broker's delivery plus the consumer's work, and the
two brokers deliver very differently. On Apache Kafka the delivery is a few milliseconds
(p50 / p99 5 / 8-9 ms at 2,000 comments/s, the JVM at a third of a core throughout). On the
embedded Tansu (memory storage) the broker's CPU grows with what the topic being written
and read holds (a fresh topic starts low again): 0.4-0.5 of a core in the timed run's
first 5 s, 0.9 in its last, its delivery p99 30-42 ms over the 20 s, and past 100 ms after
30 s at that rate (docs/performance.md, "2026-12-07, 04:20-05:40"). Printed before the
worker's and the lean reference's rows, it is a reference for what the broker itself does
at this rate in the same run. It is not a share of their p99 (percentiles do not add up):
it is measured on a topic of its own, before them, by a consumer that shares the bench's
event loop with the producer.

Its consumer fetches with the worker's busy wait (``BUSY_FETCH_WAIT_MS``) but 1 byte, not
the worker's 4 KB, as the latency part's lean reference does; "fetched" is when
``getmany`` handed a comment over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
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
CpuSamples = list[tuple[float, float]]  # (monotonic time, the broker's CPU seconds so far)


@dataclass(frozen=True)
class Floor:
    """The broker's delivery (``figures``: its "committed" side is the fetch time), and its
    CPU (cores) over the timed run's first and last ``CPU_WINDOW_S`` seconds (NaN when the
    broker's processes could not be read throughout)."""

    figures: cl.Figures
    cores_first: float
    cores_last: float


@contextlib.asynccontextmanager
async def fetching(b: Bench, topic: str, clock: cl.Clock) -> AsyncIterator[asyncio.Task[None]]:
    """A consumer of ``topic`` noting each comment's fetch time in ``clock.committed`` until
    the block ends; yields its task (done only if it failed)."""
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
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for record in records:
                    clock.committed.setdefault(json.loads(record.value)["event_id"], now)

    taking = asyncio.create_task(take())
    try:
        yield taking
    finally:
        taking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        await consumer.stop()


async def sample_cpu(pids: tuple[int, ...], samples: CpuSamples) -> None:
    """Append the broker's CPU seconds to ``samples`` once a second until cancelled; stops
    quietly if a process cannot be read (``cores`` then reports NaN, not a short window)."""
    try:
        processes = [psutil.Process(pid) for pid in pids]
        while True:
            samples.append((time.monotonic(), sum(sum(p.cpu_times()[:2]) for p in processes)))
            await asyncio.sleep(1)
    except psutil.Error:
        samples.clear()


def cores(samples: CpuSamples, first: bool) -> float:
    """Cores used over the first (or last) ``CPU_WINDOW_S`` seconds of ``samples``; NaN
    with fewer than two samples. A run shorter than the window gives both the same."""
    span = samples[: CPU_WINDOW_S + 1] if first else samples[-CPU_WINDOW_S - 1 :]
    if len(span) < 2:
        return math.nan
    return (span[-1][1] - span[0][1]) / (span[-1][0] - span[0][0])


async def measure_floor(b: Bench, rate: int, seconds: int, users: int) -> Floor:
    """Own users' comments at ``rate`` for ``seconds`` (after the warm-up), produced ->
    fetched, on a topic of their own."""
    topic = "bench.lat-floor"
    await b.create_topic(topic)
    clock = cl.Clock()
    pick = cl.own_users(users)
    samples: CpuSamples = []
    async with fetching(b, topic, clock) as taking:

        async def warm_fetched(_: Bench) -> int:
            if taking.done():
                taking.result()  # the consumer failed: raise why, not "did not start"
            return sum(1 for e in clock.warm if e in clock.committed)

        await cl.warm_up(b, topic, rate, pick, clock.warm, rate * seconds, warm_fetched)
        sampling = asyncio.create_task(sample_cpu(b.broker.pids, samples))
        try:
            achieved = await cl.steady_comments(b, topic, rate, seconds, pick, clock.sent)
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
        await cl.settle(clock)
    return Floor(cl.figures(clock, achieved, None), cores(samples, True), cores(samples, False))
