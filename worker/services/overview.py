"""The operator's overview: how fresh the store is, at a glance (the panel's front page).

Figures by state come from ``state_column`` (the one freshness rule). What the database
does not hold by itself is recorded as it happens, in three small tables the sweep prunes
after ``WB_HISTORY_RETENTION``:

- ``freshness_samples``: the figures, sampled by the leader's gauge timer, at most one
  sample per ``WB_HISTORY_INTERVAL`` (the 24-hour charts);
- ``fresh_transitions``: written by the store in the transaction where a result makes a
  stale row fresh (``worker.services.results``): time-to-fresh percentiles;
- ``dead_letter_counts``: each worker's in-process dead-letter counts, written by its gauge
  timer (dead letters in the last hour, by stream).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.freshness import STALE_STATES, FreshnessState
from worker.domain.wire import InputStream
from worker.services.spend import SpendReport, prune_spend, spend_json, spend_report
from worker.storage.database import snapshot
from worker.storage.freshness import (
    expiry_due_clause,
    stale_since_column,
    state_column,
)
from worker.storage.models import (
    DeadLetterCountRow,
    FreshnessSampleRow,
    FreshTransitionRow,
    HighlightRow,
)

H = HighlightRow
STATES = tuple(s.value for s in FreshnessState)
PERCENTILES = (0.5, 0.99)
WINDOWS = {"last hour": timedelta(hours=1), "last day": timedelta(days=1)}
CHART_SPAN = timedelta(hours=24)
OLDEST_STALE_SHOWN = 5


@dataclass(frozen=True)
class Figures:
    """The store's freshness now: rows by state, pending requests and the oldest waits."""

    counts: dict[str, int]
    pending: int
    oldest_pending_at: datetime | None
    oldest_stale_at: datetime | None
    # The scheduler's queue by priority: how many wait, and since when the oldest has.
    queued: dict[int, int] = field(default_factory=dict)
    queued_since: dict[int, datetime] = field(default_factory=dict)

    @property
    def oldest_queued_at(self) -> datetime | None:
        return min(self.queued_since.values(), default=None)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def stale(self) -> int:
        return sum(self.counts[s] for s in STALE_STATES)

    @property
    def stale_share(self) -> float:
        """The one definition of "stale share": rows in ``STALE_STATES``, of all rows."""
        return self.stale / self.total if self.total else 0.0


async def current_figures(session: AsyncSession, now: datetime) -> Figures:
    """Rows by state, since when the stalest has been stale, the pending requests and the
    scheduler's queue, in one pass over the table (one statement: one snapshot, and one
    scan where four separate ones cost the database about 65 ms a refresh at 50,000 rows,
    which the comment stream felt): by the one freshness rule, so a row past
    ``stale_after`` counts as expired before any sweep marks it and a locked (overridden)
    or empty (missing) row is never stale, whatever its ``is_stale``. The deploy gate, the
    gauges and the panel all read these figures."""
    counts = dict.fromkeys(STATES, 0)
    state = state_column(now).label("state")
    requested = H.regen_request_id.is_not(None)
    grouped = await session.execute(
        select(
            state,
            H.regen_priority,
            func.count(),
            func.min(stale_since_column()),
            func.count(H.regen_queued_at),
            func.min(H.regen_queued_at),
            func.count(H.regen_request_id),
            func.min(H.regen_requested_at).filter(requested),
        ).group_by(state, H.regen_priority)
    )
    stale_since: list[datetime] = []
    pending, pending_since = 0, []
    queued: Counter[int] = Counter()
    queued_since: dict[int, datetime] = {}
    for key, priority, n, first, waiting, waiting_since, asked, asked_at in grouped.all():
        counts[key] += n
        if key in STALE_STATES and first is not None:
            stale_since.append(first)
        pending += asked
        if asked_at is not None:
            pending_since.append(asked_at)
        if priority is not None and waiting_since is not None:  # none queued: no minimum
            queued[int(priority)] += waiting
            earlier = queued_since.get(int(priority), waiting_since)
            queued_since[int(priority)] = min(waiting_since, earlier)
    return Figures(
        counts,
        pending,
        min(pending_since, default=None),
        min(stale_since, default=None),
        dict(queued),
        queued_since,
    )


async def record_sample(
    session: AsyncSession, figures: Figures, now: datetime, every: timedelta
) -> bool:
    """Add a history sample unless one was taken less than ``every`` ago (by any worker;
    a tenth of slack so a timer that fires every ``every`` exactly is not skipped)."""
    last = await session.scalar(select(func.max(FreshnessSampleRow.sampled_at)))
    if last is not None and now - last < every * 0.9:
        return False
    c = figures.counts
    session.add(
        FreshnessSampleRow(
            sampled_at=now,
            total=figures.total,
            fresh=c["fresh"],
            stale=c["stale"],
            expired=c["expired"],
            overridden=c["overridden"],
            missing=c["missing"],
            pending=figures.pending,
            oldest_stale_s=(now - figures.oldest_stale_at).total_seconds()
            if figures.oldest_stale_at
            else None,
        )
    )
    return True


def record_dead_letters(
    session: AsyncSession, counts: Mapping[tuple[str, str], int], now: datetime
) -> None:
    """Carry a worker's dead-letter counts (by stream and reason) to the database."""
    session.add_all(
        DeadLetterCountRow(at=now, stream=stream, reason=reason, count=n)
        for (stream, reason), n in sorted(counts.items())
        if n > 0
    )


async def prune_history(session: AsyncSession, cutoff: datetime) -> None:
    await session.execute(delete(FreshnessSampleRow).where(FreshnessSampleRow.sampled_at < cutoff))
    await session.execute(delete(FreshTransitionRow).where(FreshTransitionRow.at < cutoff))
    await session.execute(delete(DeadLetterCountRow).where(DeadLetterCountRow.at < cutoff))
    await prune_spend(session, cutoff)


@dataclass(frozen=True)
class TimeToFresh:
    """Stale -> fresh durations of one window: how many, and the nearest-rank percentiles."""

    window: str
    count: int
    percentiles: dict[float, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        ranks = {f"p{round(q * 100)}_s": v for q, v in self.percentiles.items()}
        return {"count": self.count, **ranks}


async def time_to_fresh(session: AsyncSession, since: datetime, window: str) -> TimeToFresh:
    """Nearest-rank percentiles, one indexed range and a sort per percentile: the same SQL
    on both databases (SQLite has no ``percentile_disc``)."""
    T = FreshTransitionRow
    n = int(await session.scalar(select(func.count()).where(T.at >= since)) or 0)
    values: dict[float, float | None] = {}
    for q in PERCENTILES:
        rank = max(math.ceil(q * n) - 1, 0)
        values[q] = (
            await session.scalar(
                select(T.stale_s).where(T.at >= since).order_by(T.stale_s).offset(rank).limit(1)
            )
            if n
            else None
        )
    return TimeToFresh(window, n, values)


@dataclass(frozen=True)
class StaleProfile:
    user_id: int
    stale_since: datetime | None
    stale_reason: str | None
    state: str


@dataclass(frozen=True)
class Sample:
    at: datetime
    stale_share: float
    pending: int


@dataclass(frozen=True)
class Overview:
    now: datetime
    figures: Figures
    time_to_fresh: list[TimeToFresh]
    oldest_stale: list[StaleProfile]
    dead_letters: dict[str, int]
    samples: list[Sample]
    spend: SpendReport

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values (for scripts; the panel renders the object)."""
        f = self.figures
        return {
            "counts": f.counts,
            "total": f.total,
            "stale_share": round(f.stale_share, 4),
            "pending": f.pending,
            "oldest_pending_at": f.oldest_pending_at.isoformat() if f.oldest_pending_at else None,
            "time_to_fresh": {
                t.window: {
                    "count": t.count,
                    **{f"p{int(q * 100)}": v for q, v in t.percentiles.items()},
                }
                for t in self.time_to_fresh
            },
            "dead_letters_last_hour": self.dead_letters,
            "spend": {
                "last_hour": spend_json(self.spend.hour),
                "last_day": spend_json(self.spend.day),
                "today_utc": spend_json(self.spend.today),
            },
        }


async def _oldest_stale(session: AsyncSession, now: datetime) -> list[StaleProfile]:
    """The stalest rows by the one rule, stale since ``stale_since_column``: those marked
    stale (on the staleness index) and those past ``stale_after`` no sweep has marked yet
    (on ``stale_after``'s), merged."""
    since = stale_since_column()
    columns = (H.user_id, since, H.stale_reason, state_column(now))
    stale = state_column(now).in_(STALE_STATES)
    marked = (
        select(*columns)
        .where(H.is_stale == true(), stale)
        .order_by(H.stale_since, H.user_id)
        .limit(OLDEST_STALE_SHOWN)
    )
    unswept = (
        select(*columns)
        .where(expiry_due_clause(now), stale)
        .order_by(H.stale_after, H.user_id)
        .limit(OLDEST_STALE_SHOWN)
    )
    found = [
        StaleProfile(u, at, reason, state)
        for query in (marked, unswept)
        for u, at, reason, state in (await session.execute(query)).all()
    ]
    found.sort(key=lambda p: (p.stale_since is None, p.stale_since or now, p.user_id))
    return found[:OLDEST_STALE_SHOWN]


async def _dead_letters(session: AsyncSession, since: datetime) -> dict[str, int]:
    D = DeadLetterCountRow
    counts = dict.fromkeys((s.value for s in InputStream), 0)
    rows = await session.execute(
        select(D.stream, func.sum(D.count)).where(D.at >= since).group_by(D.stream)
    )
    for stream, n in rows.all():
        counts[stream] = counts.get(stream, 0) + int(n)
    return counts


async def _samples(session: AsyncSession, since: datetime) -> list[Sample]:
    S = FreshnessSampleRow
    rows = await session.execute(
        select(S.sampled_at, S.total, S.stale, S.expired, S.pending)
        .where(S.sampled_at >= since)
        .order_by(S.sampled_at)
    )
    return [
        Sample(at, (stale + expired) / total if total else 0.0, pending)
        for at, total, stale, expired, pending in rows.all()
    ]


@dataclass
class OverviewService:
    sessions: async_sessionmaker[AsyncSession]

    async def overview(self, now: datetime) -> Overview:
        """Every figure of the page from one snapshot."""
        async with snapshot(self.sessions) as session:
            return Overview(
                now=now,
                figures=await current_figures(session, now),
                time_to_fresh=[
                    await time_to_fresh(session, now - span, name) for name, span in WINDOWS.items()
                ],
                oldest_stale=await _oldest_stale(session, now),
                dead_letters=await _dead_letters(session, now - timedelta(hours=1)),
                samples=await _samples(session, now - CHART_SPAN),
                spend=await spend_report(session, now),
            )
