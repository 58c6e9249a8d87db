"""``wb signal-profile reseed``: mark many highlights stale on purpose, at a bounded rate.

Used after a prompt or model change, and by the panel's bulk regenerate (a selection of
the profile list, ``worker.services.profile_list``). Only rows with generated content are
reseeded (``RESEEDABLE``). Rows are taken in user-id order in chunks and each
chunk is committed before the next, paced so that at most ``rate`` regeneration requests
per second reach the generators; an interrupted reseed can simply be run again with
``--after`` the last user id it printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import ColumnElement, and_, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.scheduling import IMMEDIATE, Priority, RegenPolicy
from worker.domain.values import StaleOutcome, StaleReason, utcnow
from worker.services import scheduler
from worker.services.audit import audited
from worker.services.checks import check_actor
from worker.services.cost_preview import CostPreview, preview
from worker.services.locking import lock_rows
from worker.services.staleness import StaleMark, is_queued, mark_stale_row
from worker.storage.models import HighlightRow as H

# What a reseed may mark: rows with generated content (a first generation is not a reseed).
RESEEDABLE = H.generated_at.is_not(None)


class Selection(Protocol):
    """Which rows to reseed, as a condition on ``user_profile_highlights``."""

    def condition(self) -> ColumnElement[bool]: ...


@dataclass
class ReseedSelection:
    user_ids: Sequence[int] | None = None
    llm_model: str | None = None
    source_group: str | None = None

    def condition(self) -> ColumnElement[bool]:
        clauses: list[ColumnElement[bool]] = [true()]
        if self.user_ids is not None:
            clauses.append(H.user_id.in_(list(self.user_ids)))
        if self.llm_model is not None:
            clauses.append(H.llm_model == self.llm_model)
        if self.source_group is not None:
            clauses.append(H.source_group == self.source_group)
        return and_(*clauses)


@dataclass
class ReseedResult:
    marked: int = 0
    requested: int = 0
    queued: int = 0  # of which queued with the scheduler (published within its budget)
    last_user_id: int | None = None
    chunks: list[float] = field(default_factory=list)


@dataclass
class Reseeder:
    sessions: async_sessionmaker[AsyncSession]
    actor: str
    rate: float
    dry_run: bool = False
    monotonic: Callable[[], float] = time.monotonic
    on_chunk: Callable[[ReseedResult], None] | None = None
    action: str = "reseed"  # the audit action (and the requests' trigger)
    note: str | None = None  # the audit reason
    policy: RegenPolicy = IMMEDIATE  # queued (within the budget) or requested at once

    def __post_init__(self) -> None:
        self.actor = check_actor(self.actor)
        if not self.rate > 0:
            raise ValueError("rate must be positive")

    async def count(self, selection: Selection) -> int:
        """How many rows ``run`` would mark now (what a confirmation shows)."""
        async with self.sessions() as session:
            stmt = select(func.count()).where(RESEEDABLE, selection.condition())
            return int(await session.scalar(stmt) or 0)

    async def preview(self, selection: Selection) -> CostPreview:
        """What regenerating the rows ``run`` would mark now is likely to cost."""
        async with self.sessions() as session:
            where = and_(RESEEDABLE, selection.condition())
            return await preview(session, where, utcnow(), self.policy.tokens_estimate)

    async def run(self, selection: Selection, after: int = 0) -> ReseedResult:
        result = ReseedResult()
        chunk = max(1, min(500, int(self.rate)))
        started = self.monotonic()
        while True:
            async with self.sessions.begin() as session:
                ids = list(
                    (
                        await session.scalars(
                            select(H.user_id)
                            .where(H.user_id > after, RESEEDABLE, selection.condition())
                            .order_by(H.user_id)
                            .limit(chunk)
                        )
                    ).all()
                )
                if not ids:
                    return result
                await self._mark(session, ids, result)
                if self.dry_run:
                    await session.rollback()
            after = result.last_user_id = ids[-1]
            result.chunks.append(self.monotonic() - started)
            if self.on_chunk is not None:
                self.on_chunk(result)
            # Pace: the next chunk may start only when the rate allows what was sent so far.
            ahead = result.marked / self.rate - (self.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def _mark(self, session: AsyncSession, ids: list[int], result: ReseedResult) -> None:
        now = utcnow()
        rows = await lock_rows(session, ids)
        sink = await scheduler.sink_in_force(session, self.policy)
        for user_id in ids:
            row = rows[user_id]
            with audited(
                session, row, actor=self.actor, action=self.action, reason=self.note, now=now
            ):
                mark = StaleMark.stale(StaleReason.MANUAL, now, self.action, Priority.RESEED)
                outcome = mark_stale_row(sink, row, mark)
            result.marked += 1
            result.requested += outcome is StaleOutcome.REQUESTED
            result.queued += outcome is StaleOutcome.REQUESTED and is_queued(rows[user_id])
