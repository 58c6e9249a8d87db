"""A database that answers ``SELECT 1`` but cannot work (read-only after a failover, a
statement or lock timeout, its backend terminated mid-batch) is an outage: the batch waits
and is retried, nothing is dead-lettered, nothing acknowledged (``handle`` does not return,
and the agents ack only after it returned), readiness says not ready; once the database
works again the same batch applies.

Driven through the transport-free ``Runtime`` (what the Faust agents call), on the real
PostgreSQL, each test in a database of its own (``ALTER DATABASE`` changes are per
database)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select

from tests.helpers import postgres as pg
from tests.helpers.database import Database
from tests.helpers.factories import batch, result
from tests.helpers.live import eventually
from worker.domain.batch import BatchResult
from worker.domain.wire import InputStream
from worker.runtime.process import Runtime
from worker.settings import Settings
from worker.storage import migrate
from worker.storage.models import ProcessedEventRow

C = InputStream.COMMENTS
USERS = (1, 2, 3)


@pytest.fixture
async def runtime(database: Database) -> AsyncIterator[Runtime]:
    rt = Runtime(Settings(database_url=database.url, db_retry_max_backoff=0.3))
    now = datetime.now(UTC)
    for user in USERS:
        await rt.store.upsert_auto(result(user, generated_at=now - timedelta(hours=1)), "s")
    yield rt
    await rt.close()


async def processed(rt: Runtime) -> int:
    async with rt.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(ProcessedEventRow)) or 0)


def retries(rt: Runtime, stream: InputStream) -> float:
    """The batch retries of ``stream`` counted so far (the metric counts them as they
    happen; the batch's own ``retries`` only appear once it returns)."""
    labels = {"stream": stream.value}
    return rt.metrics.registry.get_sample_value("wb_db_retries_total", labels) or 0.0


async def waits_for_the_database(
    rt: Runtime,
    task: asyncio.Task[Any],
    answers: bool = True,
    count: Callable[[Runtime], Awaitable[int]] = processed,
    more_retries: int = 3,
) -> None:
    """The batch hit an outage, keeps waiting (``more_retries`` retries after the outage
    showed), nothing of it is written or dead-lettered."""

    async def outage() -> bool:
        return bool(rt.pipeline.outages)

    await eventually(outage, timeout=20, what="the pipeline to report an outage")
    assert await rt.database_reachable() is answers, "SELECT 1 still works"
    assert not await rt.database_ready(), "readiness must say not ready"
    [(stream, _)] = rt.pipeline.outages
    seen = retries(rt, stream)

    async def several_retries() -> bool:
        return retries(rt, stream) >= seen + more_retries

    await eventually(several_retries, timeout=20, what=f"{more_retries} more retries")
    assert not task.done(), "the batch returned (its offsets would be acked)"
    assert await count(rt) == 0


async def applied(rt: Runtime, task: asyncio.Task[BatchResult]) -> BatchResult:
    res = await asyncio.wait_for(task, timeout=30)
    assert res.dead_letters == []
    assert res.outcomes == {("comments", "stale_marked"): len(USERS)}
    assert res.retries > 0
    assert await processed(rt) == len(USERS)
    assert rt.pipeline.outages == {}
    assert await rt.database_ready()
    return res


@pytest.mark.postgres
async def test_a_read_only_database_holds_the_batch_until_it_is_writable(
    database: Database, runtime: Runtime
) -> None:
    """SQLSTATE 25006, as a standby after failover answers (default_transaction_read_only
    on the database: every new session is read-only; the pool is emptied so that the
    worker's sessions are new)."""
    await database.alter("SET default_transaction_read_only = on")
    try:
        await runtime.close()
        task = asyncio.create_task(runtime.handle(C, batch()))
        await waits_for_the_database(runtime, task)
    finally:
        await database.alter("RESET default_transaction_read_only")
    # The pooled connections are still read-only sessions: the pipeline discards the pool
    # after a read-only answer, so the retry reaches a writable session.
    await applied(runtime, task)


@pytest.mark.postgres
@pytest.mark.parametrize("setting", ["statement_timeout", "lock_timeout"])
async def test_a_timeout_behind_another_sessions_lock_holds_the_batch(
    database: Database, runtime: Runtime, setting: str
) -> None:
    """SQLSTATE 57014 (statement timeout) / 55P03 (lock timeout): another session holds the
    highlights table; every attempt times out until it lets go."""
    locker = await asyncpg.connect(**pg.asyncpg_dsn(database.url)[1])
    lock = locker.transaction()
    await lock.start()
    await locker.execute("LOCK TABLE user_profile_highlights IN ACCESS EXCLUSIVE MODE")
    await database.alter(f"SET {setting} = '300ms'")
    try:
        await runtime.close()
        task = asyncio.create_task(runtime.handle(C, batch()))
        await waits_for_the_database(runtime, task)
        await lock.rollback()
        await applied(runtime, task)
    finally:
        await database.alter(f"RESET {setting}")
        await locker.close()


@pytest.mark.postgres
async def test_a_batch_of_the_stream_that_commits_leaves_another_waiting_not_ready(
    database: Database, runtime: Runtime
) -> None:
    """Input lanes run several batches of one stream at once: while one waits out an outage
    (a lock timeout on its user's row), another that commits does not make the worker
    ready again."""
    locker = await asyncpg.connect(**pg.asyncpg_dsn(database.url)[1])
    lock = locker.transaction()
    await lock.start()
    await locker.execute("SELECT 1 FROM user_profile_highlights WHERE user_id = 1 FOR UPDATE")
    await database.alter("SET lock_timeout = '300ms'")
    try:
        await runtime.close()
        stuck = asyncio.create_task(runtime.handle(C, batch((1,), prefix="stuck")))
        await waits_for_the_database(runtime, stuck)
        other = await runtime.handle(C, batch((2, 3), prefix="other"))
        assert other.retries == 0
        assert runtime.pipeline.outages, "the stuck batch is still waiting"
        assert not await runtime.database_ready()
        await lock.rollback()
        done = await asyncio.wait_for(stuck, timeout=30)
        assert done.retries > 0
        assert runtime.pipeline.outages == {}
        assert await runtime.database_ready()
    finally:
        await database.alter("RESET lock_timeout")
        await locker.close()


@pytest.mark.postgres
async def test_the_workers_backend_terminated_mid_batch(
    database: Database, runtime: Runtime
) -> None:
    """pg_terminate_backend of the session running the batch (SQLSTATE 57P01, then a dead
    connection): retried on a new connection, applied once."""
    locker = await asyncpg.connect(**pg.asyncpg_dsn(database.url)[1])
    lock = locker.transaction()
    await lock.start()
    await locker.execute("LOCK TABLE user_profile_highlights IN ACCESS EXCLUSIVE MODE")
    try:
        task = asyncio.create_task(runtime.handle(C, batch()))

        async def blocked() -> list[int]:
            rows = await database.admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = "
                "'Lock' AND pid <> $2",
                database.name,
                locker.get_server_pid(),
            )
            return [r["pid"] for r in rows]

        pids = await eventually(blocked, timeout=20, what="the batch to wait for the lock")
        for pid in pids:
            await database.admin.execute("SELECT pg_terminate_backend($1)", pid)
        # Its retry waits for the lock again (a new backend), so no more retries follow.
        await waits_for_the_database(runtime, task, more_retries=0)
        assert (await eventually(blocked, timeout=20, what="the retry")) != pids
        assert not task.done()
        await lock.rollback()
        await applied(runtime, task)
    finally:
        await locker.close()


@pytest.mark.postgres
async def test_a_pooled_connection_the_server_dropped_between_batches(
    database: Database, runtime: Runtime
) -> None:
    """The input batches' pool does not pre-ping (``Services.input_engine``): a connection
    the server ended while it idled in the pool fails the next batch's first statement,
    which is waited out and retried on a new connection, applied once, nothing dead-lettered."""
    first = await runtime.handle(C, batch(prefix="before"))
    assert first.retries == 0
    ended = await database.admin.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
        "AND pid <> pg_backend_pid() AND state = 'idle'",
        database.name,
    )
    assert ended, "the pool held an idle connection"
    res = await asyncio.wait_for(runtime.handle(C, batch(prefix="after")), timeout=30)
    assert res.dead_letters == []
    assert res.retries >= 1
    assert res.outcomes == {("comments", "coalesced"): len(USERS)}
    assert await processed(runtime) == 2 * len(USERS)


async def test_a_read_only_sqlite_file_holds_the_batch(tmp_path: Any) -> None:
    """SQLite's "attempt to write a readonly database" (SQLITE_READONLY, here by
    ``PRAGMA query_only``) is an outage too."""
    path = tmp_path / "ro.sqlite3"
    rt = Runtime(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
    await migrate.upgrade(rt.engine)
    now = datetime.now(UTC)
    for user in USERS:
        await rt.store.upsert_auto(result(user, generated_at=now - timedelta(hours=1)), "s")
    read_only = {"on": True}

    def query_only(dbapi_connection: Any, _record: Any) -> None:
        if read_only["on"]:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.close()

    event.listen(rt.engine.sync_engine, "connect", query_only)
    try:
        await rt.close()
        task = asyncio.create_task(rt.handle(C, batch()))

        async def count(_rt: Runtime) -> int:  # the worker's sessions begin with a write lock
            with sqlite3.connect(path) as conn:
                return int(conn.execute("SELECT count(*) FROM processed_events").fetchone()[0])

        await waits_for_the_database(rt, task, answers=False, count=count)
        read_only["on"] = False
        await rt.close()
        await applied(rt, task)
    finally:
        await rt.close()


@pytest.mark.postgres
async def test_the_relay_waits_while_the_database_refuses_new_connections(
    database: Database, runtime: Runtime
) -> None:
    """ALLOW_CONNECTIONS false answers new sessions with SQLSTATE 55000, an outage by its
    message (``classify``; checking whether the database answers raced with its
    re-opening): the relay waits instead of crashing the worker, and publishes once
    connections are allowed again."""
    published: list[object] = []

    async def publish(messages: object) -> None:
        published.append(messages)

    await runtime.store.regenerate(USERS[0], actor="ops")  # something to publish
    await database.alter("WITH ALLOW_CONNECTIONS false")
    try:
        await runtime.close()
        task = asyncio.create_task(
            runtime.retry_transient("relay", lambda: runtime.relay_once(publish))
        )
        await eventually(lambda: _not_ok(runtime), timeout=30, what="the relay waiting")
        assert not task.done() and not published
    finally:
        await database.alter("WITH ALLOW_CONNECTIONS true")
    assert await asyncio.wait_for(task, timeout=30) == 1
    assert published


async def _not_ok(runtime: Runtime) -> bool:
    return not runtime.db_ok
