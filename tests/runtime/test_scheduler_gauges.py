"""The scheduler's gauges, read from the database on both: depth and oldest wait by
priority (what the alerts and the dashboard use), and the budget left. The queue is
counted in the same pass as the rows by state, so a priority's rows in different states
must add up."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import C, comment, result
from worker.domain.scheduling import RegenPolicy
from worker.runtime.metrics import Metrics
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore

S = timedelta(seconds=1)


async def test_queue_depth_oldest_wait_and_budget_by_priority(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    policy = RegenPolicy(settle=5 * S, max_wait=60 * S, rate_per_min=60, burst=3)
    store = HighlightStore(sessions, clock=clock, policy=policy)
    for user in (1, 2, 3):
        await store.upsert_auto(result(user, generated_at=T0 - timedelta(hours=1)), f"s{user}")
    await store.mark_stale(1, "manual")  # operator priority, queued at T0
    clock.now = T0 + 30 * S
    deletion = comment("d2", 2, clock.now, "deleted")
    await Pipeline(sessions, clock=clock, policy=policy).process(C, [deletion])
    await store.regenerate(3, actor="ops")  # operator priority too, but the row is fresh
    metrics = Metrics()

    def sample(name: str, priority: str | None = None) -> float | None:
        labels = {"priority": priority} if priority else {}
        return metrics.registry.get_sample_value(name, labels)

    async with sessions() as session:
        await metrics.refresh_gauges(session, T0 + 90 * S, policy)
    assert sample("wb_regen_queued", "operator") == 2  # a stale row and a fresh one
    assert sample("wb_regen_queued", "privacy") == 1
    assert sample("wb_regen_queued_age_seconds", "operator") == 90  # the older of the two
    assert sample("wb_regen_queued_age_seconds", "privacy") == 60
    assert sample("wb_regen_queued_age_seconds", "expired") == 0
    assert sample("wb_regen_budget_tokens") == 3  # never spent: full
