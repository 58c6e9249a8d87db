"""Latency of the stale mark: a comment produced -> its transaction committed, per event.

The clock is the bench's own on both ends. Each comment's send time is noted as it is
handed to the producer; its commit is seen through PostgreSQL: a statement trigger on
``processed_events`` (installed for this part only) notifies the event ids each
transaction claims, and a notification is delivered only when that transaction commits.
The claim, the stale mark and the request are one transaction in the worker and in the
lean reference alike, so the notification's arrival is "stale mark committed", for every
comment, without relying on the worker's own figures.

The worker's histogram (``wb_stale_mark_lag_seconds``) is read beside it: it times from
the comment's ``occurred_at`` to the batch's commit, and it counts the warm-up events,
whose lag includes the consumer's start; ``docs/performance.md`` (2026-12-05) says what
that made of the 2026-12-02 figures.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.harness import Bench
from tests.helpers.postgres import asyncpg_dsn

CHANNEL = "bench_claims"
# One notification per 100 claimed ids (a payload holds at most 8,000 bytes; the bench's
# ids are under 40).
NOTIFY_CLAIMS = f"""
CREATE OR REPLACE FUNCTION bench_notify_claims() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE chunk text;
BEGIN
    FOR chunk IN SELECT string_agg(event_id, ',') FROM (
        SELECT event_id, (row_number() OVER ()) / 100 AS g FROM claimed) AS s GROUP BY g
    LOOP
        PERFORM pg_notify('{CHANNEL}', chunk);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_notify_claims AFTER INSERT ON processed_events
REFERENCING NEW TABLE AS claimed FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_claims();
"""
DROP = "DROP TRIGGER IF EXISTS bench_notify_claims ON processed_events"

WARM_SECONDS = 2
Pick = Callable[[int], tuple[int, str]]  # the n-th comment -> (its user, its message key)


def own_users(users: int) -> Pick:
    """Each comment for a user of its own (keyed by user, as in production)."""
    return lambda i: (1 + i % users, str(1 + i % users))


def hot_users(hot: int) -> Pick:
    """Comments for the same ``hot`` users at once, keyed apart (spread over every
    partition), so that concurrent batches lock the same rows."""
    return lambda i: (1 + i % hot, f"k{i}")


@dataclass
class Clock:
    """Send times and commit times by event id, on the bench's clock (``time.time``)."""

    sent: dict[str, float] = field(default_factory=dict)
    warm: dict[str, float] = field(default_factory=dict)
    committed: dict[str, float] = field(default_factory=dict)

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        now = time.time()
        for event_id in str(payload).split(","):
            self.committed.setdefault(event_id, now)

    def lags(self, sent: dict[str, float]) -> list[float]:
        return sorted(self.committed[e] - t for e, t in sent.items() if e in self.committed)

    def missing(self) -> int:
        return sum(1 for e in self.sent if e not in self.committed)


@dataclass(frozen=True)
class Figures:
    achieved_rate: float
    p50: float
    p99: float
    warm_p99: float  # with the warm-up events, as the worker's histogram counts them
    missing: int
    histogram: tuple[float, float] | None  # the worker's own p50 / p99, None for the lean
    tail: str  # when the slowest 1 % were sent: a few stalls, or spread over the run


def tail_times(clock: Clock, p99: float) -> str:
    """The seconds of the run (from the first send) in which the comments at or over the
    p99 were sent, with how many each: at 2,000/s a p99 is the run's worst 1 %, which a
    single stall of a few hundred ms fills by itself."""
    if not clock.sent:
        return "-"
    start = min(clock.sent.values())
    seconds = Counter(
        int(t - start)
        for e, t in clock.sent.items()
        if e in clock.committed and clock.committed[e] - t >= p99
    )
    return ", ".join(f"{s}s:{n}" for s, n in sorted(seconds.most_common(6)))


async def listening(b: Bench, clock: Clock) -> asyncpg.Connection:
    """A connection that notes each claimed id's commit in ``clock`` (the trigger must be
    installed: ``install``)."""
    _, kwargs = asyncpg_dsn(b.db_url)
    conn = await asyncpg.connect(**kwargs)
    await conn.add_listener(CHANNEL, clock.on_notify)
    return conn


async def install(b: Bench) -> None:
    await b.sql(DROP)
    _, kwargs = asyncpg_dsn(b.db_url)
    conn = await asyncpg.connect(**kwargs)
    try:
        await conn.execute(NOTIFY_CLAIMS)  # several statements: asyncpg's simple protocol
    finally:
        await conn.close()


async def steady_comments(
    b: Bench, topic: str, rate: int, seconds: int, pick: Pick, sent: dict[str, float]
) -> float:
    """Produce ``rate`` comments a second for ``seconds`` on a schedule (not as fast as
    possible: latency is measured at a given load), noting each one's send time in
    ``sent``; returns the rate achieved."""
    return await _produce_at(b, topic, rate, range(rate * seconds), pick, sent, f"{topic}-")


async def _produce_at(
    b: Bench, topic: str, rate: int, numbers: range, pick: Pick, sent: dict[str, float], ids: str
) -> float:
    """The ``numbers``-th comments at ``rate`` a second, their event ids ``ids`` + number;
    returns the rate achieved."""
    producer = AIOKafkaProducer(bootstrap_servers=b.broker.address, acks=1, linger_ms=5)
    await producer.start()
    try:
        started = time.monotonic()
        for n, i in enumerate(numbers):
            if (delay := started + n / rate - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            user, key = pick(i)
            event_id = f"{ids}{i}"
            sent[event_id] = time.time()
            await producer.send(topic, comment(event_id, user), key=key.encode())
        achieved = len(numbers) / (time.monotonic() - started)
        await producer.flush()
    finally:
        await producer.stop()
    return achieved


def comment(event_id: str, user: int) -> bytes:
    doc = {
        "event_id": event_id,
        "type": "comment.created",
        "comment_id": event_id,
        "request_id": "r",
        "user_id": user,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(doc).encode()


async def warm_up(
    b: Bench,
    topic: str,
    rate: int,
    pick: Pick,
    sent: dict[str, float],
    first: int,
    consumed: Callable[[Bench], Awaitable[int]] = Bench.claimed,
) -> None:
    """Start timing only once the consumers consume at the rate: a join's first seconds
    are not latency, and neither are the broker's and the database's first seconds at a
    rate (whichever consumer ran first on a fresh broker paid its JIT: a p99 tail in the
    run's first second, for the lean reference too when it went first). ``WARM_SECONDS``
    at ``rate``, the comments numbered from ``first`` (past the run's: with own users,
    users the run does not mark unless the bench has too few), their send times to
    ``sent`` (the worker's histogram counts them); ``consumed`` counts what the consumers
    took so far."""
    before = await consumed(b)
    events = rate * WARM_SECONDS
    await _produce_at(b, topic, rate, range(first, first + events), pick, sent, f"{topic}-warm-")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await consumed(b) - before >= events:
            await asyncio.sleep(1)  # a second member's join settles
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the consumers did not start consuming")


async def settle(clock: Clock, seconds: float = 10.0) -> None:
    """Wait until every sent comment's commit was seen, for ``seconds`` at most."""
    for _ in range(int(seconds * 10)):
        if not clock.missing():
            return
        await asyncio.sleep(0.1)


def figures(clock: Clock, achieved: float, metrics: str | None) -> Figures:
    lags = clock.lags(clock.sent)
    warm = sorted(lags + clock.lags(clock.warm))
    histogram = None
    if metrics is not None:
        got = histogram_quantiles(metrics, "wb_stale_mark_lag_seconds", (0.5, 0.99))
        histogram = (got[0.5], got[0.99])
    p99 = quantile(lags, 0.99)
    return Figures(
        achieved, quantile(lags, 0.5), p99, quantile(warm, 0.99), clock.missing(), histogram,
        tail_times(clock, p99),
    )  # fmt: skip


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def histogram_quantiles(exposition: str, name: str, qs: tuple[float, ...]) -> dict[float, float]:
    """Quantiles of a Prometheus histogram as ``histogram_quantile`` estimates them (linear
    within a bucket), summed over several workers' expositions."""
    from prometheus_client.parser import text_string_to_metric_families

    summed: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == name:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    summed[le] = summed.get(le, 0.0) + sample.value
    buckets = sorted(summed.items())
    total = buckets[-1][1] if buckets else 0
    out: dict[float, float] = {}
    for q in qs:
        rank, low, below = q * total, 0.0, 0.0
        out[q] = float("nan")
        for le, count in buckets:
            if count >= rank and total:
                width = (le - low) if le != float("inf") else 0
                out[q] = low + width * ((rank - below) / max(count - below, 1e-9))
                break
            low, below = le, count
    return out


def describe(f: Figures) -> str:
    """For the log: everything measured (lags in ms)."""
    hist = (
        "-"
        if f.histogram is None
        else "{:.0f} / {:.0f} ms".format(*(x * 1000 for x in f.histogram))
    )
    return (
        f"{f.achieved_rate:,.0f}/s, p50 {f.p50 * 1000:.1f} ms, p99 {f.p99 * 1000:.1f} ms, "
        f"p99 with warm-up {f.warm_p99 * 1000:.1f} ms, {f.missing} unseen, histogram {hist}, "
        f"the slowest 1 % sent at {f.tail}"
    )
