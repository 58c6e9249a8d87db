"""Spend, stored: results and their reported usage per minute, lane and reason.

Results book their usage (``worker.domain.cost``) in their own transaction, as an upsert
that adds to the minute's row (the database's clock, like the budget: a worker's skewed
clock cannot move spend into another day). The set-based result batch adds it to its one
statement (``spend_write``); the ORM path runs ``record_costs``. Every figure operators see
(the overview, ``freshness-report``, the daily cap) sums these rows; the counters
``wb_regen_tokens_total`` and ``wb_regen_cost_usd_total`` add the same bookings in the
process that committed them, so their sums over workers equal the table's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import BatchResult
from worker.domain.cost import Spend, SpendTotals
from worker.storage.database import dialect_insert, is_postgresql
from worker.storage.models import RegenSpendRow, TokenSettlementRow
from worker.storage.pgarray import Write, literal, unnest_rows, write_together

S = RegenSpendRow
COLUMNS = {
    "lane": "text",
    "reason": "text",
    "results": "bigint",
    "token_reports": "bigint",
    "cost_reports": "bigint",
    "input_tokens": "bigint",
    "output_tokens": "bigint",
    "cost_usd": "double precision",
}
SUMS = tuple(COLUMNS)[2:]
UPSERT = (
    f"INSERT INTO regen_spend (minute, {', '.join(COLUMNS)}) "
    f"SELECT date_trunc('minute', clock_timestamp()), v.* FROM {unnest_rows(COLUMNS, 's_')} "
    "ON CONFLICT (minute, lane, reason) DO UPDATE SET "
    + ", ".join(f"{name} = regen_spend.{name} + excluded.{name}" for name in SUMS)
)
# SQLite: the minute as the text SQLAlchemy stores its datetimes in.
_SQLITE_MINUTE = func.strftime("%Y-%m-%d %H:%M:00.000000", "now")


def _values(spend: Spend) -> list[dict[str, object]]:
    return [
        {
            "lane": lane,
            "reason": reason,
            "results": t.results,
            "token_reports": t.token_reports,
            "cost_reports": t.cost_reports,
            "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens,
            "cost_usd": t.cost_usd,
        }
        for (lane, reason), t in sorted(spend.by_key.items())
    ]


def spend_write(spend: Spend) -> Write | None:
    """PostgreSQL: booking ``spend`` as one upsert from arrays (``write_together``)."""
    rows = _values(spend)
    if not rows:
        return None
    return Write(
        UPSERT,
        {f"s_{name}": literal(kind, [r[name] for r in rows]) for name, kind in COLUMNS.items()},
    )


SETTLEMENT_COLUMNS = {"lane": "text", "amount": "double precision"}
SETTLEMENTS = (
    "INSERT INTO regen_token_settlements (lane, amount) "
    f"SELECT v.lane, v.amount FROM {unnest_rows(SETTLEMENT_COLUMNS, 't_')}"
)


def settlements_write(settlements: list[tuple[str, float]]) -> Write | None:
    """PostgreSQL: the results' token settlements (``services.lane_budget``) as one insert."""
    if not settlements:
        return None
    lanes, amounts = zip(*settlements, strict=True)
    return Write(
        SETTLEMENTS,
        {
            "t_lane": literal("text", list(lanes)),
            "t_amount": literal("double precision", list(amounts)),
        },
    )


def cost_writes(result: BatchResult) -> list[Write | None]:
    """PostgreSQL: what a result batch spent and settled, for its one statement."""
    return [spend_write(result.spend), settlements_write(result.token_settlements)]


async def record_costs(session: AsyncSession, result: BatchResult) -> None:
    """Book what ``result`` spent and settled in the caller's transaction (the ORM path's
    form of ``cost_writes``)."""
    if is_postgresql(session):
        await write_together(session, cost_writes(result))
        return
    session.add_all(TokenSettlementRow(lane=n, amount=a) for n, a in result.token_settlements)
    await _record_spend_sqlite(session, result.spend)


async def _record_spend_sqlite(session: AsyncSession, spend: Spend) -> None:
    insert = dialect_insert(session)(RegenSpendRow)
    for row in _values(spend):
        stmt = insert.values(minute=_SQLITE_MINUTE, **row).on_conflict_do_update(
            index_elements=["minute", "lane", "reason"],
            set_={name: getattr(S, name) + insert.excluded[name] for name in SUMS},
        )
        await session.execute(stmt)


async def spend_since(session: AsyncSession, since: datetime) -> Spend:
    """What was booked from the minute of ``since`` on, by lane and reason."""
    stmt = (
        select(S.lane, S.reason, *(func.sum(getattr(S, name)) for name in SUMS))
        .where(S.minute >= since.replace(second=0, microsecond=0))
        .group_by(S.lane, S.reason)
    )
    spend = Spend()
    for (
        lane,
        reason,
        results,
        tokened,
        costed,
        tokens_in,
        tokens_out,
        cost,
    ) in await session.execute(stmt):
        spend.by_key[(lane, reason)] = SpendTotals(
            int(results), int(tokened), int(costed), int(tokens_in), int(tokens_out), float(cost)
        )
    return spend


@dataclass(frozen=True, slots=True)
class SpendReport:
    """Spend over the last hour, the last 24 hours and the UTC day so far, from ``now`` (the
    caller's clock: the panel's; the daily cap sums by the database's, ``spend_today``)."""

    hour: Spend
    day: Spend
    today: Spend


async def spend_today(session: AsyncSession, now: datetime) -> Spend:
    """Since 00:00 UTC of ``now`` (the daily cap's day)."""
    return await spend_since(session, now.replace(hour=0, minute=0, second=0, microsecond=0))


async def spend_report(session: AsyncSession, now: datetime) -> SpendReport:
    return SpendReport(
        await spend_since(session, now - timedelta(hours=1)),
        await spend_since(session, now - timedelta(days=1)),
        await spend_today(session, now),
    )


def totals_json(totals: SpendTotals) -> dict[str, object]:
    average = totals.average_cost_usd
    return {
        "results": totals.results,
        "token_reports": totals.token_reports,
        "cost_reports": totals.cost_reports,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": round(totals.cost_usd, 6),
        "average_cost_usd": None if average is None else round(average, 6),
    }


def spend_json(spend: Spend) -> dict[str, object]:
    """A period's spend as JSON: the total, and by lane and reason."""
    return {
        "total": totals_json(spend.total()),
        "by_lane_reason": [
            {"lane": lane, "reason": reason, **totals_json(t)}
            for (lane, reason), t in sorted(spend.by_key.items())
        ],
    }


async def prune_spend(session: AsyncSession, cutoff: datetime) -> None:
    await session.execute(delete(RegenSpendRow).where(RegenSpendRow.minute < cutoff))
