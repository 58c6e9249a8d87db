"""The database's clock: the one clock every worker shares.

The regeneration budget is one row that every worker refills; with each worker's own
clock a worker 10 s slow moved ``refilled_at`` back and the next worker was credited the
same 10 s again (two workers 10 s apart published 150 requests in 40 s against a 60/min
budget). Read from the database, the bucket has one clock however many workers there are
and however skewed theirs, and a pause and its end are judged by the same clock.

PostgreSQL: ``clock_timestamp()``, the time of the reading statement. ``now()`` is frozen
at the transaction's start, which is earlier than the refill it stamps by however long
the transaction took to get there; either would do, as the bucket never moves back
(``domain.scheduling.Bucket``), but the statement's own time is the refill's. SQLite (the
embedded single-machine default): its ``'now'`` is the machine's clock, the same one every
process on it reads, with milliseconds (``CURRENT_TIMESTAMP`` has whole seconds only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from worker.storage.database import is_postgresql

_PG_NOW = text("SELECT clock_timestamp()")
_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")


async def database_now(session: AsyncSession) -> datetime:
    """The database server's time now, aware, in UTC (in the caller's transaction)."""
    if is_postgresql(session):
        value: datetime = await session.scalar(_PG_NOW)
        return value.astimezone(UTC)
    stamp: str = await session.scalar(_SQLITE_NOW)
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC)


def now_sql(session: AsyncSession) -> ColumnElement[datetime]:
    """``database_now`` as an expression, to compare with a stored time inside a statement
    (the pause in ``services.scheduler``). SQLite stores times as ``YYYY-MM-DD
    HH:MM:SS.ffffff`` text, which compares in order with its ``'now'`` in the same form."""
    if is_postgresql(session):
        return func.clock_timestamp()
    return func.strftime("%Y-%m-%d %H:%M:%f", "now")


# How a service object reads the budget's clock (tests stand a controllable one in).
BudgetClock = Callable[[AsyncSession], Awaitable[datetime]]
