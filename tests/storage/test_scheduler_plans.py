"""The scheduler's step reads the queue's index in order and stops at its limit, whatever
the queue's length: PostgreSQL's plan over 100,000 queued rows (analysed). A step used to
sort the whole queue every tick (136-235 ms at 100,000; every worker, every 250 ms)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.clock import T0
from tests.helpers.plans import plan_nodes
from worker.domain.scheduling import RegenPolicy
from worker.services.scheduler import due_rows

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


async def test_a_step_reads_the_queue_index_in_order_and_sorts_nothing(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    async with engine.begin() as conn:
        await conn.execute(text(FILL), {"t": T0 - timedelta(minutes=5), "n": QUEUED})
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE user_profile_highlights"))
        await conn.commit()
    policy = RegenPolicy(
        settle=timedelta(seconds=5), max_wait=timedelta(seconds=60), rate_per_min=600
    )
    nodes = await plan_nodes(engine, due_rows(T0, policy, 100))
    kinds = [n["Node Type"] for n in nodes]
    assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds
    scans = [n for n in nodes if n["Node Type"] == "Index Scan"]
    assert [n["Index Name"] for n in scans] == ["ix_user_profile_highlights_regen_queue_order"]
