"""Shutdown is bounded: with the broker gone, aiokafka can retry forever while stopping;
`wb run` then exits hard after WB_SHUTDOWN_TIMEOUT instead of hanging a deploy."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.brokers import BROKER_KINDS, TestBroker, running_broker
from tests.helpers.live import WB, WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.parametrize("kind", BROKER_KINDS)
async def test_sigterm_with_the_broker_gone_exits_within_the_deadline(
    tmp_path: Path, kind: str
) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    subprocess.run(
        [WB, "db", "upgrade"],
        env={**os.environ, "WB_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    with running_broker(kind, tmp_path) as broker:
        await _stop_with_the_broker_gone(broker, url, tmp_path)


async def _stop_with_the_broker_gone(broker: TestBroker, url: str, tmp_path: Path) -> None:
    worker = WorkerProcess(
        broker.address, url, tmp_path, extra_env={"WB_SHUTDOWN_TIMEOUT": "3"}
    ).start()
    try:
        await worker.wait_ready()
        broker.kill()
        await asyncio.sleep(2)  # let the consumer notice: a fixed fault, not synchronisation
        assert worker.process is not None
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.process.wait, 60)
        elapsed = time.monotonic() - started
    finally:
        worker.kill()
    assert code in (0, 70)  # a clean stop is fine too; what matters is that it stops
    assert elapsed < 30
    log = next(tmp_path.glob("worker-*.log")).read_text(errors="replace")
    if code == 70:
        assert "shutdown did not finish in 3s; exiting hard" in log
