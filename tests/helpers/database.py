"""Database helpers shared by fixtures and tests."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers.live import eventually
from worker.storage.models import Base


async def truncate_all(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(text(f"DELETE FROM {table.name}"))


WAITING_ON_A_LOCK = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' AND datname = current_database() "
    "AND (CAST(:event AS text) IS NULL OR wait_event = :event) "
    "AND (CAST(:query AS text) IS NULL OR query LIKE :query)"
)


async def waiting_on_lock(
    engine: AsyncEngine, *, wait_event: str | None = None, query_like: str | None = None
) -> bool:
    """Whether a session of this PostgreSQL database waits on a heavyweight lock (of kind
    ``wait_event``: advisory, transactionid, ...; in a statement LIKE ``query_like``): how a
    test knows a concurrent transaction reached the lock it is meant to meet, instead of
    sleeping."""
    async with engine.connect() as probe:
        params = {"event": wait_event, "query": query_like}
        return bool(await probe.scalar(WAITING_ON_A_LOCK, params))


@dataclass
class Database:
    """A PostgreSQL database of a test's own, and a connection that can change its settings."""

    url: str
    name: str
    admin: asyncpg.Connection  # on the server's maintenance database, never read-only

    async def alter(self, setting: str) -> None:
        await self.admin.execute(f'ALTER DATABASE "{self.name}" {setting}')


QUEUED = text(
    "SELECT count(*) FROM user_profile_highlights WHERE regen_queued_at IS NOT NULL "
    "AND user_id = ANY(:ids)"
)


async def until_queued(
    sessions: async_sessionmaker[AsyncSession], users: range, timeout: float, what: str
) -> None:
    """Until every one of ``users`` has a request queued with the scheduler (a pause holds
    them: then their release order is the queue's, not the order they were applied in)."""

    async def all_queued() -> bool:
        async with sessions() as session:
            return await session.scalar(QUEUED, {"ids": list(users)}) == len(users)

    await eventually(all_queued, timeout=timeout, what=what)
