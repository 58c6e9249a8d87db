"""Statements run by asyncpg itself (``worker.storage.driver_rows``) belong to the session's
transaction: what the session rolls back is gone, what it commits is there, and rows and
parameters are what SQLAlchemy's execution gives and takes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from worker.storage.database import classify, create_engine, session_factory
from worker.storage.driver_rows import driver_rows

pytestmark = pytest.mark.postgres

INSERT = text("INSERT INTO driver_rows_t (n, s) VALUES (:n, :s) RETURNING n, s, :n + 1")


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS driver_rows_t"))
        await conn.execute(text("CREATE TABLE driver_rows_t (n int PRIMARY KEY, s text)"))
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE driver_rows_t"))
    await engine.dispose()


async def stored(engine: AsyncEngine) -> list[tuple[int, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT n, s FROM driver_rows_t ORDER BY n"))
        return [(n, s) for n, s in rows]


async def test_a_first_statement_begins_the_sessions_transaction(pg: AsyncEngine) -> None:
    """Sent before any SQLAlchemy statement, it must not commit on its own."""
    sessions = session_factory(pg)
    async with sessions() as session:
        rows = await driver_rows(session, INSERT, {"n": 1, "s": "a"})
        assert [tuple(r) for r in rows] == [(1, "a", 2)]
        await session.rollback()
    assert await stored(pg) == []
    async with sessions.begin() as session:
        await driver_rows(session, INSERT, {"n": 2, "s": "b"})
        await session.execute(text("INSERT INTO driver_rows_t VALUES (3, 'c')"))
    assert await stored(pg) == [(2, "b"), (3, "c")]


async def test_after_sqlalchemys_statements_it_joins_the_same_transaction(
    pg: AsyncEngine,
) -> None:
    sessions = session_factory(pg)

    async def failing_batch() -> None:
        async with sessions.begin() as session:
            await session.execute(text("INSERT INTO driver_rows_t VALUES (4, 'd')"))
            await driver_rows(session, INSERT, {"n": 5, "s": "e"})
            raise RuntimeError("the batch failed after its statements")

    with pytest.raises(RuntimeError):
        await failing_batch()
    assert await stored(pg) == []


async def test_a_refused_statement_rolls_back_and_is_judged_by_its_code(pg: AsyncEngine) -> None:
    sessions = session_factory(pg)

    async def twice() -> None:
        async with sessions.begin() as session:
            await driver_rows(session, INSERT, {"n": 6, "s": "f"})
            await driver_rows(session, INSERT, {"n": 6, "s": "again"})

    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await twice()
    assert classify(refused.value).value == "data"
    async with sessions.begin() as session:  # the pooled connection is usable again
        await driver_rows(session, INSERT, {"n": 7, "s": "g"})
    assert await stored(pg) == [(7, "g")]
