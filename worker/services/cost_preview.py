"""What a bulk regeneration would cost, before anyone confirms it.

``reseed --dry-run`` and the panel's bulk regenerate confirmation say "N profiles ≈ T
tokens ≈ $X". Each profile counts what its request would be charged by the token budget
(``lane_budget.estimate``: its last reported usage, else the recent average, else the
default), summed in SQL (a twin of that rule, tested against it); its cost is its last
reported cost, else the last day's average cost of a generation. With no usage ever reported
for some of the profiles and no recent average, the cost is unknown rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from worker.services.lane_budget import average_tokens
from worker.services.spend import spend_since
from worker.storage.models import HighlightRow

H = HighlightRow
# A generation's cost changes with models and prices, not by the hour: a day's average.
AVERAGE_COST_WINDOW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CostPreview:
    profiles: int
    tokens: int
    cost_usd: float | None  # None: not known for every profile

    def describe(self) -> str:
        cost = "an unknown cost" if self.cost_usd is None else f"${self.cost_usd:,.2f}"
        return f"{self.profiles:,} profiles ≈ {self.tokens:,} tokens ≈ {cost}"


async def preview(
    session: AsyncSession, where: ColumnElement[bool], now: datetime, default_tokens: int
) -> CostPreview:
    """The preview of regenerating the rows ``where`` selects, from usage as of ``now``."""
    average = await average_tokens(session, now)  # the token budget's own, as ``estimate``
    unknown_tokens = and_(H.usage_input_tokens.is_(None), H.usage_output_tokens.is_(None))
    tokens = case(
        (unknown_tokens, literal(default_tokens if average is None else round(average))),
        else_=func.coalesce(H.usage_input_tokens, 0) + func.coalesce(H.usage_output_tokens, 0),
    )
    average_cost = (await spend_since(session, now - AVERAGE_COST_WINDOW)).total().average_cost_usd
    cost = func.coalesce(H.usage_cost_usd, literal(average_cost))
    stmt = select(
        func.count(),
        func.coalesce(func.sum(tokens), 0),
        func.sum(cost),
        func.count().filter(H.usage_cost_usd.is_(None)),
    ).where(where)
    count, token_sum, cost_sum, without_cost = (await session.execute(stmt)).one()
    known = average_cost is not None or not without_cost
    return CostPreview(int(count), int(token_sum), float(cost_sum or 0.0) if known else None)
