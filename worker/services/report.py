"""``wb signal-profile freshness-report``: how fresh is the store, as a deploy gate or page.

Levels: ``ok`` < ``warn`` < ``error``, from the oldest stale highlight's age and the share
of stale rows, each against an optional warn and error threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.services import outbox, scheduler
from worker.storage.models import HighlightRow as H


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
    total = int(await session.scalar(select(func.count()).select_from(H)) or 0)
    stale = int(await session.scalar(select(func.count()).where(H.is_stale)) or 0)
    overridden = int(await session.scalar(select(func.count()).where(H.manual_override)) or 0)
    missing = int(await session.scalar(select(func.count()).where(H.generated_at.is_(None))) or 0)
    pending = int(
        await session.scalar(select(func.count()).where(H.regen_request_id.is_not(None))) or 0
    )
    oldest = await session.scalar(select(func.min(H.stale_since)).where(H.is_stale))
    depths = await scheduler.queue_depths(session)
    oldest_queued = await scheduler.oldest_queued(session)
    paused = await scheduler.paused_until(session, now)
    return {
        "total": total,
        "stale": stale,
        "overridden": overridden,
        "missing": missing,
        "pending_regenerations": pending,
        "outbox_backlog": await outbox.backlog(session),
        "regen_queue_depth": sum(depths.values()),
        "regen_queue_oldest_wait_s": round((now - oldest_queued).total_seconds(), 1)
        if oldest_queued
        else 0.0,
        "regen_paused_until": paused.isoformat() if paused else None,
        "stale_share": round(stale / total, 4) if total else 0.0,
        "oldest_stale_age_s": round((now - oldest).total_seconds(), 1) if oldest else 0.0,
    }


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
