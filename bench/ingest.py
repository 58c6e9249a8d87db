"""Bench parts of the comment stream: ingest rate against the no-op Faust agent and raw
aiokafka, the naive one-transaction-per-event design, two workers, and latency."""

from __future__ import annotations

import argparse

from bench import streams
from bench.harness import Bench, Row, log, ok


async def ingest(b: Bench, args: argparse.Namespace) -> tuple[float, list[Row], float]:
    n = args.events
    log(f"producing {n} comments")
    await b.produce_comments("bench.ingest", n, args.users)
    log("raw aiokafka consumption")
    raw = await b.raw_consume("bench.ingest", n)
    log("no-op Faust agent")
    noop = b.noop_faust("bench.ingest", n)
    log("worker ingest (1 process)")
    ours, rss = await b.worker_ingest("bench.ingest", n)
    await b.reset_highlights()
    rows = [
        streams.rate_row("ingest events/s vs no-op Faust (a)", ours, noop, 0.75),
        streams.cpu_row(b.ingest_cpu_us, b.noop_cpu_us),
        (
            "ingest events/s vs raw aiokafka (b)",
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


async def latency(b: Bench, args: argparse.Namespace) -> list[Row]:
    rows = []
    for workers in (1, 2):
        log(f"latency at {args.rate}/s for {args.seconds}s, {workers} worker(s)")
        lat = await b.latency(
            f"bench.latency{workers}", args.rate, args.seconds, args.users, workers=workers
        )
        await b.reset_highlights()
        label = f"{workers} worker{'s' if workers > 1 else ''} @{lat['achieved_rate']:,.0f}/s"
        rows += [
            (
                f"p50 / p99 event -> stale mark committed, {label}",
                f"{lat['commit_p50'] * 1000:.0f} / {lat['commit_p99'] * 1000:.0f} ms",
                "-",
                "p99 <= 250 ms",
                ok(lat["commit_p99"] <= 0.25),
            ),
            (
                f"p50 / p99 event -> regen request on topic, {label}",
                f"{lat['topic_p50'] * 1000:.0f} / {lat['topic_p99'] * 1000:.0f} ms",
                f"{lat['requests_timed']} requests",
                "-",
                "-",
            ),
        ]
    return rows
