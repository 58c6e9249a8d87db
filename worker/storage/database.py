"""Engine and session factory for PostgreSQL (asyncpg) and SQLite (aiosqlite).

SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` so that a transaction takes the
write lock up front: two processes (worker and CLI) then queue instead of failing with
"database is locked" half way through a read-modify-write.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
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


def create_engine(
    url: str, *, pool_size: int = 5, echo: bool = False, pre_ping: bool = True
) -> AsyncEngine:
    """Build the async engine for ``url`` with the per-dialect settings described above.

    ``pre_ping`` tests a PostgreSQL connection before each checkout (three round trips:
    BEGIN, ``;``, ROLLBACK), so a connection the server dropped is replaced before a
    request uses it; a caller that waits out any dead connection itself may skip it."""
    url = normalize_database_url(url)
    ensure_sqlite_dir(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
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


@asynccontextmanager
async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose reads are one transaction and see one snapshot, so that a commit
    between two of them cannot make a document made of several reads say two things at
    once. PostgreSQL runs it at REPEATABLE READ, READ ONLY (at its default, READ
    COMMITTED, each statement sees what had committed when the statement began). SQLite
    needs nothing more: one transaction is one snapshot there (``BEGIN IMMEDIATE`` even
    holds the write lock, so nothing commits meanwhile)."""
    async with sessions() as session:
        if is_postgresql(session):
            await session.connection(
                execution_options={
                    "isolation_level": "REPEATABLE READ",
                    "postgresql_readonly": True,
                }
            )
        yield session


def dialect_insert(session: AsyncSession) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the session's dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if is_postgresql(session) else sqlite.insert


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


_SCHEMA_PROBLEM = re.compile(r"no such (table|column)|does not exist", re.IGNORECASE)


class Fault(StrEnum):
    """What a database failure says about the work that hit it (``classify``)."""

    OUTAGE = "outage"  # the database cannot do any work now: wait, retry, acknowledge nothing
    DATA = "data"  # the database refused these values: the event that carries them is bad
    OTHER = "other"  # a bug or a schema problem: not an outage, isolated like bad data


# SQLSTATE classes and codes of a database that cannot work now, whatever it is asked:
# connection (08), out of resources (53: disk full, memory, connections), operator
# intervention (57: statement timeout / cancel, shutdown, starting), system (58: I/O),
# internal errors (XX), transaction rollback (40: serialization, deadlock), lock not
# available (55P03, lock_timeout), read-only transaction (25006: a standby after failover,
# or default_transaction_read_only), idle-in-transaction timeout (25P03), and missing
# privileges (42501: a grant problem is the deployment's, never one event's).
_OUTAGE_CLASSES = frozenset({"08", "53", "57", "58", "XX", "40"})
_OUTAGE_CODES = frozenset({"55P03", "25006", "25P03", "42501"})
# The values themselves: data exceptions (22), integrity (23), cardinality (21: the same
# row twice in one statement), WITH CHECK OPTION (44), and errors raised by a trigger or
# function on what it was given (P0).
_DATA_CLASSES = frozenset({"22", "23", "21", "44", "P0"})
# SQLite result codes (``sqlite3.Error.sqlite_errorname``, extended codes share the prefix).
_SQLITE_OUTAGE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_NOMEM",
    "SQLITE_PROTOCOL",
    "SQLITE_INTERRUPT",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PERM",
    "SQLITE_AUTH",
)
_SQLITE_DATA = ("SQLITE_CONSTRAINT", "SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_RANGE")
# The same, by message, for SQLite errors that carry no code.
_SQLITE_OUTAGE_MESSAGE = re.compile(
    r"database is locked|database table is locked|disk I/O error|readonly database"
    r"|database or disk is full|unable to open database file|out of memory"
    r"|database disk image is malformed",
    re.IGNORECASE,
)


def _sqlstate(error: BaseException) -> str | None:
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def _by_sqlstate(code: str, error: BaseException | None = None) -> Fault:
    # ALLOW_CONNECTIONS false: 55000 is "object not in prerequisite state" elsewhere, but
    # a database refusing new sessions cannot do any work now (and checking whether it
    # answers races with its re-opening).
    if code == "55000" and "not currently accepting connections" in str(error):
        return Fault.OUTAGE
    if code in _OUTAGE_CODES or code[:2] in _OUTAGE_CLASSES:
        return Fault.OUTAGE
    if code[:2] in _DATA_CLASSES:
        return Fault.DATA
    return Fault.OTHER


def _by_sqlite(error: BaseException) -> Fault | None:
    name = getattr(error, "sqlite_errorname", None)
    if isinstance(name, str):
        if name.startswith(_SQLITE_OUTAGE):
            return Fault.OUTAGE
        if name.startswith(_SQLITE_DATA):
            return Fault.DATA
        return Fault.OTHER  # SQLITE_ERROR: syntax, no such table, ...
    if _SQLITE_OUTAGE_MESSAGE.search(str(error)):
        return Fault.OUTAGE
    return None


def classify(exc: BaseException) -> Fault:
    """Whether a failure is an outage (retry the same work later, acknowledge nothing) or
    not (the work itself is at fault: for a single event, dead-letter it).

    By SQLSTATE first (PostgreSQL, through SQLAlchemy or asyncpg directly), then SQLite's
    result code, then the exception's type: lost connections (``OSError``,
    ``ConnectionError``, ``TimeoutError``, a connection SQLAlchemy invalidated, the pool
    timing out) are outages. A wrapped error is judged by what it wraps. Anything else is
    not an outage: retrying a bug forever would stall the partition instead.
    """
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        fault = _classify_one(error, sa_exc)
        if fault is not None:
            return fault
        inner = getattr(error, "orig", None) if isinstance(error, sa_exc.StatementError) else None
        error = inner if isinstance(inner, BaseException) else error.__cause__ or error.__context__
    return Fault.OTHER


def _classify_one(error: BaseException, sa_exc: Any) -> Fault | None:
    """The verdict on ``error`` alone, or None when only what it wraps can tell."""
    if isinstance(error, OSError | ConnectionError | TimeoutError):  # incl. socket errors
        return Fault.OUTAGE
    if isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return Fault.OUTAGE  # pool exhausted while the database is away
    code = _sqlstate(error)
    if code is not None:
        return _by_sqlstate(code, error)
    if isinstance(error, sa_exc.DBAPIError):
        return _by_dbapi_error(error, sa_exc)
    if type(error).__module__ == "sqlite3":
        return _by_sqlite(error)
    if type(error).__module__.startswith("asyncpg") and "InterfaceError" in {
        c.__name__ for c in type(error).__mro__
    }:
        return Fault.OUTAGE if "closed" in str(error) else None
    return None


def _by_dbapi_error(error: Any, sa_exc: Any) -> Fault | None:
    """SQLAlchemy's wrapper of a driver error: the driver's code if it has one, else the
    wrapper's class."""
    orig = error.orig
    code = _sqlstate(orig) if orig is not None else None
    if code is not None:
        return _by_sqlstate(code, orig)
    if orig is not None and (sqlite := _by_sqlite(orig)) is not None:
        return sqlite
    if _SCHEMA_PROBLEM.search(str(orig)):
        return Fault.OTHER
    if error.connection_invalidated or isinstance(
        error, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return Fault.OUTAGE
    if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError):
        return Fault.DATA
    return None


def is_transient(exc: BaseException) -> bool:
    """True for failures that go away by themselves (``classify`` says outage): the pipeline
    retries these with backoff (and commits no offsets meanwhile); anything else is a
    problem with the data or the code and is isolated instead of retried."""
    return classify(exc) is Fault.OUTAGE


def needs_new_connection(exc: BaseException) -> bool:
    """A read-only answer comes from the server a pooled connection still points at (a
    standby after failover): only new connections can reach the new primary."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if "25006" in (_sqlstate(error), _sqlstate(getattr(error, "orig", None) or error)):
            return True
        error = error.__cause__ or error.__context__
    return False
