"""Bench parts of the comment stream: ingest rate against the lean reference, the no-op
Faust agent and raw aiokafka, the naive one-transaction-per-event design, and two workers
(latency: ``bench.latency_part``)."""

from __future__ import annotations

import argparse

from bench import streams
from bench.harness import Bench, Row, log, ok
from bench.references import lean_ingest


async def ingest(b: Bench, args: argparse.Namespace, kind: str) -> tuple[float, list[Row], float]:
    """The comment stream on broker ``kind``: the lean reference, the no-op Faust agent and
    the worker, one after the other on the same pre-produced events (each from the start,
    in a consumer group of its own), and raw aiokafka's fetch rate."""
    n = args.events
    log(f"[{kind}] producing {n} comments")
    await b.produce_comments("bench.ingest", n, args.users)
    log(f"[{kind}] raw aiokafka consumption")
    raw = await b.raw_consume("bench.ingest", n)
    log(f"[{kind}] lean reference")
    lean, lean_cpu_us = await lean_ingest(b, "bench.ingest", n)
    await b.reset_highlights()
    log(f"[{kind}] no-op Faust agent")
    noop = b.noop_faust("bench.ingest", n)
    log(f"[{kind}] worker ingest (1 process)")
    ours, rss = await b.worker_ingest("bench.ingest", n)
    await b.reset_highlights()
    ratio = f"{lean / noop:.2f}x"
    rows = [
        streams.rate_row(f"[{kind}] comments events/s vs the lean reference", ours, lean, 0.6),
        streams.cpu_row(b.ingest_cpu_us, lean_cpu_us, "lean"),
        streams.rate_row(f"[{kind}] comments events/s vs no-op Faust (a)", ours, noop, 0.75),
        streams.cpu_row(b.ingest_cpu_us, b.noop_cpu_us),
        ("  lean reference vs no-op Faust", f"{lean:,.0f}", f"{noop:,.0f}", "-", ratio),
        (
            f"[{kind}] ingest events/s vs raw aiokafka (b)",
            f"{ours:,.0f}",
            f"{raw:,.0f}",
            "(physical limit)",
            f"{ours / raw:.3f}x",
        ),
    ]
    return ours, rows, rss


async def naive(b: Bench, args: argparse.Namespace, ours: float) -> Row:
    naive_n = max(args.events // 20, 1000)
    await b.produce_comments("bench.naive", naive_n, args.users)
    log(f"naive design: one transaction per event ({naive_n} events)")
    rate, _ = await b.worker_ingest("bench.naive", naive_n, extra={"WB_BATCH_SIZE": "1"})
    await b.reset_highlights()
    return (
        "ingest events/s vs naive 1 tx/event (c)",
        f"{ours:,.0f}",
        f"{rate:,.0f}",
        ">= 5x",
        f"{ours / rate:.1f}x {ok(ours >= 5 * rate)}",
    )


async def scale(b: Bench, args: argparse.Namespace, ours: float) -> Row:
    await b.produce_comments("bench.scale", args.events, args.users)
    log("worker ingest (2 processes, one group)")
    two, _ = await b.worker_ingest("bench.scale", args.events, workers=2)
    await b.reset_highlights()
    return ("scale-out: 2 workers vs 1", f"{two:,.0f}", f"{ours:,.0f}", "-", f"{two / ours:.2f}x")
