"""The latency part: the stale mark's latency at a steady rate, the worker against the lean
reference on the same broker, in two shapes of load (``bench.commit_latency`` measures),
after the broker's own delivery at that rate (``bench.broker_floor``).

- own users: each comment for a user of its own, one consumer (the issue's p99 <= 50 ms);
- hot users: comments for the same few users at once, keyed apart so that every partition
  carries them, two consumers in one group: their batches lock the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bench import commit_latency as cl
from bench.broker_floor import CPU_WINDOW_S, measure_floor
from bench.harness import Bench, Row, log, ok
from bench.references import start_lean
from tests.helpers.live import WorkerProcess
from worker.kafka.consumer import BUSY_FETCH_WAIT_MS

HOT_USERS = 20
TARGET_P99 = 0.05
VARIANTS = (("own users", 1), ("hot users", 2))  # (load, consumers)


@asynccontextmanager
async def workers(b: Bench, topic: str, count: int) -> AsyncIterator[list[WorkerProcess]]:
    """``count`` workers in one group on ``topic``, ready."""
    env = b.worker_env({"WB_TOPIC_COMMENTS": topic})
    first = WorkerProcess(b.broker.address, b.db_url, b.logs, extra_env=env)
    procs = [first] + [
        WorkerProcess(b.broker.address, b.db_url, b.logs, app_id=first.app_id, extra_env=env)
        for _ in range(count - 1)
    ]
    try:
        for proc in procs:
            proc.start()
        await asyncio.gather(*(p.wait_ready(timeout=120) for p in procs))
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@asynccontextmanager
async def leans(b: Bench, topic: str, count: int) -> AsyncIterator[list[subprocess.Popen[str]]]:
    """``count`` lean references in one group on ``topic``, until the block ends.

    Each fetch waits at most the worker's busy wait (``BUSY_FETCH_WAIT_MS``, with 1 byte,
    not the worker's 4 KB), as the worker's fetches do while comments flow, not its idle
    100 ms: on Tansu the reference's p50 / p99 were 19 / 73 ms (own users) and 30 / 77 ms
    (hot users) in one run at 100 ms, 14-18 / 40-71 and 16-19 / 44-65 in five at 10 ms
    (docs/performance.md, "2026-12-07, 04:20-05:40"). On Kafka, which answers a fetch of
    1 byte on arrival, the wait changes nothing."""
    group = f"lean-{uuid.uuid4().hex[:6]}"
    procs = [start_lean(b, topic, 10**9, group, BUSY_FETCH_WAIT_MS) for _ in range(count)]
    try:
        if count > 1:  # the group's second join: a rebalance within a heartbeat or two
            await asyncio.sleep(4)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
            proc.communicate(timeout=30)


async def measure(b: Bench, args: argparse.Namespace, who: str, load: str, n: int) -> cl.Figures:
    """One run: ``n`` consumers of ``who`` ("worker" or "lean") under ``load``."""
    pick = cl.own_users(args.users) if load == "own users" else cl.hot_users(HOT_USERS)
    topic = f"bench.lat-{load.split()[0]}-{who}{n}"
    await b.create_topic(topic)
    await cl.install(b)
    clock = cl.Clock()
    conn = await cl.listening(b, clock)
    metrics = None
    try:
        consumers = workers(b, topic, n) if who == "worker" else leans(b, topic, n)
        async with consumers as procs:
            await cl.warm_up(b, topic, args.rate, pick, clock.warm, args.rate * args.seconds)
            achieved = await cl.steady_comments(b, topic, args.rate, args.seconds, pick, clock.sent)
            await cl.settle(clock)
            if who == "worker":
                urls = [f"{p.url}/metrics" for p in procs if isinstance(p, WorkerProcess)]
                metrics = "".join([await asyncio.to_thread(cl.scrape, u) for u in urls])
    finally:
        await conn.close()
        await b.sql(cl.DROP)
    await b.reset_highlights()
    got = cl.figures(clock, achieved, metrics)
    log(f"latency {who} x{n}, {load}: {cl.describe(got)}")
    return got


def unseen(got: cl.Figures) -> str:
    """A row's note of the comments its consumer never got to: left out of its figures."""
    return f", {got.missing} unseen" if got.missing else ""


def ms(p50: float, p99: float) -> str:
    return f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms"


async def latency(b: Bench, args: argparse.Namespace, kind: str) -> list[Row]:
    log(f"[{kind}] the broker alone at {args.rate}/s for {args.seconds}s, no database")
    floor = await measure_floor(b, args.rate, args.seconds, args.users)
    cpu = f"broker CPU {floor.cores_first:.2f} -> {floor.cores_last:.2f} cores"
    log(f"latency of the broker alone: {cl.describe(floor.figures)}, {cpu}")
    rows: list[Row] = [
        (
            f"[{kind}] p50 / p99 produced -> fetched, the broker alone (no database) "
            f"@{floor.figures.achieved_rate:,.0f}/s{unseen(floor.figures)}",
            ms(floor.figures.p50, floor.figures.p99),
            f"{cpu} (first, last {CPU_WINDOW_S} s)",
            "-",
            "-",
        )
    ]
    for load, n in VARIANTS:
        log(f"[{kind}] latency at {args.rate}/s for {args.seconds}s, {load}, {n} consumer(s)")
        ours = await measure(b, args, "worker", load, n)
        lean = await measure(b, args, "lean", load, n)
        label = "1 worker" if n == 1 else f"{n} workers"
        rows.append(
            (
                f"[{kind}] p50 / p99 produced -> stale mark committed, {load}, {label} "
                f"@{ours.achieved_rate:,.0f}/s{unseen(ours)}",
                ms(ours.p50, ours.p99),
                f"{ms(lean.p50, lean.p99)} lean",
                f"p99 <= {TARGET_P99 * 1000:.0f} ms",
                ok(ours.p99 <= TARGET_P99),
            )
        )
        if ours.histogram is not None:
            rows.append(
                (
                    "  the worker's own histogram (occurred_at -> after commit, warm-up in)",
                    ms(*ours.histogram),
                    f"p99 {ours.warm_p99 * 1000:.0f} ms with warm-up",
                    "-",
                    "-",
                )
            )
    return rows
