"""``retry_through_outage``: which failures are waited out (an outage class, or anything
while the database does not answer), the backoff's bounds, the callback before each wait,
and the pool renewed after a read-only answer. The pipeline and the runtime both retry
through it; tests/services/test_database_outages.py drives it through real outages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.ports import free_port
from worker.storage.database import create_engine, session_factory
from worker.storage.outage import FIRST_DELAY_S, retry_through_outage


class Waits:
    """The ``on_outage`` calls: each error's type and the delay announced for it."""

    def __init__(self) -> None:
        self.seen: list[tuple[type[Exception], float]] = []

    def __call__(self, exc: Exception, delay: float) -> None:
        self.seen.append((type(exc), delay))


def failing(times: int, error: Callable[[], Exception]) -> Callable[[], Awaitable[str]]:
    """An action that raises ``error()`` its first ``times`` calls, then returns "done"."""
    calls = {"n": 0}

    async def action() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error()
        return "done"

    return action


class ReadOnly(Exception):
    """What a standby answers a write with after a failover (SQLSTATE 25006)."""

    sqlstate = "25006"


async def test_an_outage_is_waited_out_doubling_the_delay_up_to_the_bound(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    waits = Waits()
    action = failing(4, lambda: ConnectionError("connection refused"))
    done = await retry_through_outage(sessions, action, max_backoff_s=0.25, on_outage=waits)
    assert done == "done"
    assert FIRST_DELAY_S == 0.1
    assert waits.seen == [(ConnectionError, d) for d in (0.1, 0.2, 0.25, 0.25)]


async def test_other_errors_are_raised_at_once_while_the_database_answers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A real error of the database that is not an outage (a schema problem) is the
    caller's to handle: retrying it would stall the work forever."""
    waits = Waits()
    calls = []

    async def broken_query() -> None:
        calls.append(1)
        async with sessions() as session:
            await session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(Exception, match="no_such_table") as raised:
        await retry_through_outage(sessions, broken_query, max_backoff_s=0.2, on_outage=waits)
    assert not isinstance(raised.value, ConnectionError | OSError)
    assert calls == [1] and waits.seen == []


async def test_any_error_is_an_outage_while_the_database_does_not_answer() -> None:
    """Nobody listens where the database should be: even an error that is not of an outage
    class (how a server refusing connections may surface) is waited out."""
    engine = create_engine(f"postgresql+asyncpg://wb:wb@127.0.0.1:{free_port()}/wb")
    try:
        waits = Waits()
        action = failing(1, lambda: ValueError("not an outage class"))
        done = await retry_through_outage(
            session_factory(engine), action, max_backoff_s=0.2, on_outage=waits
        )
    finally:
        await engine.dispose()
    assert done == "done" and waits.seen == [(ValueError, 0.1)]


@pytest.mark.parametrize(
    ("error", "renewed"), [(ReadOnly, True), (lambda: ConnectionError("reset"), False)]
)
async def test_only_a_read_only_answer_renews_the_pool(
    database_url: str, error: Callable[[], Exception], renewed: bool
) -> None:
    """Pooled connections may still point at the old primary, now a standby; other outages
    keep the pool (its pre-ping replaces dead connections)."""
    engine = create_engine(database_url)
    try:
        pool = engine.pool
        action = failing(1, error)
        await retry_through_outage(
            session_factory(engine), action, max_backoff_s=0.2, on_outage=Waits()
        )
        assert (engine.pool is not pool) is renewed
    finally:
        await engine.dispose()
