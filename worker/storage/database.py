"""Engine and session factory for PostgreSQL (asyncpg) and SQLite (aiosqlite).

SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` so that a transaction takes the
write lock up front: two processes (worker and CLI) then queue instead of failing with
"database is locked" half way through a read-modify-write.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from worker.settings import normalize_database_url


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite file so that the embedded default works on a fresh clone."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """Build the async engine for ``url`` with the per-dialect settings described above."""
    url = normalize_database_url(url)
    ensure_sqlite_dir(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


async def database_answers(
    sessions: async_sessionmaker[AsyncSession], timeout_s: float = 2.0
) -> bool:
    """True when the database runs a trivial query within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s), sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def is_postgresql(session: AsyncSession | async_sessionmaker[AsyncSession]) -> bool:
    """The session (or every session a factory makes) talks to PostgreSQL (else SQLite,
    the embedded default)."""
    if isinstance(session, AsyncSession):
        return session.get_bind().dialect.name == "postgresql"
    return bool(session.kw["bind"].dialect.name == "postgresql")


def dialect_insert(session: AsyncSession) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the session's dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if is_postgresql(session) else sqlite.insert


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


_SCHEMA_PROBLEM = re.compile(r"no such (table|column)|does not exist", re.IGNORECASE)
_TRANSIENT_SQLSTATES = {
    "40001",
    "40P01",
    "55P03",
    "57P01",
    "57P02",
    "57P03",
    "08000",
    "08003",
    "08006",
}


def is_transient(exc: BaseException) -> bool:
    """True for failures that go away by themselves: lost connections, restarts, deadlocks.

    The pipeline retries these with backoff (and commits no offsets meanwhile); anything
    else is a problem with the data or the code and is isolated instead of retried.
    """
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if _SCHEMA_PROBLEM.search(str(exc.orig)):
            return False
        if exc.connection_invalidated or isinstance(
            exc, (sa_exc.OperationalError, sa_exc.InterfaceError)
        ):
            return True
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code in _TRANSIENT_SQLSTATES:
            return True
        return "database is locked" in str(exc.orig)
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted while the database is away
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)
