"""`make bench` / `python -m bench [--quick] [--broker tansu|kafka|both]`: throughput against
the lean reference, latency, sweep, memory, scale-out; in process, without a broker, the
comment path's CPU before input snapshots and now, and the share of requests skipped on a
workload with create-delete pairs.

Sets up its own data on PostgreSQL (WB_BENCH_DATABASE_URL, else WB_TEST_DATABASE_URL, else
a throwaway server) and its own brokers (the embedded Tansu, Apache Kafka 4.1.1: the
comment stream's parts run on each, ``bench.brokers``), and measures reference figures in
the same run on the same data, so that the results are ratios that hold on a noisy machine.
It ignores the worker's settings and libpq's variables in the shell
(``tests.helpers.environment``). On a loopback host its database URL asks for no TLS
(``ssl=disable``: ``tests.helpers.postgres``), as a worker next to its database would be
configured; the worker's own default is untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench import brokers, cost_parts, profile, skip_share, streams
from bench.comment_cost import BEFORE_SNAPSHOTS, comment_cost_rows
from bench.decode_cost import decode_row
from bench.harness import Bench, Row, log, ok
from bench.ingest import ingest, naive, scale
from bench.latency_part import latency
from tests.helpers import pgcluster
from tests.helpers import postgres as pg
from tests.helpers.environment import isolate_from_the_shell
from worker.storage import migrate
from worker.storage.database import create_engine

# What the tests' private cluster turns off (tests/helpers/pgcluster.py): a commit then waits
# for its WAL to reach the disk, which is most of a small transaction's latency.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def table(rows: list[Row]) -> str:
    head = ("measure", "measured", "reference", "target", "ok")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]

    def line(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *map(line, rows)])


PARTS = (
    "ingest",
    "naive",
    "scale",
    "latency",
    "sweep",
    "results",
    "mappings",
    "mixed",
    "roundtrip",
    "decode",
    "budget",
    "relay",
)
LOCAL_PARTS = ("comment_cost", "skips")  # in process, no broker, a database each


async def run(args: argparse.Namespace, db_url: str, logs: Path) -> None:
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    await engine.dispose()
    parts = set(args.only or (*PARTS, *LOCAL_PARTS))
    rows: list[Row] = await local_parts(args, parts)
    rss: list[str] = []
    for i, kind in enumerate(brokers.kinds(args.broker) if parts - set(LOCAL_PARTS) else []):
        log(f"[{kind}] starting the broker")
        with brokers.started(kind, logs) as broker:
            if broker.worker_env:
                log(f"[{kind}] workers run as `wb run` runs on it: {broker.worker_env}")
            b = Bench(args, broker, db_url, logs)
            try:
                rows += await broker_parts(b, args, parts, rss, first=i == 0)
                if i == 0:  # the other parts once, on the first broker
                    rows += await once_parts(b, args, parts, rss)
            finally:
                await b.engine.dispose()
    if rss:
        peak = max(float(r.split()[0]) for r in rss)
        rows.append(("peak RSS", " / ".join(rss), "-", "<= 300 MB", ok(peak <= 300)))
    print(table(rows))


async def local_parts(args: argparse.Namespace, parts: set[str]) -> list[Row]:
    """The parts without a broker, each in a database of its own (both empty or drop what
    they use): the comment path's CPU against a checkout of ``--before``, alternating, and
    the share of requests skipped as unchanged (``bench.skip_share``)."""
    rows: list[Row] = []
    for part in (p for p in LOCAL_PARTS if p in parts):
        url = await pg.create_database(args.admin_url, prefix="wbbench")
        try:
            if part == "comment_cost":
                log(f"comment cost: {args.cost_pairs} pairs, {args.before} and this checkout")
                rows += await comment_cost_rows(url, args.before, args.cost_pairs)
            else:
                log(f"skips: {args.skip_users} users, a quarter with create-delete pairs")
                figures = await skip_share.measure(url, args.skip_users, 0.25)
                rows += skip_share.skip_rows(figures)
        finally:
            await pg.drop_database(args.admin_url, url)
    return rows


async def broker_parts(
    b: Bench, args: argparse.Namespace, parts: set[str], rss: list[str], first: bool
) -> list[Row]:
    """The comment stream's parts, on each broker (naive and scale-out on the first)."""
    kind = b.broker.kind
    rows: list[Row] = []
    log(f"[{kind}] seeding {args.users} highlights")
    await b.seed_highlights(args.users)
    if parts & {"ingest", "naive", "scale"}:  # (c) and scale-out are ratios to one worker
        ours, ingest_rows, rss_ingest = await ingest(b, args, kind)
        rows += ingest_rows
        rss.append(f"{rss_ingest:.0f} MB worker (ingest, {kind})")
        if "naive" in parts and first:
            rows.append(await naive(b, args, ours))
        if "scale" in parts and first:
            rows.append(await scale(b, args, ours))
    if "latency" in parts:
        rows += await latency(b, args, kind)
    return rows


async def once_parts(
    b: Bench, args: argparse.Namespace, parts: set[str], rss: list[str]
) -> list[Row]:
    rows: list[Row] = []
    if "sweep" in parts:
        log(f"sweep over {args.sweep_rows} rows")
        sweep = await b.sweep(args.sweep_rows)
        rows.append(
            (
                f"sweep {sweep['rows']:,} rows, {sweep['marked']:,} expired",
                f"{sweep['seconds']:.1f} s",
                f"{sweep['reference_s']:.1f} s (1 UPDATE)",
                "<= 2x",
                f"{sweep['seconds'] / sweep['reference_s']:.1f}x "
                f"{ok(sweep['seconds'] <= 2 * sweep['reference_s'])}",
            )
        )
        rss.append(f"{sweep['peak_rss_mb']:.0f} MB sweep process")
    if "decode" in parts:
        rows.append(decode_row())
    if "budget" in parts:
        log("budget: scheduler steps at 100,000 queued")
        rows += await cost_parts.budget_part(b)
    if "relay" in parts:
        log(f"relay: {args.relay} requests to one topic, then two")
        rows += await cost_parts.relay_part(b, args.relay)
    return rows + await stream_parts(b, args, parts, rss)


async def stream_parts(
    b: Bench, args: argparse.Namespace, parts: set[str], rss: list[str]
) -> list[Row]:
    """Issue 17's parts: results, mappings, mixed (with lock waits), the sweep round trip."""

    rows: list[Row] = []
    if "results" in parts:
        log(f"results: {args.stream_events} results")
        got, peak = await streams.results_part(b, args.stream_events)
        rows += got
        rss.append(f"{peak:.0f} MB worker (results)")
    if "mappings" in parts:
        log(f"mappings: {args.stream_events} mappings")
        got, peak = await streams.mappings_part(b, args.stream_events)
        rows += got
        rss.append(f"{peak:.0f} MB worker (mappings)")
    if "mixed" in parts:
        log(f"mixed: {args.stream_events} events on three topics")
        got, peak, locks = await streams.mixed_part(b, args.stream_events, args.users)
        rows += got
        rss.append(f"{peak:.0f} MB worker (mixed)")
        log(f"mixed: pg_stat_activity samples: {dict(locks.most_common())}")
        print("lock-wait samples during mixed:", json.dumps(dict(locks.most_common())))
    if "roundtrip" in parts:
        log(f"sweep round trip: {args.roundtrip} expiries")
        got, peak = await streams.roundtrip_part(b, args.roundtrip)
        rows += got
        rss.append(f"{peak:.0f} MB worker (round trip)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=(*PARTS, *LOCAL_PARTS),
        help="run these parts only (default: all)",
    )
    parser.add_argument(
        "--before",
        default=BEFORE_SNAPSHOTS,
        help=f"git ref the comment CPU is compared with (default {BEFORE_SNAPSHOTS}: "
        "before input snapshots)",
    )
    parser.add_argument("--stream-events", type=int, help="events of results/mappings/mixed")
    parser.add_argument("--roundtrip", type=int, help="expiries of the sweep round trip")
    parser.add_argument(
        "--broker",
        choices=(*brokers.KINDS, "both"),
        default="both",
        help="the comment stream's parts on the embedded Tansu, Apache Kafka, or both "
        "(default; the other parts run once, on the first)",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="the throwaway PostgreSQL commits durably (fsync, synchronous_commit) as a "
        "production server does; by default it is the tests' cluster, durability off",
    )
    args = parser.parse_args()
    args.events, args.users = (5000, 2500) if args.quick else (100_000, 50_000)
    args.rate, args.seconds = 2000, (5 if args.quick else 20)
    args.sweep_rows = 20_000 if args.quick else 1_000_000
    args.stream_events = args.stream_events or (5000 if args.quick else 50_000)
    args.roundtrip = args.roundtrip or (10_000 if args.quick else 300_000)
    args.relay = 10_000 if args.quick else 100_000
    args.cost_pairs, args.skip_users = (1, 2000) if args.quick else (3, 10_000)
    # Its workers and servers are its own, as the tests' are: the figures are the bench's
    # settings, not whatever the shell exports for the user's servers.
    if dropped := isolate_from_the_shell(os.environ):
        log(f"ignoring the shell's {', '.join(dropped)}")
    with ExitStack() as stack:
        logs = Path(tempfile.mkdtemp(prefix="wb-bench-"))
        admin_url = os.environ.get("WB_BENCH_DATABASE_URL") or pg.configured_url()
        if admin_url is None:
            if args.durable:  # this process's clusters only: the tests never see it
                pgcluster.SETTINGS.update(DURABLE)
            profile.preload(pgcluster.SETTINGS)  # BENCH_PROFILE: pg_stat_statements
            admin_url = stack.enter_context(pg.throwaway_server()).get_uri()
        args.admin_url = admin_url  # the parts with a database of their own
        db_url = asyncio.run(pg.create_database(admin_url, prefix="wbbench"))
        stack.callback(lambda: asyncio.run(pg.drop_database(admin_url, db_url)))
        log(f"logs in {logs}")
        asyncio.run(run(args, db_url, logs))


if __name__ == "__main__":
    main()
