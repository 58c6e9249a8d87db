"""``wb signal-profile freshness-report``: how fresh is the store, as a deploy gate or page.

Levels: ``ok`` < ``warn`` < ``error``, from the oldest stale highlight's age and the share
of stale rows, each against an optional warn and error threshold. "Stale" is what the
panel, the gauges and clients call stale (``worker.domain.freshness``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.freshness import FreshnessState
from worker.services import outbox, scheduler
from worker.services.overview import current_figures
from worker.services.spend import spend_json, spend_today
from worker.storage.database import snapshot


class Level(IntEnum):
    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class Thresholds:
    warn_after: timedelta | None = None
    error_after: timedelta | None = None
    warn_share: float | None = None
    error_share: float | None = None


async def gather(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """The gate's figures: rows by state and the stale share and oldest stale age by the one
    freshness rule (``overview.current_figures``, what the panel and the gauges show), so
    a row past ``stale_after`` counts as stale before a sweep marks it, and a locked row
    does not; ``stale`` is the stale share's numerator (stale and expired rows). Read in
    the caller's transaction (``read`` opens one snapshot for it)."""
    figures = await current_figures(session, now)
    counts = figures.counts
    oldest = figures.oldest_stale_at
    oldest_queued = figures.oldest_queued_at
    paused = await scheduler.paused_until(session, now)
    return {
        "total": figures.total,
        "stale": figures.stale,
        "overridden": counts[FreshnessState.OVERRIDDEN.value],
        "missing": counts[FreshnessState.MISSING.value],
        "states": counts,
        "pending_regenerations": figures.pending,
        "outbox_backlog": await outbox.backlog(session),
        "regen_queue_depth": sum(figures.queued.values()),
        "regen_queue_oldest_wait_s": round((now - oldest_queued).total_seconds(), 1)
        if oldest_queued
        else 0.0,
        "regen_paused_until": paused.isoformat() if paused else None,
        "stale_share": round(figures.stale_share, 4),
        "oldest_stale_age_s": round((now - oldest).total_seconds(), 1) if oldest else 0.0,
        "spend_today_utc": spend_json(await spend_today(session, now)),
    }


async def read(sessions: async_sessionmaker[AsyncSession], now: datetime) -> dict[str, Any]:
    """``gather`` in one snapshot: every figure of the report is of the same moment."""
    async with snapshot(sessions) as session:
        return await gather(session, now)


def judge(figures: dict[str, Any], limits: Thresholds) -> tuple[Level, list[str]]:
    """The level and the reasons, one per crossed threshold."""
    age = timedelta(seconds=figures["oldest_stale_age_s"])
    share = figures["stale_share"]
    checks = [
        (
            Level.ERROR,
            limits.error_after is not None and age > limits.error_after,
            f"oldest stale highlight is {age} old (error after {limits.error_after})",
        ),
        (
            Level.ERROR,
            limits.error_share is not None and share > limits.error_share,
            f"stale share {share:.2%} > {limits.error_share}",
        ),
        (
            Level.WARN,
            limits.warn_after is not None and age > limits.warn_after,
            f"oldest stale highlight is {age} old (warn after {limits.warn_after})",
        ),
        (
            Level.WARN,
            limits.warn_share is not None and share > limits.warn_share,
            f"stale share {share:.2%} > {limits.warn_share}",
        ),
    ]
    crossed = [(level, why) for level, hit, why in checks if hit]
    level = max((lvl for lvl, _ in crossed), default=Level.OK)
    return level, [why for _, why in crossed]
