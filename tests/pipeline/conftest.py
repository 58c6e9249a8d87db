"""Fixtures of the pipeline tests that need a PostgreSQL database of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests import pg
from worker import migrate
from worker.db import create_engine


@dataclass
class Database:
    url: str
    name: str
    admin: asyncpg.Connection  # on the server's maintenance database, never read-only

    async def alter(self, setting: str) -> None:
        await self.admin.execute(f'ALTER DATABASE "{self.name}" {setting}')


@pytest.fixture
async def database(pg_admin_url: str) -> AsyncIterator[Database]:
    url = await pg.create_database(pg_admin_url, prefix="wboutage")
    engine = create_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    _, kwargs = pg.asyncpg_dsn(pg_admin_url)
    admin = await asyncpg.connect(**kwargs)
    name = url.rsplit("/", 1)[1].split("?")[0]
    try:
        yield Database(url, name, admin)
    finally:
        await admin.close()
        await pg.drop_database(pg_admin_url, url)
