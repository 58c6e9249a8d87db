"""Each lane's budget: request credits and LLM tokens, one set for every worker.

Providers cap requests *and* tokens a minute, whichever bites first, and a profile with 400
comments costs many times one with 3. So a budget (a ``regen_budget`` row) holds two
buckets: request credits (``WB_REGEN_RATE`` / ``_BURST``, as before) and LLM tokens
(``WB_REGEN_TOKENS_PER_MIN``, a minute's worth at most). A due request goes while both
allow: one credit, and a token bucket above zero, which is then charged the request's
*estimate*: its user's last reported usage, else the average of recent results, else
``WB_REGEN_TOKENS_ESTIMATE``. The bucket may go below zero (one request larger than a
minute's worth still goes, alone, and the refill repays it). When the result reports its
actual tokens, the difference is settled (``TokenSettlementRow``, insert-only, added up by
the next step under the budget's lock), so the budget converges on real use.

Lanes (``worker.domain.cost``): with ``WB_REGEN_BATCH_RATE`` or
``WB_REGEN_BATCH_TOKENS_PER_MIN`` set, the batch lane has a budget of its own (row 2) and
the interactive lane keeps row 1: an expiry wave never spends a comment's budget, and
interactive bursts never starve the batch lane. Otherwise both lanes draw from row 1,
batch work after interactive work by priority. Every clock here is the database's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.cost import Lane, Usage, lane_for, reports_tokens, tokens_of
from worker.domain.scheduling import Bucket, Priority, RegenPolicy
from worker.services.outbox import LANE_STREAMS, requests_unpublished
from worker.services.spend import spend_since
from worker.storage.database import dialect_insert
from worker.storage.models import HighlightRow, RegenBudgetRow, TokenSettlementRow

INTERACTIVE_ROW, BATCH_ROW = 1, 2
# How far back results' usage makes the average estimate.
AVERAGE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class LaneLimits:
    """One budget: its row, the lanes it serves, and its limits (0: none)."""

    row_id: int
    lanes: tuple[Lane, ...]
    rate_per_min: float
    burst: int
    tokens_per_min: float

    @property
    def priorities(self) -> list[int]:
        return [int(p) for p in Priority if lane_for(p) in self.lanes]

    @property
    def streams(self) -> list[str]:
        return [LANE_STREAMS[lane] for lane in self.lanes]

    @property
    def token_burst(self) -> int:
        return max(1, int(self.tokens_per_min))


def lane_limits(policy: RegenPolicy) -> list[LaneLimits]:
    """The budgets ``policy`` describes, the interactive lane's first (serving the batch
    lane too unless that has a budget of its own)."""
    separate = policy.batch_budget
    lanes = (Lane.INTERACTIVE,) if separate else (Lane.INTERACTIVE, Lane.BATCH)
    first = LaneLimits(
        INTERACTIVE_ROW, lanes, policy.rate_per_min, policy.burst_size, policy.tokens_per_min
    )
    if not separate:
        return [first]
    batch_burst = max(1, int(policy.batch_rate_per_min))  # a minute's worth
    batch = LaneLimits(
        BATCH_ROW,
        (Lane.BATCH,),
        policy.batch_rate_per_min,
        batch_burst,
        policy.batch_tokens_per_min,
    )
    return [first, batch]


async def lock_budget_row(
    session: AsyncSession, row_id: int, now: datetime, burst: int, *, pausing: bool = False
) -> RegenBudgetRow:
    """A budget row, locked (created full on first use). A scheduler step takes it FOR NO
    KEY UPDATE, which the stale marks reading the pause (FOR KEY SHARE) do not wait for; a
    pause (``pausing``) takes it FOR UPDATE, which waits for them (PostgreSQL; SQLite
    serialises whole write transactions)."""
    lock: Any = True if pausing else {"key_share": True}
    row = await session.get(RegenBudgetRow, row_id, with_for_update=lock, populate_existing=True)
    if row is None:
        await session.execute(
            dialect_insert(session)(RegenBudgetRow)
            .values(id=row_id, tokens=float(burst), refilled_at=now)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = await session.get(
            RegenBudgetRow, row_id, with_for_update=lock, populate_existing=True
        )
        assert row is not None
    return row


async def settle_tokens(session: AsyncSession, lanes: tuple[Lane, ...]) -> float:
    """Take the settlements of ``lanes`` (under the budget's lock: one step takes each)."""
    taken = await session.scalars(
        delete(TokenSettlementRow)
        .where(TokenSettlementRow.lane.in_([lane.value for lane in lanes]))
        .returning(TokenSettlementRow.amount)
    )
    return float(sum(taken.all()))


async def average_tokens(session: AsyncSession, now: datetime) -> float | None:
    """Tokens per result that reported them, over ``AVERAGE_WINDOW`` (None: none did)."""
    return (await spend_since(session, now - AVERAGE_WINDOW)).total().average_tokens


def estimate(row: HighlightRow, average: float | None, default: int) -> int:
    """What a request for ``row`` is charged: its user's last reported usage, else the
    recent average, else ``default``."""
    last = Usage(row.usage_input_tokens, row.usage_output_tokens)
    if reports_tokens(last):
        return tokens_of(last)
    if average is not None:
        return round(average)
    return default


@dataclass
class LaneGrant:
    """What one budget allows this step, and its buckets to write back after it."""

    limits: LaneLimits
    row: RegenBudgetRow
    credits: Bucket
    tokens: Bucket | None
    limit: int

    def allows(self) -> bool:
        """Whether the token bucket allows one more request (credits: ``limit``)."""
        return self.tokens is None or self.tokens.tokens > 0

    def charge(self, amount: int) -> None:
        assert self.tokens is not None
        self.tokens = self.tokens.charged(amount, self.limits.token_burst)

    def save(self, taken: int) -> None:
        if self.limits.rate_per_min > 0:
            self.credits = self.credits.take(taken)
        self.row.tokens, self.row.refilled_at = self.credits.tokens, self.credits.at
        if self.tokens is not None:
            self.row.llm_tokens, self.row.llm_tokens_at = self.tokens.tokens, self.tokens.at


async def grant(
    session: AsyncSession, row: RegenBudgetRow, limits: LaneLimits, now: datetime, most: int
) -> LaneGrant:
    """Refill ``row``'s buckets to ``now`` (credits less what the outbox still holds: the
    budget is kept on the topic; tokens plus the results' settlements) and say how many
    requests it allows, at most ``most``."""
    credits = Bucket(row.tokens, row.refilled_at)
    limit = most
    if limits.rate_per_min > 0:
        unpublished = await requests_unpublished(session, limits.streams)
        credits = credits.refilled(now, limits.rate_per_min, limits.burst, unpublished)
        limit = min(limit, credits.available())
    else:  # no request budget: time without one earns nothing if one is set later
        credits = credits.paused(now)
    settled = await settle_tokens(session, limits.lanes)
    tokens = None
    if limits.tokens_per_min > 0:
        held = Bucket(_tokens_held(row, limits), row.llm_tokens_at or now)
        tokens = held.refilled(now, limits.tokens_per_min, limits.token_burst)
        tokens = tokens.settled(settled, limits.token_burst)
    return LaneGrant(limits, row, credits, tokens, limit)


def _tokens_held(row: RegenBudgetRow | None, limits: LaneLimits) -> float:
    """The LLM-token bucket as last written; a budget never used is full."""
    if row is None or row.llm_tokens is None:
        return float(limits.token_burst)
    return row.llm_tokens


def paused(row: RegenBudgetRow, now: datetime) -> None:
    """A budget while paused earns nothing (``Bucket.paused``), in either bucket."""
    row.refilled_at = Bucket(row.tokens, row.refilled_at).paused(now).at
    if row.llm_tokens_at is not None:
        row.llm_tokens_at = max(row.llm_tokens_at, now)


async def tokens_left(session: AsyncSession, policy: RegenPolicy) -> dict[str, float]:
    """Each token budget's bucket as last written, by the lanes it serves (the gauge)."""
    left: dict[str, float] = {}
    for limits in lane_limits(policy):
        if limits.tokens_per_min <= 0:
            continue
        value = _tokens_held(await session.get(RegenBudgetRow, limits.row_id), limits)
        for lane in limits.lanes:
            left[lane.value] = value
    return left
