"""The highlight store's façade: one operation on one profile's highlight, one transaction.

The rules live in their own modules and work inside a transaction their caller owns (the
pipeline applies a whole batch of events in one): row locking (``locking``), the stale
rules (``staleness``), the result rules (``results``), the audit trail (``audit``) and the
checks on operator input (``checks``). ``HighlightStore`` runs each operation in a
transaction of its own for callers that do one thing at a time (CLI, admin panel, tests):
it checks the input, locks the row, applies the rule and audits an operator's change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.errors import InvalidInput, UnknownUser
from worker.domain.scheduling import IMMEDIATE, Priority, RegenPolicy
from worker.domain.values import (
    GeneratedHighlight,
    Highlight,
    RegenReason,
    StaleOutcome,
    StaleReason,
    UpsertMeta,
    UpsertOutcome,
    utcnow,
)
from worker.services import scheduler
from worker.services.audit import audited
from worker.services.checks import check_actor, check_override_text, check_user_id
from worker.services.locking import lock_or_create_row, lock_row
from worker.services.results import upsert_auto_row
from worker.services.staleness import (
    StaleMark,
    enqueue,
    is_queued,
    mark_stale_row,
    request_if_unanswered,
)
from worker.storage.db_clock import BudgetClock, database_now
from worker.storage.models import HighlightRow

Clock = Callable[[], datetime]

log = logging.getLogger(__name__)


@dataclass
class HighlightStore:
    """Transaction-per-operation façade over the rules; the marks and requests it makes
    follow ``policy`` (the worker's and the CLI's come from their settings)."""

    sessions: async_sessionmaker[AsyncSession]
    ttl: timedelta = timedelta(days=7)
    clock: Clock = utcnow
    policy: RegenPolicy = IMMEDIATE
    # The pause's clock: the database's, as the scheduler step's (``storage.db_clock``).
    budget_clock: BudgetClock = database_now

    async def get(self, user_id: int) -> Highlight | None:
        check_user_id(user_id)
        async with self.sessions() as session:
            row = await session.get(HighlightRow, user_id)
            return Highlight.from_row(row) if row is not None else None

    async def upsert_auto(
        self, payload: GeneratedHighlight, snapshot_hash: str, meta: UpsertMeta | None = None
    ) -> Highlight:
        """Store a generated result; raises ``SupersededResult`` / ``SnapshotConflict``."""
        highlight, _ = await self.upsert_auto_with_outcome(payload, snapshot_hash, meta)
        return highlight

    async def upsert_auto_with_outcome(
        self, payload: GeneratedHighlight, snapshot_hash: str, meta: UpsertMeta | None = None
    ) -> tuple[Highlight, UpsertOutcome]:
        async with self.sessions.begin() as session:
            row, outcome = await upsert_auto_row(
                session, payload, snapshot_hash, meta or UpsertMeta(), self.clock(), self.ttl
            )
            return Highlight.from_row(row), outcome

    async def mark_stale(
        self,
        user_id: int,
        reason: StaleReason | str,
        actor: str | None = None,
        note: str | None = None,
    ) -> tuple[Highlight, StaleOutcome]:
        """Mark an existing row stale; idempotent for a stale row except for the generation bump."""
        check_user_id(user_id)
        try:
            stale_reason = StaleReason(reason)
        except ValueError:
            raise InvalidInput(f"unknown stale reason {reason!r}") from None
        async with self.sessions.begin() as session:
            now = self.clock()
            row = await lock_row(session, user_id)
            if row is None:
                raise UnknownUser(user_id)
            sink = await scheduler.sink_in_force(session, self.policy)
            if actor is None:
                outcome = mark_stale_row(sink, row, StaleMark.stale(stale_reason, now))
            else:
                with audited(
                    session,
                    row,
                    actor=check_actor(actor),
                    action="mark_stale",
                    reason=note,
                    now=now,
                ):
                    mark = StaleMark.stale(stale_reason, now, _trigger(actor))
                    outcome = mark_stale_row(sink, row, mark)
            return Highlight.from_row(row), outcome

    async def regenerate(self, user_id: int, actor: str, note: str | None = None) -> Highlight:
        """An operator asks for a new generation now: a fresh request replaces any pending one.

        Works under an override lock too (the auto fields keep updating underneath).
        """
        check_user_id(user_id)
        actor = check_actor(actor)
        async with self.sessions.begin() as session:
            now = self.clock()
            row = await lock_or_create_row(session, user_id, now)
            sink = await scheduler.sink_in_force(session, self.policy)
            with audited(session, row, actor=actor, action="regenerate", reason=note, now=now):
                row.generation += 1
                row.covered_fingerprint = None  # an operator's request is never skipped
                if not row.is_stale:
                    row.is_stale, row.stale_since = True, now
                row.stale_reason = (
                    StaleReason.MANUAL if row.generated_at is not None else StaleReason.MISSING
                ).value
                if not is_queued(row):  # a new request replaces a pending one
                    row.regen_request_id = None
                mark = StaleMark(RegenReason.MANUAL, now, _trigger(actor), Priority.OPERATOR)
                enqueue(sink, row, mark)
            return Highlight.from_row(row)

    async def pause_regeneration(self, until: datetime | None, actor: str) -> datetime | None:
        """Stop every worker releasing queued requests until ``until`` (None: resume now),
        e.g. while the generators are down; requests keep queueing, none is dropped.
        Returns the pause in force. Logged with the actor (it concerns no one profile)."""
        actor = check_actor(actor)
        async with self.sessions.begin() as session:
            now = await self.budget_clock(session)
            pause = await scheduler.pause(session, until, now, self.policy)
        log.warning("regeneration %s by %s", f"paused until {pause}" if pause else "resumed", actor)
        return pause

    async def set_manual_override(
        self, user_id: int, text: str, actor: str, note: str | None = None
    ) -> Highlight:
        """Lock what is served to ``text``; creates the row when the user has no highlight yet."""
        check_user_id(user_id)
        text = check_override_text(text)
        actor = check_actor(actor)
        async with self.sessions.begin() as session:
            now = self.clock()
            row = await lock_or_create_row(session, user_id, now)
            if row.manual_override and row.override_text == text:
                return Highlight.from_row(row)
            with audited(session, row, actor=actor, action="set_override", reason=note, now=now):
                row.manual_override, row.override_text = True, text
                row.override_actor, row.override_set_at, row.updated_at = actor, now, now
            return Highlight.from_row(row)

    async def clear_manual_override(
        self, user_id: int, actor: str, note: str | None = None
    ) -> Highlight:
        """Unlock; a row that went stale under the lock gets its regeneration now."""
        check_user_id(user_id)
        actor = check_actor(actor)
        async with self.sessions.begin() as session:
            now = self.clock()
            row = await lock_row(session, user_id)
            if row is None:
                raise UnknownUser(user_id)
            if not row.manual_override:
                return Highlight.from_row(row)
            sink = await scheduler.sink_in_force(session, self.policy)
            with audited(session, row, actor=actor, action="clear_override", reason=note, now=now):
                row.manual_override, row.override_text = False, None
                row.override_actor, row.override_set_at, row.updated_at = actor, now, now
                request_if_unanswered(sink, row, now, _trigger(actor))
            return Highlight.from_row(row)


def _trigger(actor: str | None) -> str | None:
    return f"operator:{actor}" if actor else None
