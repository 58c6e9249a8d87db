"""Outage or the event's fault: ``worker.db.classify`` decides whether a failed batch is
retried (nothing acknowledged) or isolated (a single bad event dead-lettered). A database
that cannot work now must never look like bad data, whatever the driver raises."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi as pg_dbapi
from sqlalchemy.ext.asyncio import AsyncEngine

from worker.storage.database import (
    Fault,
    classify,
    create_engine,
    is_transient,
    needs_new_connection,
)

OUTAGE, DATA, OTHER = Fault.OUTAGE, Fault.DATA, Fault.OTHER


def through_sqlalchemy(error: Exception) -> sa_exc.DBAPIError:
    """An asyncpg error as SQLAlchemy's asyncpg dialect raises it."""
    return sa_exc.DBAPIError("SELECT 1", None, pg_dbapi.Error(str(error), error))


# (SQLSTATE, asyncpg class, expected): what PostgreSQL answers and what it means for a batch.
SQLSTATES: list[tuple[str, type[Exception], Fault]] = [
    ("25006", asyncpg.exceptions.ReadOnlySQLTransactionError, OUTAGE),
    ("25P03", asyncpg.exceptions.IdleInTransactionSessionTimeoutError, OUTAGE),
    ("53100", asyncpg.exceptions.DiskFullError, OUTAGE),
    ("53200", asyncpg.exceptions.OutOfMemoryError, OUTAGE),
    ("53300", asyncpg.exceptions.TooManyConnectionsError, OUTAGE),
    ("57014", asyncpg.exceptions.QueryCanceledError, OUTAGE),
    ("57P01", asyncpg.exceptions.AdminShutdownError, OUTAGE),
    ("57P02", asyncpg.exceptions.CrashShutdownError, OUTAGE),
    ("57P03", asyncpg.exceptions.CannotConnectNowError, OUTAGE),
    ("08000", asyncpg.exceptions.PostgresConnectionError, OUTAGE),
    ("08003", asyncpg.exceptions.ConnectionDoesNotExistError, OUTAGE),
    ("08006", asyncpg.exceptions.ConnectionFailureError, OUTAGE),
    ("08001", asyncpg.exceptions.ClientCannotConnectError, OUTAGE),
    ("40001", asyncpg.exceptions.SerializationError, OUTAGE),
    ("40P01", asyncpg.exceptions.DeadlockDetectedError, OUTAGE),
    ("55P03", asyncpg.exceptions.LockNotAvailableError, OUTAGE),
    ("58030", asyncpg.exceptions.PostgresIOError, OUTAGE),
    ("XX000", asyncpg.exceptions.InternalServerError, OUTAGE),
    ("XX001", asyncpg.exceptions.DataCorruptedError, OUTAGE),
    ("42501", asyncpg.exceptions.InsufficientPrivilegeError, OUTAGE),
    ("22001", asyncpg.exceptions.StringDataRightTruncationError, DATA),
    ("22P02", asyncpg.exceptions.InvalidTextRepresentationError, DATA),
    ("22008", asyncpg.exceptions.DatetimeFieldOverflowError, DATA),
    ("22021", asyncpg.exceptions.CharacterNotInRepertoireError, DATA),
    ("23505", asyncpg.exceptions.UniqueViolationError, DATA),
    ("23502", asyncpg.exceptions.NotNullViolationError, DATA),
    ("23514", asyncpg.exceptions.CheckViolationError, DATA),
    ("21000", asyncpg.exceptions.CardinalityViolationError, DATA),
    ("P0001", asyncpg.exceptions.RaiseError, DATA),
    ("42P01", asyncpg.exceptions.UndefinedTableError, OTHER),
    ("42601", asyncpg.exceptions.PostgresSyntaxError, OTHER),
    ("42703", asyncpg.exceptions.UndefinedColumnError, OTHER),
]


@pytest.mark.parametrize(("code", "cls", "expected"), SQLSTATES, ids=[c for c, *_ in SQLSTATES])
def test_postgresql_errors_by_sqlstate(code: str, cls: type[Exception], expected: Fault) -> None:
    error = cls("boom")
    assert getattr(error, "sqlstate", None) == code
    assert classify(error) is expected  # asyncpg directly
    assert classify(through_sqlalchemy(error)) is expected  # through SQLAlchemy
    wrapped = RuntimeError("batch failed")
    wrapped.__cause__ = through_sqlalchemy(error)
    assert classify(wrapped) is expected  # judged by what it wraps
    assert is_transient(error) is (expected is OUTAGE)


def _real_sqlite_error(tmp_path: Path, what: str) -> sqlite3.Error:
    """Make SQLite itself raise (its exceptions carry the result code's name)."""
    path = tmp_path / f"{what}.sqlite3"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    setup.execute("INSERT INTO t VALUES (1, 'a')")
    setup.commit()
    statements: dict[str, Callable[[], object]] = {
        "readonly": lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute(
            "INSERT INTO t VALUES (2, 'b')"
        ),
        "locked": lambda: sqlite3.connect(path, timeout=0).execute("BEGIN IMMEDIATE"),
        "unique": lambda: setup.execute("INSERT INTO t VALUES (1, 'b')"),
        "not_null": lambda: setup.execute("INSERT INTO t VALUES (3, NULL)"),
        "syntax": lambda: setup.execute("INSER INTO t VALUES (1)"),
        "no_table": lambda: setup.execute("SELECT * FROM nope"),
        "cantopen": lambda: sqlite3.connect(tmp_path / "missing" / "x.sqlite3").execute("SELECT 1"),
    }
    holder = sqlite3.connect(path, isolation_level=None)
    if what == "locked":
        holder.execute("BEGIN IMMEDIATE")
    try:
        statements[what]()
    except sqlite3.Error as exc:
        return exc
    finally:
        holder.close()
    raise AssertionError(f"{what}: SQLite did not refuse")


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("readonly", OUTAGE),
        ("locked", OUTAGE),
        ("cantopen", OUTAGE),
        ("unique", DATA),
        ("not_null", DATA),
        ("syntax", OTHER),
        ("no_table", OTHER),
    ],
)
def test_sqlite_errors_by_result_code(tmp_path: Path, what: str, expected: Fault) -> None:
    error = _real_sqlite_error(tmp_path, what)
    assert classify(error) is expected
    wrapper = (
        sa_exc.IntegrityError
        if isinstance(error, sqlite3.IntegrityError)
        else sa_exc.OperationalError
    )
    assert classify(wrapper("INSERT", None, error)) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError("network is unreachable"), OUTAGE),
        (ConnectionResetError("reset by peer"), OUTAGE),
        (ConnectionRefusedError("refused"), OUTAGE),
        (TimeoutError(), OUTAGE),
        (sa_exc.TimeoutError("QueuePool limit reached"), OUTAGE),
        (sa_exc.DisconnectionError("gone"), OUTAGE),
        (
            asyncpg.exceptions.InterfaceError("cannot perform operation: connection is closed"),
            OUTAGE,
        ),
        (sqlite3.OperationalError("database is locked"), OUTAGE),  # no result code attached
        (sqlite3.OperationalError("disk I/O error"), OUTAGE),
        (sqlite3.OperationalError("attempt to write a readonly database"), OUTAGE),
        (
            sa_exc.OperationalError("SELECT", None, Exception("server closed the connection")),
            OUTAGE,
        ),
        (sa_exc.OperationalError("SELECT", None, Exception("no such table: t")), OTHER),
        (sa_exc.IntegrityError("INSERT", None, Exception("duplicate")), DATA),
        (ValueError("bad value"), OTHER),
        (KeyError("k"), OTHER),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), OTHER),
        (RuntimeError("bug"), OTHER),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_errors_by_type(error: BaseException, expected: Fault) -> None:
    assert classify(error) is expected


def test_a_database_refusing_new_sessions_is_an_outage_other_55000s_are_not() -> None:
    refusing = asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
        'database "wb" is not currently accepting connections'
    )
    assert classify(refusing) is OUTAGE
    assert classify(through_sqlalchemy(refusing)) is OUTAGE
    other = asyncpg.exceptions.ObjectNotInPrerequisiteStateError("cursor is not open")
    assert classify(other) is OTHER


def test_an_invalidated_connection_is_an_outage() -> None:
    error = sa_exc.DBAPIError("SELECT 1", None, Exception("?"), connection_invalidated=True)
    assert classify(error) is OUTAGE


def test_a_cycle_of_causes_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a) is OTHER


def test_only_a_read_only_answer_asks_for_new_connections() -> None:
    assert needs_new_connection(
        through_sqlalchemy(asyncpg.exceptions.ReadOnlySQLTransactionError("ro"))
    )
    assert not needs_new_connection(
        through_sqlalchemy(asyncpg.exceptions.QueryCanceledError("timeout"))
    )


CODES = [(code, expected) for code, _, expected in SQLSTATES]


async def _fault_of(engine: AsyncEngine, *statements: str) -> Fault | None:
    """How ``classify`` judges what PostgreSQL raises for ``statements`` in one transaction."""
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    except sa_exc.DBAPIError as exc:
        return classify(exc)
    return None


@pytest.mark.postgres
async def test_real_postgresql_errors_of_every_class(pg_url: str) -> None:
    """The same table with errors PostgreSQL really raised, through SQLAlchemy and asyncpg
    as the worker's engine sees them (``RAISE ... USING ERRCODE`` raises any SQLSTATE)."""
    engine = create_engine(pg_url)
    got: dict[str, Fault | None] = {}
    try:
        for code, _ in CODES:
            got[code] = await _fault_of(
                engine, f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$"
            )
        got["real read-only"] = await _fault_of(
            engine, "SET TRANSACTION READ ONLY", "CREATE TEMPORARY TABLE ro_probe (x int)"
        )
        got["real statement timeout"] = await _fault_of(
            engine, "SET LOCAL statement_timeout = '10ms'", "SELECT pg_sleep(1)"
        )
        got["real division by zero"] = await _fault_of(engine, "SELECT 1 / 0")
    finally:
        await engine.dispose()
    expected = dict(CODES) | {
        "real read-only": OUTAGE,
        "real statement timeout": OUTAGE,
        "real division by zero": DATA,
    }
    assert got == expected
