"""The scheduler's step reads the queue's index in order and stops at its limit, whatever
the queue's length: PostgreSQL's plan over 100,000 queued rows (analysed). A step used to
sort the whole queue every tick (136-235 ms at 100,000; every worker, every 250 ms), and
its skip query read every queued row to find, usually, none (5-74 ms at 50,000-500,000):
it reads the skippable rows' index, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.clock import T0
from tests.helpers.plans import plan_nodes, sqlite_plan
from worker.domain.scheduling import RegenPolicy
from worker.services.scheduler import due_rows, skippable

QUEUED = 100_000
# One in ten queued by comments (priority 2, some unseen), the rest by expiry (4).
FILL = """
INSERT INTO user_profile_highlights (user_id, created_at, updated_at, generation, is_stale,
    manual_override, regen_queued_at, regen_first_change_at, regen_last_change_at,
    regen_priority, regen_unseen, regen_queued_reason)
SELECT g, CAST(:t AS timestamptz), CAST(:t AS timestamptz), 1, true, false,
    CAST(:t AS timestamptz) - g * interval '1 second',
    CAST(:t AS timestamptz) - g * interval '1 second',
    CAST(:t AS timestamptz) - g * interval '1 second',
    CASE WHEN g % 10 = 0 THEN 2 ELSE 4 END, g % 3, 'expired'
FROM generate_series(1, :n) AS g
"""
SKIPPABLE = 4  # of the queued rows: their inputs are what their highlight covers
COVERED = """
UPDATE user_profile_highlights SET generated_at = created_at,
    covered_fingerprint = input_fingerprint WHERE user_id % :every = 0
"""
# SQLite's fill: the same queue, by a recursive count.
SQLITE_FILL = """
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n)
INSERT INTO user_profile_highlights (user_id, created_at, updated_at, generation, is_stale,
    manual_override, regen_queued_at, regen_first_change_at, regen_last_change_at,
    regen_priority, regen_unseen, regen_queued_reason)
SELECT n, :t, :t, 1, 1, 0, :t, :t, :t, CASE WHEN n % 10 = 0 THEN 2 ELSE 4 END, n % 3, 'expired'
FROM g
"""
POLICY = RegenPolicy(settle=timedelta(seconds=5), max_wait=timedelta(seconds=60), rate_per_min=600)


async def _queue(engine: AsyncEngine, n: int) -> None:
    """``n`` due requests, ``SKIPPABLE`` of them skippable, analysed."""
    postgres = engine.dialect.name == "postgresql"
    at = T0 - timedelta(minutes=5)
    async with engine.begin() as conn:
        fill = text(FILL if postgres else SQLITE_FILL)
        await conn.execute(fill, {"t": at if postgres else at.strftime("%F %T.%f"), "n": n})
        await conn.execute(text(COVERED), {"every": n // SKIPPABLE})
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE user_profile_highlights" if postgres else "ANALYZE"))
        await conn.commit()


@pytest.fixture
async def queue_on_postgres(engine: AsyncEngine) -> AsyncEngine:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's plans (SQLite's: the last test)")
    await _queue(engine, QUEUED)
    return engine


async def _index_scans(engine: AsyncEngine, stmt: Any, *, analyze: bool = False) -> list[Any]:
    """The plan's index scans, once it is known to sort nothing and scan no table whole;
    the plan's top node first."""
    nodes = await plan_nodes(engine, stmt, analyze=analyze)
    kinds = [n["Node Type"] for n in nodes]
    assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds
    return [nodes[0], *(n for n in nodes if n["Node Type"] == "Index Scan")]


async def test_a_step_reads_the_queue_index_in_order_and_sorts_nothing(
    queue_on_postgres: AsyncEngine,
) -> None:
    _, *scans = await _index_scans(queue_on_postgres, due_rows(T0, POLICY, 100))
    assert [n["Index Name"] for n in scans] == ["ix_user_profile_highlights_regen_queue_order"]


async def test_the_skip_query_reads_the_skippable_rows_not_the_queue(
    queue_on_postgres: AsyncEngine,
) -> None:
    top, *scans = await _index_scans(queue_on_postgres, skippable(T0, POLICY), analyze=True)
    assert [n["Index Name"] for n in scans] == ["ix_user_profile_highlights_regen_skippable"]
    # Visited: the skippable rows, each locked and returned; not one of the queue's others.
    assert scans[0]["Actual Rows"] == top["Actual Rows"] == SKIPPABLE
    assert scans[0].get("Rows Removed by Filter", 0) == 0


async def test_sqlites_skip_query_reads_the_skippable_rows_index_in_order(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plan (PostgreSQL's: the test above)")
    await _queue(engine, 10_000)
    steps = await sqlite_plan(engine, skippable(T0, POLICY))
    async with engine.connect() as conn:
        assert len((await conn.execute(skippable(T0, POLICY))).all()) == SKIPPABLE
    assert steps == [
        "SCAN user_profile_highlights USING INDEX ix_user_profile_highlights_regen_skippable"
    ]
