"""Database helpers shared by fixtures and tests."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from worker.storage.models import Base


async def truncate_all(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(text(f"DELETE FROM {table.name}"))


@dataclass
class Database:
    """A PostgreSQL database of a test's own, and a connection that can change its settings."""

    url: str
    name: str
    admin: asyncpg.Connection  # on the server's maintenance database, never read-only

    async def alter(self, setting: str) -> None:
        await self.admin.execute(f'ALTER DATABASE "{self.name}" {setting}')
