"""Prometheus metrics. Labels come from closed sets only (streams, outcomes, reasons):
never a user id, comment id or free text, so cardinality stays bounded.

Gauges that need the database are refreshed by a timer (``refresh_gauges``), never on
scrape, so a scrape can't load the database. The table-wide ones (``LeaderFigures``) are
read and exported by the group's leader alone.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import BatchResult
from worker.domain.cost import UNREQUESTED, Lane, Spend
from worker.domain.decoder import RejectReason
from worker.domain.freshness import FreshnessState
from worker.domain.scheduling import Priority, RegenPolicy
from worker.domain.snapshot import UNCHANGED
from worker.domain.values import RegenReason, StaleReason, UpsertOutcome
from worker.domain.wire import InputStream
from worker.services import lane_budget, outbox, parking, scheduler, spend
from worker.services.overview import Figures, current_figures
from worker.storage.db_clock import database_now

# Fine steps around the 250 ms objective for "event -> stale mark committed".
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
TURNAROUND_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
STATES = tuple(s.value for s in FreshnessState)
EVENT_OUTCOMES = (
    "stale_marked",
    "coalesced",
    "settled",
    "override_locked",
    "already_included",
    "unchanged_input",
    "missing_requested",
    "parked",
    "unparked",
    "mapped",
    "duplicate",
    "dead_lettered",
    *(o.value for o in UpsertOutcome),
)
SWEEP_ACTIONS = (*(r.value for r in StaleReason), "retried", "requested", UNCHANGED)
# Every label value the worker can emit, per label name: a test holds the exposition to it.
LABEL_VALUES: dict[str, frozenset[str]] = {
    "stream": frozenset(s.value for s in InputStream),
    "outcome": frozenset(EVENT_OUTCOMES),
    "reason": frozenset(
        {*(r.value for r in RejectReason), *(r.value for r in RegenReason), UNCHANGED, UNREQUESTED}
    ),
    "lane": frozenset(lane.value for lane in Lane),
    "direction": frozenset({"input", "output"}),
    "state": frozenset(STATES),
    "action": frozenset(SWEEP_ACTIONS),
    "priority": frozenset(p.name.lower() for p in Priority),
}
QUEUED_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


def observe_many(histogram: Histogram, value: float, times: int) -> None:
    """Record ``times`` observations of one value at once: what ``observe`` in a loop
    records (a batch's handling time counts once per event, and the loop cost about a
    microsecond per event). prometheus_client has no weighted observe, so this updates
    its per-bucket counters; a test holds it to the loop's exposition."""
    if times <= 0:
        return
    h: Any = histogram
    h._sum.inc(value * times)
    for bucket, bound in zip(h._buckets, h._upper_bounds, strict=True):
        if value <= bound:
            bucket.inc(times)
            return


def observe_each(histogram: Histogram, values: Iterable[float]) -> None:
    """Record each of ``values`` (finite): what ``observe`` in a loop records, with one
    update of the sum and one per bucket touched. A comment batch has a lag per stale mark,
    and ``observe`` per value (two locked counter updates) was about 7 % of a comment batch's
    handling in py-spy of the live worker; a test holds this to the loop's exposition."""
    h: Any = histogram
    bounds = h._upper_bounds
    found = list(values)
    if not found:
        return
    h._sum.inc(sum(found))
    for index, n in Tally(bisect_left(bounds, v) for v in found).items():
        h._buckets[index].inc(n)


class LeaderFigures(Collector):
    """The table-wide gauges (rows by state, the pending and queued requests, the outbox,
    the parked comments, the day's spend and the budgets left), in a registry of their
    own. The group's leader reads them for every worker: one scan of the table per refresh
    for the whole group, not one per worker (two workers' scans at once held comments up
    by up to 100 ms on two cores, and the cost grows with workers times rows). Only the
    leader exports them: a worker forgets them at its first refresh after it lost the
    leadership (``forget``), and keeps its last reading while a reading fails (the
    database away), as every gauge did before. Dashboards and alerts take ``max()`` or
    ``min()`` across workers: the leader's figure."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.exported = False

    def mark_read(self) -> None:
        self.exported = True

    def forget(self) -> None:
        self.exported = False

    def describe(self) -> Iterable[Metric]:
        return list(self.registry.collect())  # its names, checked against the worker's

    def collect(self) -> Iterator[Metric]:
        if self.exported:
            yield from self.registry.collect()


class Metrics:
    """All metrics of one worker, in a registry of its own (tests build several); the
    table-wide gauges in ``table`` (``LeaderFigures``), registered last so that a name
    both define is refused."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.table = LeaderFigures()
        self._stream_metrics(self.registry)
        self._scheduler_metrics(self.registry)
        self._cost_metrics(self.registry)
        self._table_gauges(self.table.registry)
        self.registry.register(self.table)

    def _cost_metrics(self, r: CollectorRegistry) -> None:
        """What regeneration cost, as results reported it (``worker.domain.cost``), by the
        lane and reason of the request answered (the day's spend is a table gauge)."""
        self.regen_tokens = Counter(
            "wb_regen_tokens",
            "Tokens results reported using, by direction, lane and reason of the request",
            ["direction", "lane", "reason"],
            registry=r,
        )
        self.regen_cost = Counter(
            "wb_regen_cost_usd",
            "US dollars results reported costing, by lane and reason of the request",
            ["lane", "reason"],
            registry=r,
        )

    def _stream_metrics(self, r: CollectorRegistry) -> None:
        """What the input streams did: outcomes, dead letters, retries, timings."""
        self.events = Counter(
            "wb_events", "Input events by stream and outcome", ["stream", "outcome"], registry=r
        )
        self.dead_letters = Counter(
            "wb_dead_letters",
            "Events sent to a dead-letter topic",
            ["stream", "reason"],
            registry=r,
        )
        self.clock_skew_clamped = Counter(
            "wb_clock_skew_clamped",
            "Input timestamps clamped to their receipt time (further ahead than WB_MAX_CLOCK_SKEW)",
            ["stream", "field"],
            registry=r,
        )
        self.regen_requests = Counter(
            "wb_regen_requests", "Regen requests queued, by reason", ["reason"], registry=r
        )
        self.regen_published = Counter(
            "wb_regen_published", "Outbox messages published", registry=r
        )
        self.results = Counter(
            "wb_results", "Generated results by outcome", ["outcome"], registry=r
        )
        self.db_retries = Counter(
            "wb_db_retries",
            "Batch attempts retried after a database failure, counted as they happen",
            ["stream"],
            registry=r,
        )
        self.sweep_actions = Counter(
            "wb_sweep_actions", "Rows changed by sweeps, by action", ["action"], registry=r
        )
        self.handling = Histogram(
            "wb_event_handling_seconds",
            "Time from a batch's start to its database commit, per event",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stale_lag = Histogram(
            "wb_stale_mark_lag_seconds",
            "Event time of a comment to its stale mark being committed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turnaround = Histogram(
            "wb_regen_turnaround_seconds",
            "Regen request to result applied (a user's wait)",
            buckets=TURNAROUND_BUCKETS,
            registry=r,
        )
        # Counters the alerts take increase()/rate() of exist at 0 from the start: a series
        # born at its first increment (a dead-letter burst) shows Prometheus no increase.
        for stream in InputStream:
            self.db_retries.labels(stream.value)
            for reason in RejectReason:
                self.dead_letters.labels(stream.value, reason.value)

    def _scheduler_metrics(self, r: CollectorRegistry) -> None:
        """The regeneration scheduler: its queue, the shared budget, what it released."""
        self.regen_queued_time = Histogram(
            "wb_regen_queued_seconds",
            "Time a regen request spent queued with the scheduler before it was published",
            buckets=QUEUED_BUCKETS,
            registry=r,
        )
        self.regen_settled = Counter(
            "wb_regen_settled",
            "Changes absorbed by a request still settling in the queue",
            registry=r,
        )
        self.regen_scheduled = Counter(
            "wb_regen_scheduled",
            "Queued regen requests released by the scheduler, by priority",
            ["priority"],
            registry=r,
        )
        self.regen_skipped = Counter(
            "wb_regen_skipped",
            "Due regen requests not published, by reason (unchanged: the inputs are what "
            "the stored highlight covers)",
            ["reason"],
            registry=r,
        )
        self.regen_skipped.labels(UNCHANGED)
        for p in Priority:
            self.regen_scheduled.labels(p.name.lower())

    def _table_gauges(self, r: CollectorRegistry) -> None:
        """Table-wide gauges (``LeaderFigures``), set by ``refresh_gauges`` on the leader
        (the budgets left also by each scheduler step, exported on the leader only)."""
        self.regen_budget = Gauge(
            "wb_regen_budget_tokens",
            "Regen requests the shared budget allows right now (-1: no budget)",
            registry=r,
        )
        self.regen_llm_tokens = Gauge(
            "wb_regen_budget_llm_tokens",
            "LLM tokens left in the lane's token budget (negative: a debt the refill repays)",
            ["lane"],
            registry=r,
        )
        self.regen_queued = Gauge(
            "wb_regen_queued",
            "Regen requests queued with the scheduler (not yet published), by priority",
            ["priority"],
            registry=r,
        )
        self.regen_queued_age = Gauge(
            "wb_regen_queued_age_seconds",
            "Age of the oldest request waiting for the scheduler, by priority (0: none)",
            ["priority"],
            registry=r,
        )
        for p in Priority:
            self.regen_queued.labels(p.name.lower())
            self.regen_queued_age.labels(p.name.lower())
        self.regen_spend_today = Gauge(
            "wb_regen_spend_today_usd",
            "Reported regeneration cost since 00:00 UTC (the database's day), all workers",
            registry=r,
        )
        self.regen_spend_cap = Gauge(
            "wb_regen_spend_cap_usd",
            "WB_REGEN_MAX_USD_PER_DAY: at the day's spend only privacy requests go out (0: off)",
            registry=r,
        )
        self.highlights = Gauge("wb_highlights", "Highlights by state", ["state"], registry=r)
        self.pending = Gauge("wb_regen_pending", "Pending regenerations (queue depth)", registry=r)
        self.backlog = Gauge("wb_outbox_backlog", "Outbox rows not yet published", registry=r)
        self.oldest_stale = Gauge(
            "wb_oldest_stale_age_seconds", "Age of the oldest stale highlight", registry=r
        )
        self.parked = Gauge(
            "wb_parked_comments", "Comments waiting for a request mapping", registry=r
        )
        self.parked_age = Gauge(
            "wb_parked_oldest_age_seconds",
            "Age of the oldest comment waiting for a request mapping (0: none); past "
            "WB_PARKED_RETENTION it is dead-lettered (unmapped)",
            registry=r,
        )

    def count_retry(self, stream: InputStream) -> None:
        """One retry of a batch of ``stream`` because the database failed (called by the
        pipeline while it retries, so an outage shows while it lasts)."""
        self.db_retries.labels(stream.value).inc()

    def record_batch(
        self, stream: str, result: BatchResult, elapsed_s: float, committed_at: datetime
    ) -> None:
        for (event_stream, outcome), n in result.outcomes.items():
            self.events.labels(event_stream, outcome).inc(n)
            if event_stream == "generated" and outcome != "dead_lettered":
                self.results.labels(outcome).inc(n)
            if outcome == "settled":
                self.regen_settled.inc(n)
        for letter in result.dead_letters:
            self.dead_letters.labels(stream, letter.reason.value).inc()
        for (event_stream, name), n in result.clamped.items():
            self.clock_skew_clamped.labels(event_stream, name).inc(n)
        for reason, n in result.regen_requests.items():
            self.regen_requests.labels(reason).inc(n)
        self.record_spend(result.spend)
        observe_many(self.handling.labels(stream), elapsed_s, sum(result.outcomes.values()))
        lags = (max((committed_at - t).total_seconds(), 0.0) for t in result.stale_event_times)
        observe_each(self.stale_lag, lags)
        observe_each(self.turnaround, result.turnaround_s)

    def record_spend(self, spend: Spend) -> None:
        for (lane, reason), totals in spend.by_key.items():
            self.regen_tokens.labels("input", lane, reason).inc(totals.input_tokens)
            self.regen_tokens.labels("output", lane, reason).inc(totals.output_tokens)
            self.regen_cost.labels(lane, reason).inc(totals.cost_usd)

    def record_scheduled(self, done: scheduler.Published) -> None:
        for seconds in done.waits_s:
            self.regen_queued_time.observe(max(seconds, 0.0))
        for priority in done.priorities:
            self.regen_scheduled.labels(_priority_name(priority)).inc()
        self.regen_skipped.labels(UNCHANGED).inc(done.skipped)
        self.regen_budget.set(-1 if done.budget_left is None else done.budget_left)
        for lane, left in done.llm_tokens_left.items():
            self.regen_llm_tokens.labels(lane).set(left)

    async def refresh_gauges(
        self, session: AsyncSession, now: datetime, policy: RegenPolicy
    ) -> Figures:
        """Set the table-wide gauges (``LeaderFigures``: the leader's) and mark them read;
        returns the figures (the overview samples them)."""
        figures = await current_figures(session, now)
        for p in Priority:
            self.regen_queued.labels(p.name.lower()).set(figures.queued.get(int(p), 0))
            since = figures.queued_since.get(int(p))
            age = (now - since).total_seconds() if since else 0.0
            self.regen_queued_age.labels(p.name.lower()).set(max(age, 0.0))
        db_now = await database_now(session)
        left = await scheduler.budget_left(session, db_now, policy)
        self.regen_budget.set(-1 if left is None else left)
        self.regen_spend_today.set((await spend.spend_today(session, db_now)).total().cost_usd)
        self.regen_spend_cap.set(policy.max_usd_per_day)
        for lane, tokens in (await lane_budget.tokens_left(session, policy)).items():
            self.regen_llm_tokens.labels(lane).set(tokens)
        for key, n in figures.counts.items():
            self.highlights.labels(key).set(n)
        self.pending.set(figures.pending)
        oldest = figures.oldest_stale_at
        self.oldest_stale.set((now - oldest).total_seconds() if oldest else 0)
        self.backlog.set(await outbox.backlog(session))
        held = await parking.parked(session)
        self.parked.set(held.count)
        self.parked_age.set(max((now - held.oldest).total_seconds(), 0) if held.oldest else 0)
        self.table.mark_read()
        return figures

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _priority_name(priority: int) -> str:
    try:
        return Priority(priority).name.lower()
    except ValueError:
        return "operator"
