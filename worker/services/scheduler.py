"""The regeneration scheduler: stale marks queue requests; due ones are published within
a budget shared by every worker.

A queued request lives on its user's row (``regen_queued_at`` and friends; queued by the
stale rules, ``worker.services.staleness.enqueue``), so it is as
durable as the stale mark that made it and "one request per user" holds by construction:
further marks are absorbed (the settle timer is pushed back, the priority raised). The
scheduler step (``publish_due``, run by every worker) locks the one-row token bucket
``regen_budget``, refills it, picks that many due rows ``FOR UPDATE SKIP LOCKED`` in
priority order and turns each into a pending request with ``request_regeneration`` (the
outbox and the relay are unchanged), all in one transaction: a worker killed midway
rolls back, and the rows are still queued. The budget holds on the topic, not only in the
outbox: requests still in the outbox (the relay is behind, Kafka away, a worker killed
before its relay ran) count against the burst (``Bucket.refilled``), so a late backlog is
never followed by a full bucket on top of it. An operator may pause the budget for all
workers (``pause``: ``regen_budget.paused_until``); it earns nothing while paused.

A pause holds under every policy: while one is in force, a transaction that would request
at once queues instead (``policy_in_force``), and the step releases it after the pause like
any queued request. A deletion's request waits too, as under a budget: its quote is
withheld from every read in the deletion's own transaction (``deleted_comments``), and the
request only asks for the text that replaces it, the generators' work the pause is for.

With no settle time and no budget (``worker.domain.scheduling.IMMEDIATE``: the service
objects' default, and ``WB_REGEN_SETTLE=0 WB_REGEN_RATE=0``) requests are made at once, as
before the scheduler. There is no process-wide policy: the worker's ``Runtime`` and the
CLI build one from their settings (``policy_from``) and hand it to the service objects
they make; a stale mark reads it from the outbox sink it writes to (``OutboxSink.policy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from worker.domain.scheduling import (
    SETTLING,
    Bucket,
    Priority,
    RegenPolicy,
    due_at,
)
from worker.domain.values import RegenReason
from worker.services import lane_budget
from worker.services.lane_budget import (
    BATCH_ROW,
    INTERACTIVE_ROW,
    LaneGrant,
    average_tokens,
    estimate,
    grant,
    lane_limits,
    lock_budget_row,
)
from worker.services.outbox import (
    OutboxEntry,
    OutboxSink,
    batch_rows,
    request_regeneration,
    session_sink,
)
from worker.services.spend import spend_today
from worker.services.staleness import dequeue, skip_if_unchanged
from worker.storage.db_clock import now_sql
from worker.storage.models import HighlightRow, RegenBudgetRow

if TYPE_CHECKING:
    from worker.settings import Settings

H = HighlightRow
BUDGET_ROW = INTERACTIVE_ROW  # the pause and the spend cap are its
MAX_PER_STEP = 500  # requests one step publishes at most (one outbox row)


def policy_from(settings: Settings) -> RegenPolicy:
    """The policy ``WB_REGEN_SETTLE`` / ``_MAX_WAIT`` / ``_RATE`` / ``_BURST`` /
    ``_BATCH_DEADLINE`` / ``_MAX_USD_PER_DAY`` describe."""
    return RegenPolicy(
        settings.regen_settle,
        settings.regen_max_wait,
        settings.regen_rate,
        settings.regen_burst,
        batch_deadline=settings.regen_batch_deadline,
        max_usd_per_day=settings.regen_max_usd_per_day,
        tokens_per_min=settings.regen_tokens_per_min,
        tokens_estimate=settings.regen_tokens_estimate,
        batch_rate_per_min=settings.regen_batch_rate,
        batch_tokens_per_min=settings.regen_batch_tokens_per_min,
    )


def due_clause(now: datetime, policy: RegenPolicy) -> ColumnElement[bool]:
    """SQL of ``worker.domain.scheduling.due_at(...) <= now`` for queued rows. An override
    lock does not hold a queued request back: the scheduler only delays what would have
    been requested at once (stale marks under a lock queue nothing; an operator's
    ``regenerate`` works under the lock)."""
    settling = [int(p) for p in SETTLING]
    return and_(
        H.regen_queued_at.is_not(None),
        or_(
            and_(H.regen_priority.not_in(settling), H.regen_first_change_at <= now),
            and_(
                H.regen_priority.in_(settling),
                or_(
                    H.regen_last_change_at <= now - policy.settle,
                    H.regen_first_change_at <= now - policy.max_wait,
                ),
            ),
        ),
    )


QUEUE_ORDER = (H.regen_priority, H.regen_unseen.desc(), H.regen_first_change_at, H.user_id)


def due_rows(
    now: datetime,
    policy: RegenPolicy,
    limit: int,
    *,
    privacy_only: bool = False,
    among: list[int] | None = None,
) -> Select[HighlightRow]:
    """The step's pick: the first ``limit`` due rows in queue order, locked, skipping rows
    another worker's step holds (``privacy_only``: deletions' alone, under the spend cap;
    ``among``: these priorities only, one budget's lanes). The queue's index has this
    order, so the step reads about ``limit`` index entries whatever the queue's length."""
    only = [H.regen_priority == int(Priority.PRIVACY)] if privacy_only else []
    if among is not None and len(among) < len(Priority):
        only.append(H.regen_priority.in_(among))
    return (
        select(H)
        .where(due_clause(now, policy), *only)
        .order_by(*QUEUE_ORDER)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )


@dataclass
class Published:
    count: int = 0
    skipped: int = 0  # due requests dropped: the inputs are what the highlight covers
    capped: bool = False  # the day's spend reached the cap: only privacy requests went
    waits_s: list[float] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    budget_left: float | None = None
    # LLM tokens left by lane (token budgets only): negative is a debt the refill repays.
    llm_tokens_left: dict[str, float] = field(default_factory=dict)


async def lock_budget(
    session: AsyncSession, now: datetime, policy: RegenPolicy, *, pausing: bool = False
) -> RegenBudgetRow:
    """The first budget row (the pause and the spend cap are its), locked
    (``lane_budget.lock_budget_row``)."""
    return await lock_budget_row(session, BUDGET_ROW, now, policy.burst_size, pausing=pausing)


# Whether a hold is in force (an operator's pause, or the daily spend cap reached), as
# ``policy_in_force`` reads it, as SQL text: a scalar a batch's first statement carries
# (``worker.storage.dedup.claim(also=...)``) instead of a round trip of its own. Judged by
# the database's clock, as the pause was set and as the scheduler step ends it: a worker
# whose clock is off cannot end a pause early or late.
HOLD_IN_FORCE_SQL = (
    "(SELECT paused_until > clock_timestamp() OR capped_until > clock_timestamp() "
    f"FROM regen_budget WHERE id = {BUDGET_ROW} FOR KEY SHARE)"
)


def held_while_paused(policy: RegenPolicy, hold_in_force: bool | None) -> RegenPolicy:
    """``policy``, held (``RegenPolicy.held``: its requests queue, released by the step after
    the pause; under the spend cap, deletions' by the next step) while a pause or the cap
    is in force; only an immediate policy changes (any other queues anyway)."""
    if policy.immediate and hold_in_force:
        return policy.held()
    return policy


async def policy_in_force(session: AsyncSession, policy: RegenPolicy) -> RegenPolicy:
    """The policy the stale marks of the caller's transaction follow (``held_while_paused``);
    only an immediate policy reads the hold, by the database's clock (``HOLD_IN_FORCE_SQL``).
    On PostgreSQL it is read FOR KEY SHARE, which a pause's FOR UPDATE waits for and which
    waits for a pause being made: a request made at once is in a transaction that committed
    before the pause did, never after."""
    if not policy.immediate:
        return policy
    db_now = now_sql(session)
    B = RegenBudgetRow
    stmt = (
        select(or_(B.paused_until > db_now, B.capped_until > db_now))
        .where(B.id == BUDGET_ROW)
        .with_for_update(read=True, key_share=True)
    )
    return held_while_paused(policy, bool(await session.scalar(stmt)))


async def sink_in_force(session: AsyncSession, policy: RegenPolicy) -> OutboxSink:
    """``outbox.session_sink`` under the policy in force (``policy_in_force``)."""
    return session_sink(session, await policy_in_force(session, policy))


async def publish_due(session: AsyncSession, now: datetime, policy: RegenPolicy) -> Published:
    """One scheduler step in the caller's transaction: take as many due requests as each
    lane's budget allows (``lane_budget``), highest priority first, and queue them in the
    outbox. ``now`` is the database's clock (``storage.db_clock``), never a worker's: every
    worker refills the same buckets, and a pause set by that clock ends by it."""
    done = Published()
    budget = await lock_budget(session, now, policy)
    done.skipped = await skip_unchanged(session, now, policy)
    done.capped = await spend_capped(session, budget, now, policy)
    budgets = [
        (limits, budget if limits.row_id == BUDGET_ROW else None) for limits in lane_limits(policy)
    ]
    rows = [
        row or await lock_budget_row(session, limits.row_id, now, limits.burst)
        for limits, row in budgets
    ]
    if budget.paused_until is not None:
        if now < budget.paused_until:
            for row in rows:
                lane_budget.paused(row, now)
            done.budget_left = budget.tokens if policy.rate_per_min > 0 else None
            return done
        for row in rows:  # over since then: nothing earned before its end
            lane_budget.paused(row, budget.paused_until)
        budget.paused_until = None
    entries: list[OutboxEntry] = []
    sink = OutboxSink(entries.append, policy)  # one outbox row for the whole step
    for (limits, _), row in zip(budgets, rows, strict=True):
        allowed = await grant(session, row, limits, now, MAX_PER_STEP - done.count)
        await _release(session, allowed, now, policy, sink, done)
        if limits.row_id == BUDGET_ROW:
            done.budget_left = allowed.credits.tokens if policy.rate_per_min > 0 else None
        if allowed.tokens is not None:
            done.llm_tokens_left.update(dict.fromkeys(limits.lanes, allowed.tokens.tokens))
    if entries:
        session.add_all(batch_rows(entries))
    return done


async def _release(
    session: AsyncSession,
    allowed: LaneGrant,
    now: datetime,
    policy: RegenPolicy,
    sink: OutboxSink,
    done: Published,
) -> None:
    """Publish (to ``sink``) the due requests of one budget's lanes that it allows. Privacy
    comes first even when the token bucket is empty (it is charged all the same: the debt
    delays what follows), as under the spend cap."""
    rows: list[HighlightRow] = []
    if allowed.limit > 0:
        only_privacy = done.capped or not allowed.allows()
        among = allowed.limits.priorities
        pick = due_rows(now, policy, allowed.limit, privacy_only=only_privacy, among=among)
        rows = list((await session.scalars(pick)).all())
    average = await average_tokens(session, now) if rows and allowed.tokens else None
    taken = 0
    for row in rows:
        assert row.regen_queued_at is not None and row.regen_priority is not None
        if row.regen_priority != Priority.PRIVACY and not allowed.allows():
            break
        if skip_if_unchanged(row, now):  # past ``skip_unchanged``'s limit
            done.skipped += 1
            continue
        done.waits_s.append((now - row.regen_queued_at).total_seconds())
        done.priorities.append(row.regen_priority)
        reason = RegenReason(row.regen_queued_reason or RegenReason.MANUAL.value)
        request_regeneration(sink, row, reason, now, row.regen_queued_trigger, row.regen_priority)
        if allowed.tokens is not None:
            row.regen_token_estimate = estimate(row, average, policy.tokens_estimate)
            allowed.charge(row.regen_token_estimate)
        dequeue(row)
        taken += 1
    done.count += taken
    allowed.save(taken)


async def spend_capped(
    session: AsyncSession, budget: RegenBudgetRow, now: datetime, policy: RegenPolicy
) -> bool:
    """Whether the UTC day's reported cost (``services.spend``, the database's day) has
    reached ``WB_REGEN_MAX_USD_PER_DAY``; if so only privacy requests are published until
    the day turns, and ``capped_until`` holds the stale marks of an immediate policy too
    (``HOLD_IN_FORCE_SQL``). Summed every step, so a raised cap takes effect at once."""
    capped = False
    if policy.max_usd_per_day > 0:
        spent = (await spend_today(session, now)).total().cost_usd
        capped = spent >= policy.max_usd_per_day
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    budget.capped_until = midnight + timedelta(days=1) if capped else None
    return capped


def skippable(now: datetime, policy: RegenPolicy) -> Select[HighlightRow]:
    """The due rows ``skip_if_unchanged`` would skip (the SQL twin of
    ``worker.domain.snapshot.unchanged``; tests/services/test_skip_twin.py holds them to the
    same rows), locked, in user-id order. Its terms name the skippable rows' index
    (``ix_user_profile_highlights_regen_skippable``), so it reads only the queued rows
    whose inputs their highlight covers (usually none), not the whole queue."""
    return (
        select(H)
        .where(
            due_clause(now, policy),
            H.covered_fingerprint == H.input_fingerprint,
            H.generated_at.is_not(None),
            or_(H.stale_after.is_(None), H.stale_after > now),
        )
        .order_by(H.user_id)
        .limit(MAX_PER_STEP)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )


async def skip_unchanged(session: AsyncSession, now: datetime, policy: RegenPolicy) -> int:
    """Before any token is counted: due requests whose inputs are what the stored highlight
    covers go nowhere (``skip_if_unchanged`` on the rows ``skippable`` finds), spending no
    token and not waiting for one (nor for a pause: nothing is published). Returns how
    many were skipped. At most ``MAX_PER_STEP`` a step: ``publish_due`` judges the rows it
    picks again, so that none past the limit is published."""
    rows = (await session.scalars(skippable(now, policy))).all()
    return sum(skip_if_unchanged(row, now) for row in rows)


async def pause(
    session: AsyncSession, until: datetime | None, now: datetime, policy: RegenPolicy
) -> datetime | None:
    """Pause releasing queued requests until ``until`` for every worker (None: resume);
    requests keep queueing meanwhile, nothing is dropped, and under an immediate policy
    the stale marks queue theirs too (``policy_in_force``). Returns the pause in force.
    ``now`` is the database's clock, as the scheduler step's (``publish_due``)."""
    budget = await lock_budget(session, now, policy, pausing=True)
    if budget.paused_until is not None and budget.paused_until > now:
        batch = await session.get(RegenBudgetRow, BATCH_ROW, with_for_update=True)
        for row in (budget, *([batch] if batch else [])):
            lane_budget.paused(row, now)  # the pause earned nothing, in either bucket
    budget.paused_until = until if until is not None and until > now else None
    return budget.paused_until


async def paused_until(session: AsyncSession, now: datetime) -> datetime | None:
    row = await session.get(RegenBudgetRow, BUDGET_ROW)
    if row is None or row.paused_until is None or row.paused_until <= now:
        return None
    return row.paused_until


async def budget_left(session: AsyncSession, now: datetime, policy: RegenPolicy) -> float | None:
    """Tokens available now (read without a lock), None with no budget."""
    if policy.rate_per_min <= 0:
        return None
    row = await session.get(RegenBudgetRow, BUDGET_ROW)
    if row is None:
        return float(policy.burst_size)
    bucket = Bucket(row.tokens, row.refilled_at).refilled(
        now, policy.rate_per_min, policy.burst_size
    )
    return bucket.tokens


def queued_due_at(row: HighlightRow, policy: RegenPolicy) -> datetime:
    """When a queued row comes due (``due_at``: ``due_clause`` in Python, as operators see it
    and as the tests hold the SQL to it)."""
    assert row.regen_priority is not None
    assert row.regen_first_change_at is not None and row.regen_last_change_at is not None
    return due_at(
        row.regen_priority,
        row.regen_first_change_at,
        row.regen_last_change_at,
        policy.settle,
        policy.max_wait,
    )


async def queue_state(
    session: AsyncSession, row: HighlightRow, now: datetime, policy: RegenPolicy
) -> dict[str, Any] | None:
    """A user's place in the queue, for operators (None when nothing is queued)."""
    if row.regen_queued_at is None or row.regen_priority is None:
        return None
    due = queued_due_at(row, policy)
    ahead = or_(
        H.regen_priority < row.regen_priority,
        and_(
            H.regen_priority == row.regen_priority,
            or_(
                H.regen_unseen > row.regen_unseen,
                and_(
                    H.regen_unseen == row.regen_unseen,
                    H.regen_first_change_at < row.regen_first_change_at,
                ),
            ),
        ),
    )
    before = await session.scalar(select(func.count()).where(H.regen_queued_at.is_not(None), ahead))
    return {
        "queued_at": row.regen_queued_at.isoformat(),
        "due_at": due.isoformat(),
        "priority": row.regen_priority,
        "priority_name": Priority(row.regen_priority).name.lower(),
        "reason": row.regen_queued_reason,
        "unseen_comments": row.regen_unseen,
        "place": int(before or 0) + 1,
        "overdue_s": max(0.0, (now - due).total_seconds()),
    }
