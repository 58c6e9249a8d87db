"""The leader's table-wide gauges on a real broker: read when it is assigned the leadership,
not a gauge interval later (an hour here), so a worker exports them from its start."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.live import WorkerProcess, eventually, http_get

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """The module's worker: the gauge timer would first fire after an hour."""
    return {"WB_GAUGE_INTERVAL": "1h"}


async def test_a_new_leader_exports_the_table_wide_gauges_at_once(worker: WorkerProcess) -> None:
    async def exported() -> str:
        _, body = await asyncio.to_thread(http_get, f"{worker.url}/metrics")
        return str(body) if 'wb_highlights{state="fresh"}' in str(body) else ""

    text = await eventually(exported, timeout=30, what="the table-wide gauges")
    assert "wb_regen_queued{priority=" in text
    assert "wb_outbox_backlog " in text
