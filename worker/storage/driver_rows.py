"""A batch's set-based statements run by asyncpg itself, inside the session's transaction.

Why: a batch at a steady 2,000 comments/s is a dozen comments, and its cost is the fixed
cost of its three statements. SQLAlchemy's execution of a ``text()`` statement (its
compiled-cache lookup, the parameters' processing, the cursor adapter, a greenlet switch,
the result's metadata) cost 130 us of CPU on top of asyncpg's 65 us per statement on the
bench machine (docs/performance.md, 2026-12-06 evening). The statements, their parameters
and their rows stay the same (a ``text()`` statement has no type processing either way);
only that layer is gone. The transaction stays the session's: begun here if no statement
began it yet, committed or rolled back by the session, on its pooled connection. Errors are
asyncpg's own, which ``storage.database.classify`` judges as it judges the wrapped ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=256)
def _positional(statement: TextClause) -> tuple[str, tuple[str, ...]]:
    """``statement`` with asyncpg's ``$n`` placeholders, and the parameter of each ``n``:
    SQLAlchemy's own compiler, so that the text is exactly what it would have sent."""
    compiled = statement.compile(dialect=_DIALECT)
    return compiled.string, tuple(compiled.positiontup or ())


async def driver_rows(
    session: AsyncSession, statement: TextClause, params: Mapping[str, Any]
) -> Sequence[Sequence[Any]]:
    """``statement``'s rows (indexable, unpackable, sliceable), run in ``session``'s
    transaction on PostgreSQL through asyncpg."""
    sql, names = _positional(statement)
    connection = await session.connection()
    pooled = await connection.get_raw_connection()
    adapted: Any = pooled.dbapi_connection
    driver: Any = pooled.driver_connection
    try:
        # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it executes; a
        # statement sent past it must begin the transaction the same way, or it would
        # commit on its own (tests/storage/test_driver_rows.py rolls one back to check).
        if adapted._transaction is None:
            await adapted._start_transaction()
        rows: Sequence[Sequence[Any]] = await driver.fetch(sql, *(params[n] for n in names))
    except Exception as exc:
        if not driver.is_closed():
            raise
        # A lost connection, judged as SQLAlchemy's asyncpg dialect judges one: the pool
        # must drop it (the input engine does not pre-ping) and the batch wait and retry.
        await connection.invalidate(exc)
        raise ConnectionError(f"the database connection was lost: {exc}") from exc
    return rows
