"""The highlight store: every rule about a ``user_profile_highlights`` row lives here.

Functions named ``*_in`` work inside a transaction the caller owns (the pipeline applies a
whole batch of events in one); ``HighlightStore`` wraps each in a transaction of its own
for callers that do one thing at a time (CLI, admin panel, tests). Rows are locked with
``SELECT ... FOR UPDATE`` before any read-modify-write, so concurrent writers on
PostgreSQL serialise per user; SQLite serialises whole write transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain import snapshot
from worker.domain.errors import InvalidInput, SnapshotConflict, SupersededResult, UnknownUser
from worker.domain.ids import is_user_id
from worker.domain.scheduling import IMMEDIATE, Priority, RegenPolicy
from worker.domain.values import (
    MAX_OVERRIDE_CHARS,
    GeneratedHighlight,
    Highlight,
    RegenReason,
    StaleOutcome,
    StaleReason,
    UpsertMeta,
    UpsertOutcome,
    check_aware,
    quote_json,
    utcnow,
    valid_text,
)
from worker.services import scheduler
from worker.services.outbox import OutboxSink, Requestable
from worker.storage.database import dialect_insert
from worker.storage.models import AuditRow, FreshTransitionRow, HighlightRow

Clock = Callable[[], datetime]

AUDITED_FIELDS = (
    "manual_override",
    "override_text",
    "is_stale",
    "stale_reason",
    "generation",
    "regen_request_id",
)

log = logging.getLogger(__name__)


def check_user_id(user_id: int) -> None:
    if not is_user_id(user_id):
        raise InvalidInput(f"user_id must be a positive 64-bit integer, got {user_id!r}")


async def lock_row(session: AsyncSession, user_id: int) -> HighlightRow | None:
    stmt = (
        select(HighlightRow)
        .where(HighlightRow.user_id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()


async def lock_or_create_row(session: AsyncSession, user_id: int, now: datetime) -> HighlightRow:
    """The locked row for ``user_id``, inserting an empty placeholder if there is none.

    ``ON CONFLICT DO NOTHING`` makes concurrent first writers converge on one row.
    """
    row = await lock_row(session, user_id)
    if row is not None:
        return row
    insert = dialect_insert(session)
    await session.execute(
        insert(HighlightRow)
        .values(user_id=user_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    row = await lock_row(session, user_id)
    assert row is not None  # inserted above or by a concurrent writer
    return row


async def create_placeholders(session: AsyncSession, user_ids: set[int], now: datetime) -> None:
    """Insert empty rows for the users that have none, in one statement."""
    if user_ids:
        await session.execute(
            dialect_insert(session)(HighlightRow).on_conflict_do_nothing(
                index_elements=["user_id"]
            ),
            [{"user_id": u, "created_at": now, "updated_at": now} for u in sorted(user_ids)],
        )


async def lock_rows(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, HighlightRow]:
    """Lock many rows in user-id order (a fixed order keeps concurrent batches deadlock-free)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    stmt = (
        select(HighlightRow)
        .where(HighlightRow.user_id.in_(ids))
        .order_by(HighlightRow.user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.user_id: row for row in (await session.scalars(stmt)).all()}


def mark_stale_row(
    sink: OutboxSink,
    row: Requestable,
    reason: StaleReason,
    now: datetime,
    trigger: str | None = None,
    priority: int | None = None,
    unseen: int = 0,
    first_change: datetime | None = None,
) -> StaleOutcome:
    """Mark a locked row stale and keep "at most one pending regeneration per user".

    Every mark bumps ``generation``, so a result computed before this mark is recognisably
    older. A request still queued absorbs further marks (settling: it is pushed back and
    takes the most urgent priority), a pending one absorbs them too (coalescing); an
    override lock keeps the row visibly stale but asks for nothing. Otherwise a request is
    queued with the scheduler (``worker.services.scheduler``), or made at once when the
    sink's policy is immediate. ``unseen`` counts the comments the change brings.
    """
    row.generation += 1
    if not row.is_stale:
        row.is_stale = True
        row.stale_since = now
    row.stale_reason = reason.value
    row.updated_at = now
    if not snapshot.input_driven(reason, trigger):  # never skipped as "unchanged"
        row.covered_fingerprint = None
    if row.manual_override:
        return StaleOutcome.OVERRIDE_LOCKED
    if scheduler.is_queued(row):
        scheduler.enqueue(sink, row, RegenReason(reason.value), now, trigger, priority, unseen)
        return StaleOutcome.SETTLED
    if row.regen_request_id is not None:
        return StaleOutcome.COALESCED
    scheduler.enqueue(
        sink, row, RegenReason(reason.value), now, trigger, priority, unseen, first_change
    )
    return StaleOutcome.REQUESTED


def _regen_reason_for(row: Requestable) -> RegenReason:
    try:
        return RegenReason(row.stale_reason or RegenReason.MANUAL.value)
    except ValueError:
        return RegenReason.MANUAL


def request_if_unanswered(
    sink: OutboxSink, row: Requestable, now: datetime, trigger: str | None = None
) -> bool:
    """Ask again for a stale, unlocked row whose pending request is gone or already answered.

    Covers: an override cleared on a stale row, and a result for an older generation that
    answered the pending request but left the row stale.
    """
    if not row.is_stale or row.manual_override or row.regen_request_id is not None:
        return False
    if scheduler.is_queued(row):
        return False
    scheduler.enqueue(sink, row, _regen_reason_for(row), now, trigger)
    return True


def validate_result(payload: GeneratedHighlight, snapshot_hash: str, now: datetime) -> None:
    if not snapshot_hash or len(snapshot_hash) > 128:
        raise InvalidInput("snapshot_hash must be 1-128 characters")
    check_aware("generated_at", payload.generated_at, now)
    check_aware("stale_after", payload.stale_after)
    if payload.stale_after is not None and payload.stale_after <= payload.generated_at:
        raise InvalidInput("stale_after must be later than generated_at")


def _write_content(
    row: HighlightRow, payload: GeneratedHighlight, snapshot_hash: str, ttl: timedelta
) -> None:
    row.bio_text = payload.bio_text
    row.proof_points_json = list(payload.proof_points)
    row.quotes_json = [quote_json(q) for q in payload.quotes]
    row.source_group = payload.source_group
    row.snapshot_hash = snapshot_hash
    row.llm_model = payload.llm_model
    row.generated_at = payload.generated_at
    row.stale_after = payload.stale_after or payload.generated_at + ttl


def judge_result(
    row: Requestable | None, payload: GeneratedHighlight, snapshot_hash: str, meta: UpsertMeta
) -> UpsertOutcome | None:
    """The store's refusals, on the locked row (ORM or plain values; None: there is no row):
    raises ``SupersededResult`` / ``SnapshotConflict``, returns DUPLICATE for a result
    already stored, None for one to apply (``settle_result``)."""
    if row is None:
        if meta.base_snapshot_hash is not None:  # there is no row, so not that snapshot
            raise SnapshotConflict(payload.user_id, meta.base_snapshot_hash, None)
        return None  # applied to a new, empty row (nothing to refuse on it)
    stored_hash, stored_at = row.snapshot_hash, row.generated_at
    if stored_hash == snapshot_hash and stored_at == payload.generated_at:
        return UpsertOutcome.DUPLICATE
    if stored_at is not None and not snapshot.supersedes(
        meta.input_version,
        row.covered_version,
        (payload.generated_at, snapshot_hash),
        (stored_at, stored_hash or ""),
    ):
        raise SupersededResult(
            payload.user_id,
            f"generated_at {payload.generated_at.isoformat()} is not newer than the stored "
            f"{stored_at.isoformat()}",
        )
    if meta.base_snapshot_hash is not None and meta.base_snapshot_hash != stored_hash:
        raise SnapshotConflict(payload.user_id, meta.base_snapshot_hash, stored_hash)
    return None


def stale_again(row: Requestable, now: datetime) -> None:
    """A result behind the inputs leaves its row stale, or makes a fresh one stale (its
    inputs changed while a highlight of unknown coverage was judged by timestamps)."""
    if not row.is_stale:
        row.is_stale, row.stale_since = True, now
        row.stale_reason = StaleReason.NEW_COMMENT.value
        row.generation += 1


def settle_result(
    row: Requestable,
    payload: GeneratedHighlight,
    snapshot_hash: str,
    meta: UpsertMeta,
    now: datetime,
    fresh: Callable[[FreshTransition], None],
) -> UpsertOutcome:
    """A judged result's freshness columns (the content's other columns are the caller's):
    the generation fence keeps a row stale that was marked after the result's base; a
    stale row made fresh is reported to ``fresh``."""
    row.snapshot_hash = snapshot_hash
    row.generated_at = payload.generated_at
    row.updated_at = now
    covers = snapshot.coverage(meta.input_version, row.input_version, row.input_fingerprint)
    row.covered_version, row.covered_fingerprint = covers.version, covers.fingerprint
    if covers.behind:  # the inputs moved on since the result's snapshot
        stale_again(row, now)
        return UpsertOutcome.APPLIED_STILL_STALE
    if meta.generation is not None and meta.generation < row.generation:
        row.covered_fingerprint = None  # marked since, not only by inputs: never skipped
        return UpsertOutcome.APPLIED_STILL_STALE
    if (transition := fresh_transition(row, now)) is not None:
        fresh(transition)
    scheduler.clear_stale(row)
    return UpsertOutcome.APPLIED


async def upsert_auto_row(
    session: AsyncSession,
    payload: GeneratedHighlight,
    snapshot_hash: str,
    meta: UpsertMeta,
    now: datetime,
    ttl: timedelta,
) -> tuple[HighlightRow, UpsertOutcome]:
    """Store a generated highlight under the five rules of the store (see README) and
    return the locked row, for callers that act on it afterwards.

    A refused result writes nothing: a placeholder row is only inserted when no row exists
    and no base snapshot is named, and such a row can only be refused if a concurrent
    writer created it first (then our insert did nothing).
    """
    validate_result(payload, snapshot_hash, now)
    row = await lock_row(session, payload.user_id)
    if row is None:
        judge_result(None, payload, snapshot_hash, meta)
        # Another writer may create the row between our look and our insert: the checks
        # below run against whatever row we end up holding the lock on.
        row = await lock_or_create_row(session, payload.user_id, now)
    if (judged := judge_result(row, payload, snapshot_hash, meta)) is not None:
        return row, judged
    _write_content(row, payload, snapshot_hash, ttl)
    transitions: list[FreshTransition] = []
    outcome = settle_result(row, payload, snapshot_hash, meta, now, transitions.append)
    session.add_all(
        FreshTransitionRow(at=now, user_id=t.user_id, stale_s=t.stale_s, wait_s=t.wait_s)
        for t in transitions
    )
    return row, outcome


@dataclass(frozen=True, slots=True)
class FreshTransition:
    """A result made a stale row fresh: how long it was stale, how long its request waited
    (the overview's time-to-fresh; written in the result's transaction)."""

    user_id: int
    stale_s: float
    wait_s: float | None


def fresh_transition(row: Requestable, now: datetime) -> FreshTransition | None:
    if not row.is_stale or row.stale_since is None:
        return None
    requested = row.regen_requested_at
    return FreshTransition(
        row.user_id,
        max((now - row.stale_since).total_seconds(), 0.0),
        max((now - requested).total_seconds(), 0.0) if requested else None,
    )


def _audit_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def snapshot_fields(row: HighlightRow) -> dict[str, Any]:
    return {name: _audit_value(getattr(row, name)) for name in AUDITED_FIELDS}


def audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    user_id: int,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str | None,
    now: datetime,
) -> None:
    """Append one audit row with the fields that changed (old -> new)."""
    diff = {
        name: {"old": before.get(name), "new": after[name]}
        for name in after
        if before.get(name) != after[name]
    }
    if not diff:  # nothing changed: nothing to attribute
        return
    session.add(
        AuditRow(
            actor=actor, action=action, user_id=user_id, reason=reason, diff=diff, created_at=now
        )
    )


@contextmanager
def audited(
    session: AsyncSession,
    row: HighlightRow,
    *,
    actor: str,
    action: str,
    reason: str | None,
    now: datetime,
) -> Iterator[None]:
    """Record what the enclosed block changes on ``row`` as one audit row by ``actor``."""
    before = snapshot_fields(row)
    yield
    audit(
        session,
        actor=actor,
        action=action,
        user_id=row.user_id,
        before=before,
        after=snapshot_fields(row),
        reason=reason,
        now=now,
    )


def check_actor(actor: str) -> str:
    actor = (actor or "").strip()
    if not actor or len(actor) > 200:
        raise InvalidInput("actor must be 1-200 characters")
    if not valid_text(actor):
        raise InvalidInput("actor must be UTF-8 text without NUL")
    return actor


def check_override_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("override text must not be empty")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise InvalidInput(f"override text is longer than {MAX_OVERRIDE_CHARS} characters")
    if not valid_text(text):
        raise InvalidInput("override text must be UTF-8 text without NUL")
    return text.strip()


@dataclass
class HighlightStore:
    """Transaction-per-operation facade over the rules above; the marks and requests it
    makes follow ``policy`` (the worker's and the CLI's come from their settings)."""

    sessions: async_sessionmaker[AsyncSession]
    ttl: timedelta = timedelta(days=7)
    clock: Clock = utcnow
    policy: RegenPolicy = IMMEDIATE

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
            sink = await scheduler.sink_in_force(session, now, self.policy)
            if actor is None:
                outcome = mark_stale_row(sink, row, stale_reason, now, None)
            else:
                with audited(
                    session,
                    row,
                    actor=check_actor(actor),
                    action="mark_stale",
                    reason=note,
                    now=now,
                ):
                    outcome = mark_stale_row(sink, row, stale_reason, now, _trigger(actor))
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
            sink = await scheduler.sink_in_force(session, now, self.policy)
            with audited(session, row, actor=actor, action="regenerate", reason=note, now=now):
                row.generation += 1
                row.covered_fingerprint = None  # an operator's request is never skipped
                if not row.is_stale:
                    row.is_stale, row.stale_since = True, now
                row.stale_reason = (
                    StaleReason.MANUAL if row.generated_at is not None else StaleReason.MISSING
                ).value
                if not scheduler.is_queued(row):  # a new request replaces a pending one
                    row.regen_request_id = None
                scheduler.enqueue(
                    sink,
                    row,
                    RegenReason.MANUAL,
                    now,
                    _trigger(actor),
                    Priority.OPERATOR,
                )
            return Highlight.from_row(row)

    async def pause_regeneration(self, until: datetime | None, actor: str) -> datetime | None:
        """Stop every worker releasing queued requests until ``until`` (None: resume now),
        e.g. while the generators are down; requests keep queueing, none is dropped.
        Returns the pause in force. Logged with the actor (it concerns no one profile)."""
        actor = check_actor(actor)
        async with self.sessions.begin() as session:
            now = self.clock()
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
            sink = await scheduler.sink_in_force(session, now, self.policy)
            with audited(session, row, actor=actor, action="clear_override", reason=note, now=now):
                row.manual_override, row.override_text = False, None
                row.override_actor, row.override_set_at, row.updated_at = actor, now, now
                request_if_unanswered(sink, row, now, _trigger(actor))
            return Highlight.from_row(row)


def _trigger(actor: str | None) -> str | None:
    return f"operator:{actor}" if actor else None
