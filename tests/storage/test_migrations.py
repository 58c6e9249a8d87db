"""Alembic owns the schema: it round-trips, and it matches the models exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.clock import T0
from worker.domain.snapshot import baseline
from worker.services import outbox
from worker.storage import migrate
from worker.storage.database import session_factory
from worker.storage.models import Base


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


async def test_batched_outbox_migration_carries_unpublished_requests(
    migrated_engine: AsyncEngine,
) -> None:
    """0004 keeps what was still to publish (and drops what was published), both ways."""
    payload = {"event_id": "e1", "user_id": 7, "reason": "expired", "note": "tab\tnewline\n"}
    await migrate.downgrade(migrated_engine, "0003")
    async with migrated_engine.begin() as conn:
        await conn.execute(text("DELETE FROM outbox"))
        for event_id, published in (("e0", T0), ("e1", None)):
            await conn.execute(
                text(
                    "INSERT INTO outbox (event_id, topic, key, payload, created_at, published_at) "
                    "VALUES (:e, 'regen-requests', '7', :p, :c, :pub)"
                ),
                {"e": event_id, "p": json.dumps(payload), "c": T0, "pub": published},
            )
    await migrate.upgrade(migrated_engine)
    async with session_factory(migrated_engine)() as session:
        [message] = await outbox.pending(session)
    assert (message.stream, message.key, message.payload()) == ("regen-requests", "7", payload)
    await migrate.downgrade(migrated_engine, "0003")
    async with migrated_engine.connect() as conn:
        rows = (await conn.execute(text("SELECT event_id, key, payload FROM outbox"))).all()
    await migrate.upgrade(migrated_engine)
    assert [(e, k, p if isinstance(p, dict) else json.loads(p)) for e, k, p in rows] == [
        ("e1", "7", payload)
    ]


async def test_outbox_messages_use_lz4_where_postgresql_has_it(
    migrated_engine: AsyncEngine,
) -> None:
    """0005: lz4 where the server was built with it (the machine's server), left alone
    where not (the throwaway server's build); PostgreSQL's pglz after a downgrade."""
    if migrated_engine.dialect.name != "postgresql":
        pytest.skip("column compression is PostgreSQL's")
    compression = text(
        "SELECT attcompression::text FROM pg_attribute "
        "WHERE attrelid = 'outbox'::regclass AND attname = 'messages'"
    )
    lz4 = text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    async with migrated_engine.connect() as conn:
        available = await conn.scalar(lz4)
        upgraded = await conn.scalar(compression)
    await migrate.downgrade(migrated_engine, "0004")
    async with migrated_engine.connect() as conn:
        downgraded = await conn.scalar(compression)
    await migrate.upgrade(migrated_engine)
    assert (upgraded, downgraded) == (("l", "p") if available else ("", ""))


async def test_input_snapshot_migration_starts_rows_at_their_recorded_activity(
    migrated_engine: AsyncEngine,
) -> None:
    """0011: version 0; the fingerprint of the recorded activity where there is some; a fresh
    highlight covers it, a stale one or a placeholder covers nothing known."""
    await migrate.downgrade(migrated_engine, "0010")
    rows = {1: (False, T0), 2: (True, T0), 3: (False, None)}  # user: (is_stale, generated_at)
    async with migrated_engine.begin() as conn:
        for table in ("user_profile_highlights", "signal_activity"):
            await conn.execute(text(f"DELETE FROM {table}"))
        for user, (stale, at) in rows.items():
            await conn.execute(
                text(
                    "INSERT INTO user_profile_highlights (user_id, is_stale, generated_at, "
                    "created_at, updated_at) VALUES (:u, :s, :g, :c, :c)"
                ),
                {"u": user, "s": stale, "g": at, "c": T0},
            )
        await conn.execute(
            text(
                "INSERT INTO signal_activity (user_id, comment_count, last_comment_at, "
                "last_comment_id, updated_at) VALUES (1, 3, :t, 'c-9', :t), (2, 1, :t, 'c-4', :t)"
            ),
            {"t": T0},
        )
    await migrate.upgrade(migrated_engine)
    async with migrated_engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT user_id, input_version, input_fingerprint, covered_version, "
                "covered_fingerprint FROM user_profile_highlights ORDER BY user_id"
            )
        )
        got = [tuple(r) for r in found]
    first, second = baseline(3, "c-9", T0), baseline(1, "c-4", T0)
    assert got == [(1, 0, first, 0, first), (2, 0, second, None, None), (3, 0, 0, None, None)]


async def test_processed_events_pages_are_half_filled_on_postgresql(
    migrated_engine: AsyncEngine,
) -> None:
    """0014: room on each page for the outcome's row version (a HOT update); PostgreSQL's
    default fill after a downgrade."""
    if migrated_engine.dialect.name != "postgresql":
        pytest.skip("a table's fillfactor is PostgreSQL's")
    options = text("SELECT reloptions FROM pg_class WHERE oid = 'processed_events'::regclass")
    async with migrated_engine.connect() as conn:
        upgraded = await conn.scalar(options)
    await migrate.downgrade(migrated_engine, "0013")
    async with migrated_engine.connect() as conn:
        downgraded = await conn.scalar(options)
    await migrate.upgrade(migrated_engine)
    assert (upgraded, downgraded) == (["fillfactor=50"], None)
