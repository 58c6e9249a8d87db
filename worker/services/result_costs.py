"""What a result costs, and where it is booked (``worker.domain.cost``).

A result's usage is booked to the lane and reason of the pending request it answers, read
before the result settles it, or ``unrequested``; and when that request was charged an LLM
token estimate (``worker.services.lane_budget``) and the result reports tokens, the
difference is settled. Both paths (the ORM one in ``services.pipeline``, the set-based one
in ``services.result_batch``) call these two functions around the result's rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.domain.batch import BatchResult
from worker.domain.cost import UNREQUESTED, Usage, lane_for, reports_tokens, tokens_of
from worker.domain.scheduling import priority_for
from worker.domain.values import UpsertOutcome
from worker.domain.wire import GeneratedEvent
from worker.services.outbox import Requestable
from worker.services.results import answers_pending


@dataclass(frozen=True, slots=True)
class CostShare:
    """Where a result's usage is booked (``worker.domain.cost``): the lane and reason of
    the pending request it answers, read before the result settles it, ``unrequested``
    when it answers none; and what its request's token estimate missed by (estimate -
    actual), when the request was charged one and the result reports tokens. The estimate
    is settled once, by the result that is stored for it (``book_cost``)."""

    lane: str
    reason: str
    usage: Usage | None
    settlement: float | None = None


def cost_share(row: Requestable | None, event: GeneratedEvent) -> CostShare:
    """A request made before requests recorded their lane has its stale reason's."""
    usage = event.usage.usage() if event.usage else None
    if row is None or not answers_pending(row, event):
        return CostShare(lane_for(priority_for(None)).value, UNREQUESTED, usage)
    lane = row.regen_request_lane or lane_for(priority_for(row.stale_reason)).value
    reason = row.regen_request_reason or row.stale_reason or "manual"
    if row.regen_token_estimate is None or usage is None or not reports_tokens(usage):
        return CostShare(lane, reason, usage)
    return CostShare(lane, reason, usage, float(row.regen_token_estimate - tokens_of(usage)))


STORED = frozenset({UpsertOutcome.APPLIED.value, UpsertOutcome.APPLIED_STILL_STALE.value})


def book_cost(
    result: BatchResult,
    share: CostShare,
    row: Requestable | None,
    outcome: str,
) -> None:
    """Count a result's usage, unless it is one already stored (the same generation
    again); and, when it was stored, settle its request's estimate and clear it from the
    row (``row``, written with the result), so that no later answer settles it again."""
    if outcome == UpsertOutcome.DUPLICATE.value:
        return
    result.spend.book(share.lane, share.reason, share.usage)
    if share.settlement is not None and outcome in STORED and row is not None:
        result.token_settlements.append((share.lane, share.settlement))
        row.regen_token_estimate = None
