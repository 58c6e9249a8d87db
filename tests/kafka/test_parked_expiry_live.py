"""A comment whose request is never mapped does not stay parked forever: on a real broker
and worker it reaches ``signal.comments.dlq`` after ``WB_PARKED_RETENTION``, with reason
``unmapped``, its original key and where it came from; the worker counts it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.helpers.factories import comment_doc
from tests.helpers.live import Kafka, WorkerProcess, eventually, http_get

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
COMMENTS = "signal.comments"


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """The module's worker: parked comments expire after two seconds, swept every second."""
    return {"WB_SWEEP_INTERVAL": "1", "WB_GAUGE_INTERVAL": "1", "WB_PARKED_RETENTION": "2s"}


async def test_an_unmapped_comment_is_dead_lettered_with_its_key_after_the_retention(
    worker: WorkerProcess, kafka: Kafka
) -> None:
    doc = comment_doc("live-unmapped-1", None, datetime.now(UTC), req="never-mapped-1")
    key = b"never-mapped-1"
    await kafka.producer.send_and_wait(COMMENTS, json.dumps(doc).encode(), key=key)

    async def letters() -> list[Any]:
        found = await kafka.read_all(f"{COMMENTS}.dlq")
        return [r for r in found if json.loads(r.value).get("event_id") == doc["event_id"]]

    [letter] = await eventually(letters, timeout=60, what="the unmapped dead letter")
    [original] = [r for r in await kafka.read_all(COMMENTS) if r.key == key]
    headers = dict(letter.headers)
    assert letter.key == key
    assert headers["error"] == b"unmapped"
    assert headers["source_topic"] == COMMENTS.encode()
    assert (headers["source_partition"], headers["source_offset"]) == (
        str(original.partition).encode(),
        str(original.offset).encode(),
    )
    assert json.loads(letter.value)["request_id"] == "never-mapped-1"

    async def counted() -> bool:  # once the letters' transaction committed
        _, body = await asyncio.to_thread(http_get, f"{worker.url}/metrics")
        return 'wb_dead_letters_total{reason="unmapped",stream="comments"} 1.0' in str(body)

    await eventually(counted, what="the unmapped dead letter counted")
