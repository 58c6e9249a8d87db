"""Bench parts for every input stream (issue 17): results, mappings, the three streams at
once (with lock-wait sampling), and the sweep's round trip. Each rate has its reference in
the same run: the no-op Faust agent on the same topics and events."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from bench.harness import NOW, Bench, Message, Row, ok, run_child
from tests.helpers.live import WorkerProcess


def cpu_row(ours_us: float, reference_us: float, reference: str = "no-op") -> Row:
    """The worker's CPU per event from its first to its last claim, against a reference's
    (the no-op agent's, the lean reference's) over its events: what the code costs, which
    the shared machine's load moves much less than the rates (there the ratio is the
    reference's over ours)."""
    return (
        f"  worker CPU per event vs {reference}",
        f"{ours_us:.0f} us",
        f"{reference_us:.0f} us",
        "-",
        f"{reference_us / max(ours_us, 1e-9):.2f}x",
    )


def _cpu_row(worker: Worker, delivered: int, noop_us: float) -> Row:
    return cpu_row(worker.cpu_span() / delivered * 1e6, noop_us)


def rate_row(label: str, ours: float, noop: float, target: float) -> Row:
    ratio = ours / noop
    return (
        label,
        f"{ours:,.0f}",
        f"{noop:,.0f}",
        f">= {target}x",
        f"{ratio:.2f}x {ok(ratio >= target)}",
    )


def result_doc(eid: str, user: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "user_id": user,
        "bio_text": f"bio {user}",
        "proof_points": ["p1", "p2"],
        "quotes": ["q"],
        "source_group": "grp",
        "snapshot_hash": f"new-{user}",
        "llm_model": "m",
        "generated_at": (NOW - timedelta(minutes=1)).isoformat(),
        **extra,
    }


def comment_doc(eid: str, user: int | None, req: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": eid,
        "type": "comment.created",
        "comment_id": eid,
        "request_id": req,
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
    }
    if user is not None:
        doc["user_id"] = user
    return doc


def mapping_doc(eid: str, req: str, user: int) -> dict[str, Any]:
    at = (NOW - timedelta(hours=2)).isoformat()
    return {"event_id": eid, "request_id": req, "user_id": user, "occurred_at": at}


async def pend_requests(b: Bench, users: int) -> None:
    """Users 1..``users``: stale with a pending request (generation 1) to answer."""
    await b.sql(
        "UPDATE user_profile_highlights SET is_stale = true, stale_reason = 'new_comment', "
        "stale_since = now(), generation = 1, regen_request_id = 'pend-' || user_id, "
        "regen_requested_at = now(), regen_generation = 1, regen_attempts = 1 "
        "WHERE user_id <= :users",
        users=users,
    )


async def park(b: Bench, count: int) -> None:
    """``count`` parked comments, one per request ``q1``..``q<count>``."""
    await b.sql(
        "INSERT INTO parked_comments (event_id, request_id, payload, parked_at) "
        "SELECT 'pk-' || g, 'q' || g, jsonb_build_object('event_id', 'pk-' || g, "
        "'type', 'comment.created', 'comment_id', 'pk-' || g, 'request_id', 'q' || g, "
        "'occurred_at', CAST(:at AS text)), now() FROM generate_series(1, :n) g",
        at=(NOW - timedelta(hours=1)).isoformat(),
        n=count,
    )


class Worker:
    """One ``wb run`` on the part's topics; waits until ``processed_events`` holds ``n``."""

    def __init__(self, b: Bench, topics: dict[str, str]) -> None:
        env = b.worker_env(topics)
        self.b = b
        self.proc = WorkerProcess(b.broker.address, b.db_url, b.logs, extra_env=env)
        self.peak = 0.0
        self.cpu_first: float | None = None  # CPU seconds when the first claim was seen
        self.cpu_last = 0.0

    def start(self) -> Worker:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()

    def rss(self) -> float:
        rss, _ = self.proc.usage()
        self.peak = max(self.peak, rss)
        return rss

    def cpu(self) -> float:
        return self.proc.usage()[1]

    def cpu_span(self) -> float:
        """CPU seconds from the first poll that saw work done to the last ``until`` poll
        (0.2 s apart: a few per cent of a part's span)."""
        return self.cpu_last - (self.cpu_first or self.cpu_last)

    async def until(self, statement: str, done: int) -> None:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            self.rss()
            count = (await self.b.sql(statement)).scalar()
            if count and self.cpu_first is None:
                self.cpu_first = self.cpu()
            if count >= done:
                self.cpu_last = self.cpu()
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"timed out: {statement} < {done}")

    async def rate(self, unique: int, delivered: int) -> float:
        """Delivered events/s from the first to the last claim of ``unique`` events."""
        await self.until("SELECT count(*) FROM processed_events", unique)
        span = (
            await self.b.sql(
                "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) "
                "FROM processed_events"
            )
        ).scalar()
        return delivered / max(float(span), 1e-6)


async def results_part(b: Bench, n: int) -> tuple[list[Row], float]:
    """``n`` results for ``n`` users: half create rows, half answer pending requests."""
    half = n // 2
    await b.seed_highlights(half)
    await pend_requests(b, half)
    await b.vacuum()
    topic = "bench.results"
    await b.create_topic(topic)
    await b.produce(
        (
            (topic, str(u), result_doc(f"g{u}", u, generation=1, regen_request_id=f"pend-{u}"))
            if u <= half
            else (topic, str(u), result_doc(f"g{u}", u))
            for u in range(1, n + 1)
        ),
    )
    noop = b.noop_faust(topic, n)
    worker = Worker(b, {"WB_TOPIC_GENERATED": topic}).start()
    try:
        ours = await worker.rate(n, n)
    finally:
        worker.stop()
    fresh = (
        await b.sql("SELECT count(*) FROM user_profile_highlights WHERE NOT is_stale")
    ).scalar()
    label = f"results events/s vs no-op Faust ({fresh:,} of {n:,} rows fresh)"
    return [rate_row(label, ours, noop, 1.0), _cpu_row(worker, n, b.noop_cpu_us)], worker.peak


async def mappings_part(b: Bench, n: int) -> tuple[list[Row], float]:
    """``n`` mappings, half of them releasing a parked comment (``n / 2`` in all)."""
    await b.seed_highlights(n)
    await park(b, n // 2)
    await b.vacuum()
    topic = "bench.mappings"
    await b.create_topic(topic)
    await b.produce((topic, f"q{i}", mapping_doc(f"m{i}", f"q{i}", i)) for i in range(1, n + 1))
    noop = b.noop_faust(topic, n)
    worker = Worker(b, {"WB_TOPIC_REQUESTS": topic}).start()
    try:
        ours = await worker.rate(n, n)
    finally:
        worker.stop()
    left = (await b.sql("SELECT count(*) FROM parked_comments")).scalar()
    label = f"mappings events/s vs no-op Faust ({n // 2 - left:,} parked released, {left} left)"
    return [rate_row(label, ours, noop, 1.0), _cpu_row(worker, n, b.noop_cpu_us)], worker.peak


def mixed_messages(n: int, users: int, topics: dict[str, str]) -> tuple[list[Message], int]:
    """``n`` events over the three topics (results 30 %, comments 50 % of which 40 %
    through the request map, some produced before their mapping, mappings 20 %), and
    ~10 % redeliveries; returns the messages in production order and the unique count."""
    rng = random.Random(11)
    out: list[Message] = []
    for i in range(n):
        kind, user = rng.random(), rng.randint(1, users)
        if kind < 0.3:
            out.append((topics["g"], str(user), result_doc(f"mg{i}", user)))
        elif kind < 0.8:
            if rng.random() < 0.4:  # through the map (request "mr<user>", mapped below)
                out.append((topics["c"], f"mr{user}", comment_doc(f"mc{i}", None, f"mr{user}")))
            else:
                out.append((topics["c"], str(user), comment_doc(f"mc{i}", user, f"x{i}")))
        else:
            out.append((topics["r"], f"mr{user}", mapping_doc(f"mm{i}", f"mr{user}", user)))
    unique = len(out)
    for m in rng.sample(out, n // 10):
        out.insert(rng.randrange(len(out)), m)
    return out, unique


async def sample_locks(b: Bench, stop: asyncio.Event) -> Counter[str]:
    """Backends of our database waiting, by wait event, every 50 ms (plus the sample count)."""
    seen: Counter[str] = Counter()
    async with b.engine.connect() as conn:
        while not stop.is_set():
            rows = await conn.execute(
                __import__("sqlalchemy").text(
                    "SELECT coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-'), "
                    "left(query, 40) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND pid <> pg_backend_pid()"
                )
            )
            seen["samples"] += 1
            for wait, query in rows:
                seen["active"] += 1
                if wait.startswith("Lock:") or wait.startswith("LWLock:"):
                    seen[f"{wait} ({query.split('(')[0][:24]})"] += 1
            await conn.commit()
            await asyncio.sleep(0.05)
    return seen


async def mixed_part(b: Bench, n: int, users: int) -> tuple[list[Row], float, Counter[str]]:
    await b.seed_highlights(users)
    await b.vacuum()
    topics = {"c": "bench.mixed.c", "r": "bench.mixed.r", "g": "bench.mixed.g"}
    for topic in topics.values():
        await b.create_topic(topic)
    messages, unique = mixed_messages(n, users, topics)
    await b.produce(messages)
    noop = b.noop_faust(",".join(topics.values()), len(messages))
    worker = Worker(
        b,
        {
            "WB_TOPIC_COMMENTS": topics["c"],
            "WB_TOPIC_REQUESTS": topics["r"],
            "WB_TOPIC_GENERATED": topics["g"],
        },
    ).start()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_locks(b, stop))
    try:
        ours = await worker.rate(unique, len(messages))
    finally:
        stop.set()
        worker.stop()
    locks = await sampler
    label = f"mixed events/s, 3 topics at once ({len(messages) - unique:,} redelivered)"
    rows = [rate_row(label, ours, noop, 1.0), _cpu_row(worker, len(messages), b.noop_cpu_us)]
    return rows, worker.peak, locks


def _pending(rows: Iterable[Any]) -> Iterator[Message]:
    for user, request_id, generation in rows:
        doc = result_doc(f"sw{user}", user, regen_request_id=request_id, generation=generation)
        yield "bench.roundtrip", str(user), doc


async def roundtrip_part(b: Bench, expiries: int) -> tuple[list[Row], float]:
    """``expiries`` rows expire; the sweep asks for them, their results come back: the
    time from the sweep's start until every row is fresh again (worker already running)."""
    await b.seed_highlights(expiries, expired_share=1.0)
    await b.vacuum()
    await b.create_topic("bench.roundtrip")
    worker = Worker(b, {"WB_TOPIC_GENERATED": "bench.roundtrip"}).start()
    try:
        await worker.proc.wait_ready(timeout=120)
        started = time.monotonic()
        env = {**__import__("os").environ, "BENCH_DATABASE_URL": b.db_url}
        done = await asyncio.to_thread(run_child, "bench.sweep_run", env, 1800)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        swept = time.monotonic() - started
        pending = await b.sql(
            "SELECT user_id, regen_request_id, regen_generation FROM user_profile_highlights "
            "WHERE is_stale ORDER BY user_id"
        )
        await b.produce(_pending(pending.all()))
        await worker.until(
            "SELECT count(*) FROM user_profile_highlights WHERE NOT is_stale", expiries
        )
        total = time.monotonic() - started
    finally:
        worker.stop()
    row = (
        f"sweep round trip: {expiries:,} expiries, then their results applied",
        f"{total:.1f} s (sweep {swept:.1f} s)",
        "-",
        "<= 120 s",
        ok(total <= 120),
    )
    return [row], worker.peak
