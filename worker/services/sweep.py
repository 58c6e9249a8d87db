"""Freshness scans: the periodic sweep and the on-demand ``freshness-scan``.

Both walk ``user_profile_highlights`` by user id in keyset-paginated chunks, one short
transaction per chunk (rows locked in id order), so a scan over millions of rows never
holds locks for long and can stop and resume at any chunk boundary. The on-demand scan
also compares recorded Signal activity with ``generated_at`` (catching comments that
arrived while no worker ran) and keeps a checkpoint so an interrupted run resumes.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import ColumnElement

from worker.domain.cost import Lane
from worker.domain.freshness import expiry_due
from worker.domain.scheduling import IMMEDIATE, Priority, RegenPolicy, priority_for
from worker.domain.snapshot import UNCHANGED, behind_inputs
from worker.domain.values import RegenReason, StaleOutcome, StaleReason, utcnow
from worker.services import scheduler
from worker.services.comments import COMMENT_REASONS
from worker.services.expiry_sql import EXPIRE_CHUNK, EXPIRE_QUEUE_CHUNK
from worker.services.locking import lock_or_create_row, lock_rows
from worker.services.outbox import REGEN_BATCH_STREAM, OutboxSink
from worker.services.staleness import (
    StaleMark,
    enqueue,
    is_queued,
    mark_stale_row,
    request_if_unanswered,
    skip_if_unchanged,
)
from worker.storage.database import is_postgresql
from worker.storage.freshness import expiry_due_clause
from worker.storage.models import HighlightRow, ScanCheckpointRow, SignalActivityRow

H = HighlightRow
A = SignalActivityRow


@dataclass
class ScanOptions:
    now: datetime
    retry_after: timedelta
    policy: RegenPolicy  # the scan's marks and retries: requested at once, or queued
    include_activity: bool = False
    # False once the expired rows were marked set-based (PostgreSQL's sweep): the remaining
    # conditions are all indexed, so the chunk scan no longer walks the whole table.
    include_expired: bool = True


@dataclass
class ScanTotals:
    """Counts of what a scan did, by action (``expired``, ``retried``, ``new_comment`` ...)."""

    scanned: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "actions": dict(self.actions),
            "requests": dict(self.requests),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanTotals:
        return cls(
            int(data.get("scanned", 0)),
            Counter(data.get("actions", {})),
            Counter(data.get("requests", {})),
        )

    def add(self, other: ScanTotals) -> None:
        self.scanned += other.scanned
        self.actions.update(other.actions)
        self.requests.update(other.requests)


def _stuck(opts: ScanOptions) -> ColumnElement[bool]:
    """SQL of ``_retry_due`` for rows with a pending request and no override lock."""
    batch = H.regen_request_lane == Lane.BATCH.value
    return and_(
        H.manual_override == false(),
        H.regen_request_id.is_not(None),
        or_(
            and_(batch, H.regen_requested_at <= opts.now - opts.policy.batch_deadline),
            and_(
                or_(H.regen_request_lane.is_(None), ~batch),
                H.regen_requested_at <= opts.now - opts.retry_after,
            ),
        ),
    )


def _retry_due(row: HighlightRow, opts: ScanOptions) -> bool:
    """A pending request is stuck once ``WB_REGEN_RETRY_AFTER`` passed without its answer;
    a batch-lane request only after its ``respond_by`` (``WB_REGEN_BATCH_DEADLINE``): a
    provider's batch tier may take hours, and asking again would pay twice."""
    requested = row.regen_requested_at
    if requested is None:
        return False
    waited = (
        opts.policy.batch_deadline if row.regen_request_lane == Lane.BATCH else opts.retry_after
    )
    return requested <= opts.now - waited


def _retry_priority(row: HighlightRow) -> int:
    """A retry stays in its request's lane: a batch request's retry is an expiry's or a
    reseed's, whatever its stale reason says (a reseed's is ``manual``)."""
    if row.regen_request_lane == Lane.BATCH:
        return Priority.EXPIRED if row.stale_reason == StaleReason.EXPIRED else Priority.RESEED
    return priority_for(row.stale_reason)


def _unrequested() -> ColumnElement[bool]:
    return and_(H.is_stale == true(), H.manual_override == false(), H.regen_request_id.is_(None))


def _behind_activity() -> ColumnElement[bool]:
    """SQL of ``_behind``: input changes the highlight does not cover, by the snapshot
    where its coverage is known; else activity newer than the highlight (a deletion counts
    only if newer too: the scan catches missed events, and re-marking an old deletion
    would regenerate forever)."""
    return or_(
        and_(H.covered_version.is_not(None), H.input_version > H.covered_version),
        and_(
            H.covered_version.is_(None),
            A.last_comment_at.is_not(None),
            or_(H.generated_at.is_(None), A.last_comment_at > H.generated_at),
        ),
    )


def _behind(row: HighlightRow, activity: A | None) -> bool:
    """The scans' inclusion rule (``worker.domain.snapshot.behind_inputs``), the same as a
    result's: a highlight covering a known input version is behind only if the inputs
    moved on, whatever the timestamps; one of unknown coverage, by recorded activity."""
    by_snapshot = behind_inputs(row.covered_version, row.input_version)
    if by_snapshot is not None:
        return by_snapshot
    last = activity.last_comment_at if activity is not None else None
    return last is not None and (row.generated_at is None or last > row.generated_at)


async def _candidate_ids(
    session: AsyncSession, after: int, limit: int, opts: ScanOptions
) -> list[int]:
    conditions = [_stuck(opts), _unrequested()]
    if opts.include_expired:
        conditions.append(expiry_due_clause(opts.now))
    stmt = select(H.user_id)
    if opts.include_activity:
        stmt = stmt.outerjoin(A, A.user_id == H.user_id)
        conditions.append(and_(H.is_stale == false(), _behind_activity()))
    stmt = stmt.where(H.user_id > after, or_(*conditions)).order_by(H.user_id).limit(limit)
    return list((await session.scalars(stmt)).all())


def _act(
    sink: OutboxSink,
    row: HighlightRow,
    activity: A | None,
    opts: ScanOptions,
    totals: ScanTotals,
) -> None:
    """Re-check one locked row (it may have changed since it was selected) and act on it."""
    now = opts.now
    if expiry_due(row.is_stale, row.stale_after, now):
        _mark(sink, row, StaleReason.EXPIRED, now, totals)
    elif opts.include_activity and not row.is_stale and _behind(row, activity):
        last_type = activity.last_comment_type if activity is not None else None
        reason = COMMENT_REASONS.get(last_type or "", StaleReason.NEW_COMMENT)
        _mark(sink, row, StaleReason.MISSING if row.generated_at is None else reason, now, totals)
    elif _would_ask(row, opts) and skip_if_unchanged(row, now):
        totals.actions[UNCHANGED] += 1  # a request (again) would buy nothing
    elif not row.manual_override and row.regen_request_id is not None and _retry_due(row, opts):
        if not is_queued(row):
            retry = StaleMark(RegenReason.RETRY, now, "sweep", _retry_priority(row))
            enqueue(sink, row, retry)
            totals.actions["retried"] += 1
            totals.requests[RegenReason.RETRY.value] += 1
    elif request_if_unanswered(sink, row, now, "sweep"):
        totals.actions["requested"] += 1
        totals.requests[row.stale_reason or "manual"] += 1


def _would_ask(row: HighlightRow, opts: ScanOptions) -> bool:
    """The row is about to be asked for (again) by the scan: a stuck request, or a stale
    row without one (a queued request is the scheduler's to skip or publish)."""
    if row.manual_override or is_queued(row):
        return False
    if row.regen_request_id is None:
        return row.is_stale
    return _retry_due(row, opts)


def _mark(
    sink: OutboxSink, row: HighlightRow, reason: StaleReason, now: datetime, totals: ScanTotals
) -> None:
    since = row.stale_after if reason is StaleReason.EXPIRED else None
    outcome = mark_stale_row(sink, row, StaleMark.stale(reason, now, "sweep", first_change=since))
    totals.actions[reason.value] += 1
    if outcome is StaleOutcome.REQUESTED:
        totals.requests[reason.value] += 1


async def scan_chunk(
    session: AsyncSession, after: int, limit: int, opts: ScanOptions
) -> tuple[int | None, ScanTotals]:
    """One chunk: returns the last user id looked at (None when done) and what was done."""
    totals = ScanTotals()
    ids = await _candidate_ids(session, after, limit, opts)
    if not ids:
        return None, totals
    rows = await lock_rows(session, ids)
    activities: dict[int, A] = {}
    if opts.include_activity:
        found = await session.scalars(select(A).where(A.user_id.in_(ids)))
        activities = {a.user_id: a for a in found}
    sink = await scheduler.sink_in_force(session, opts.policy)
    for user_id in ids:
        _act(sink, rows[user_id], activities.get(user_id), opts, totals)
    totals.scanned = len(ids)
    return ids[-1], totals


async def missing_chunk(
    session: AsyncSession, after: int, limit: int, opts: ScanOptions
) -> tuple[int | None, ScanTotals]:
    """Users with recorded comments but no highlight row at all: ask for a first one."""
    totals = ScanTotals()
    stmt = (
        select(A.user_id)
        .outerjoin(H, H.user_id == A.user_id)
        .where(A.user_id > after, H.user_id.is_(None))
        .order_by(A.user_id)
        .limit(limit)
    )
    ids = list((await session.scalars(stmt)).all())
    if not ids:
        return None, totals
    sink = await scheduler.sink_in_force(session, opts.policy)
    for user_id in ids:
        row = await lock_or_create_row(session, user_id, opts.now)
        if row.generated_at is None and not row.is_stale:
            _mark(sink, row, StaleReason.MISSING, opts.now, totals)
    totals.scanned = len(ids)
    return ids[-1], totals


@dataclass
class Sweeper:
    """The periodic agent's work: one full pass over the table, chunk by chunk."""

    sessions: async_sessionmaker[AsyncSession]
    retry_after: timedelta
    chunk_size: int = 1000
    clock: Callable[[], datetime] = utcnow
    policy: RegenPolicy = IMMEDIATE

    async def run(self) -> ScanTotals:
        totals = ScanTotals()
        opts = ScanOptions(now=self.clock(), retry_after=self.retry_after, policy=self.policy)
        if is_postgresql(self.sessions):
            totals.add(await self._expire_set_based(opts.now))
            opts.include_expired = False
        after: int | None = 0
        while after is not None:
            async with self.sessions.begin() as session:
                after, chunk = await scan_chunk(session, after, self.chunk_size, opts)
            totals.add(chunk)
        return totals

    async def _expire_set_based(self, now: datetime) -> ScanTotals:
        """PostgreSQL: expire rows a chunk per statement (mark + outbox rows in one go)."""
        totals = ScanTotals()
        after = 0
        while True:
            params: dict[str, object] = {"after": after, "now": now, "limit": self.chunk_size}
            async with self.sessions.begin() as session:
                statement = EXPIRE_QUEUE_CHUNK
                if (await scheduler.policy_in_force(session, self.policy)).immediate:
                    statement = EXPIRE_CHUNK
                    params.update(
                        requested_at=now.isoformat(),
                        respond_by=(now + self.policy.batch_deadline).isoformat(),
                        stream=REGEN_BATCH_STREAM,  # an expiry is in the batch lane
                        ids=secrets.token_hex(8),
                    )
                last, marked, requested = (await session.execute(statement, params)).one()
            if not marked:
                return totals
            totals.scanned += marked
            totals.actions[StaleReason.EXPIRED.value] += marked
            if requested:
                totals.requests[StaleReason.EXPIRED.value] += requested
            after = last


PHASES = ("highlights", "missing")


@dataclass
class FreshnessScan:
    """``wb signal-profile freshness-scan``: the sweep plus activity checks, resumable.

    The checkpoint row is written in the same transaction as each chunk's changes, so
    after a crash the scan resumes exactly after the last chunk that committed.
    """

    sessions: async_sessionmaker[AsyncSession]
    retry_after: timedelta
    batch_size: int = 1000
    dry_run: bool = False
    name: str = "freshness-scan"
    clock: Callable[[], datetime] = utcnow
    on_chunk: Callable[[ScanTotals, str], None] | None = None
    policy: RegenPolicy = IMMEDIATE

    async def run(self, restart: bool = False) -> tuple[ScanTotals, bool]:
        """Run to the end; returns the totals (including a resumed run's earlier part) and
        whether this run resumed an interrupted one."""
        checkpoint = None if restart or self.dry_run else await self._load()
        resumed = checkpoint is not None
        totals = ScanTotals.from_dict(checkpoint.stats) if checkpoint else ScanTotals()
        phase = checkpoint.stats.get("phase", PHASES[0]) if checkpoint else PHASES[0]
        after: int | None = (checkpoint.last_user_id or 0) if checkpoint else 0
        if phase not in PHASES:  # "done" but not finished: only the closing write was lost
            phase, after = PHASES[-1], None
        opts = ScanOptions(self.clock(), self.retry_after, self.policy, include_activity=True)
        started = checkpoint.started_at if checkpoint else opts.now
        for current in PHASES[PHASES.index(phase) :]:
            chunk_fn = scan_chunk if current == "highlights" else missing_chunk
            next_after: int | None = after
            after = 0
            while next_after is not None:
                async with self.sessions.begin() as session:
                    next_after, chunk = await chunk_fn(session, next_after, self.batch_size, opts)
                    totals.add(chunk)
                    if self.dry_run:
                        await session.rollback()
                    else:
                        await self._save(session, current, next_after, totals, started)
                if self.on_chunk is not None:
                    self.on_chunk(chunk, current)
        if not self.dry_run:
            await self._finish(totals, started)
        return totals, resumed

    async def _load(self) -> ScanCheckpointRow | None:
        async with self.sessions() as session:
            row = await session.get(ScanCheckpointRow, self.name)
            return row if row is not None and row.finished_at is None else None

    async def _save(
        self,
        session: AsyncSession,
        phase: str,
        after: int | None,
        totals: ScanTotals,
        started: datetime,
    ) -> None:
        if after is None:  # this phase is complete: resume at the start of the next one
            following = PHASES.index(phase) + 1
            phase, after = (PHASES[following] if following < len(PHASES) else "done"), 0
        row = await session.get(ScanCheckpointRow, self.name, with_for_update=True)
        stats = {**totals.as_dict(), "phase": phase}
        now = self.clock()
        if row is None:
            session.add(
                ScanCheckpointRow(
                    name=self.name,
                    last_user_id=after,
                    stats=stats,
                    started_at=started,
                    updated_at=now,
                )
            )
            return
        if row.finished_at is not None or row.started_at != started:
            row.started_at, row.finished_at = started, None
        row.last_user_id, row.stats, row.updated_at = after, stats, now

    async def _finish(self, totals: ScanTotals, started: datetime) -> None:
        async with self.sessions.begin() as session:
            row = await session.get(ScanCheckpointRow, self.name, with_for_update=True)
            now = self.clock()
            if row is None:
                row = ScanCheckpointRow(name=self.name, started_at=started, stats={})
                session.add(row)
            row.last_user_id, row.stats = None, {**totals.as_dict(), "phase": "done"}
            row.updated_at = row.finished_at = now
