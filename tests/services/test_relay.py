"""The outbox relay with the broker away: a publish that never finishes must not keep its
transaction (and the outbox rows it locked) open; rows are deleted only once published,
and a relay in another worker takes over what a stuck one let go."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
import pytest

from tests.helpers import postgres as pg
from tests.helpers.database import Database
from tests.helpers.factories import C, batch
from tests.helpers.live import eventually
from worker.domain.values import utcnow
from worker.runtime.process import Runtime
from worker.services.outbox import OutboxEntry, OutboxMessage, batch_rows, take
from worker.settings import Settings
from worker.storage.database import create_engine, session_factory

pytestmark = pytest.mark.postgres
BOUND_S = 0.5


def relay_runtime(database: Database) -> Runtime:
    return Runtime(
        Settings(
            database_url=database.url,
            relay_publish_timeout=timedelta(seconds=BOUND_S),
            db_retry_max_backoff=0.3,
        )
    )


class StuckBroker:
    """The broker is unreachable: the agents' publish retries forever."""

    def __init__(self) -> None:
        self.taken = 0  # publishes begun: each holds the outbox rows it was given

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        self.taken += 1
        await asyncio.Event().wait()


class Broker:
    def __init__(self) -> None:
        self.received: list[OutboxMessage] = []

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        self.received.extend(messages)


async def relay_loop(rt: Runtime, publish: object, stop: asyncio.Event) -> None:
    """What the agents' relay task does, without Faust (a short sleep for its wait for a
    wake: nothing here wakes it)."""
    while not stop.is_set():
        sent = await rt.retry_transient("relay", lambda: rt.relay_once(publish))  # type: ignore[arg-type]
        if not rt.relay_again(sent):
            await asyncio.sleep(0.05)


def entries(prefix: str, count: int) -> list[OutboxEntry]:
    return [
        OutboxEntry("wb.regen", str(i), {"event_id": f"{prefix}{i}"}, utcnow())
        for i in range(count)
    ]


async def test_a_take_fills_its_chunk_and_a_short_one_leaves_nothing_behind(
    database: Database,
) -> None:
    """The relay looks again at once only after a full chunk: a take goes on until its
    chunk is full (the last row may take it over, a row is published whole), so one that
    comes back short took every row there was."""
    engine = create_engine(database.url)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as session:
            for prefix, count in (("a", 3), ("b", 4), ("c", 5), ("d", 2)):
                session.add_all(batch_rows(entries(prefix, count)))
        async with sessions.begin() as session:
            first = await take(session, 5)  # 3, then 4: over 5, the row whole
        async with sessions.begin() as session:
            second = await take(session, 5)  # 5: full, there may be more
        async with sessions.begin() as session:
            third = await take(session, 5)  # 2: short, so nothing is left
        async with sessions.begin() as session:
            assert await take(session, 5) == []
        assert [len(first), len(second), len(third)] == [7, 5, 2]
        assert [m.payload()["event_id"] for m in first][:4] == ["a0", "a1", "a2", "b0"]
    finally:
        await engine.dispose()


async def backlog(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(message_count), 0) FROM outbox"))


async def test_a_stuck_publish_holds_no_transaction_beyond_the_bound(database: Database) -> None:
    rt = relay_runtime(database)
    probe = await asyncpg.connect(**pg.asyncpg_dsn(database.url)[1])
    stop = asyncio.Event()
    try:
        for i in range(3):  # three outbox rows: first requests for new users
            await rt.handle(C, batch((100 * i + 1, 100 * i + 2), prefix=f"b{i}-"))
        queued = await backlog(probe)
        assert queued > 0
        relay = asyncio.create_task(relay_loop(rt, StuckBroker().publish, stop))
        longest, locked_by_another = 0.0, 0
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            open_for = await probe.fetchval(
                "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) "
                "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
                "AND xact_start IS NOT NULL",
                database.name,
            )
            longest = max(longest, float(open_for))
            try:
                async with probe.transaction():
                    await probe.fetch("SELECT id FROM outbox FOR UPDATE NOWAIT")
                locked_by_another += 1
            except asyncpg.exceptions.LockNotAvailableError:
                pass
            await asyncio.sleep(0.05)
        assert longest < BOUND_S + 1.5, f"a transaction stayed open {longest:.1f}s"
        assert locked_by_another > 0, "the outbox rows were never free for another session"
        assert await backlog(probe) == queued, "rows were deleted without being published"
        stop.set()
        relay.cancel()
        broker, stop = Broker(), asyncio.Event()
        relay = asyncio.create_task(relay_loop(rt, broker.publish, stop))

        async def drained() -> bool:
            return await backlog(probe) == 0

        await eventually(drained, timeout=20, what="the outbox to drain once the broker is back")
        assert len(broker.received) == queued
    finally:
        stop.set()
        relay.cancel()
        await probe.close()
        await rt.close()


async def test_another_workers_relay_takes_over_what_a_stuck_one_let_go(
    database: Database,
) -> None:
    """Two workers, one of whose broker connection hangs: every message still goes out
    (through the other), none is lost, duplicates are allowed."""
    stuck_rt, good_rt = relay_runtime(database), relay_runtime(database)
    probe = await asyncpg.connect(**pg.asyncpg_dsn(database.url)[1])
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for i in range(5):
            await good_rt.handle(C, batch((100 * i + 1, 100 * i + 2), prefix=f"b{i}-"))
        queued = await backlog(probe)
        hung = StuckBroker()
        tasks.append(asyncio.create_task(relay_loop(stuck_rt, hung.publish, stop)))

        async def taken() -> bool:
            return hung.taken > 0

        await eventually(taken, timeout=10, what="the stuck relay to take the first rows")
        broker = Broker()
        tasks.append(asyncio.create_task(relay_loop(good_rt, broker.publish, stop)))

        async def drained() -> bool:
            return await backlog(probe) == 0

        await eventually(drained, timeout=30, what="the other relay to publish everything")
        ids = {m.payload()["event_id"] for m in broker.received}
        assert len(ids) == queued
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await probe.close()
        await stuck_rt.close()
        await good_rt.close()
