"""Fixtures of the pipeline tests that need a PostgreSQL database of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.helpers import postgres as pg
from tests.helpers.database import Database
from worker.storage import migrate
from worker.storage.database import create_engine


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
