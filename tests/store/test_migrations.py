"""Alembic owns the schema: it round-trips, and it matches the models exactly."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from worker import migrate
from worker.models import Base


async def test_upgrade_downgrade_upgrade_round_trip(migrated_engine: AsyncEngine) -> None:
    expected = set(Base.metadata.tables)
    await migrate.downgrade(migrated_engine, "base")
    async with migrated_engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert tables.isdisjoint(expected)
    assert await migrate.current_revision(migrated_engine) is None
    await migrate.upgrade(migrated_engine)
    async with migrated_engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert expected <= tables
    assert await migrate.current_revision(migrated_engine) == migrate.head_revision()


async def test_models_match_migrated_schema(migrated_engine: AsyncEngine) -> None:
    def diff(conn: Any) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        return list(compare_metadata(context, Base.metadata))

    async with migrated_engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
