"""What the alerts on retries and dead letters need from the worker's metrics: retries are
counted while the database still fails (a batch stuck in an outage never returns), and the
counters the alerts take ``increase``/``rate`` of are exported at 0 from the start."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.factories import comment_doc, later, result
from worker.domain.batch import RawMessage
from worker.domain.decoder import RejectReason
from worker.domain.wire import InputStream
from worker.runtime.metrics import Metrics
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore


def retries(metrics: Metrics, stream: str) -> float | None:
    return metrics.registry.get_sample_value("wb_db_retries_total", {"stream": stream})


def test_counters_alerted_on_start_at_zero_for_every_label_value() -> None:
    metrics = Metrics()
    for stream in InputStream:
        assert retries(metrics, stream.value) == 0
        for reason in RejectReason:
            labels = {"stream": stream.value, "reason": reason.value}
            assert metrics.registry.get_sample_value("wb_dead_letters_total", labels) == 0


async def test_retries_are_counted_while_the_database_still_fails(
    sessions: async_sessionmaker[AsyncSession],
    store: HighlightStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await store.upsert_auto(result(1), "snap")
    metrics = Metrics()
    pipeline = Pipeline(sessions, max_backoff_s=0.01, on_retry=metrics.count_retry)
    real_apply = pipeline._apply
    seen_at_attempt: list[float | None] = []

    async def failing_three_times(stream: InputStream, events: list[Any]) -> Any:
        seen_at_attempt.append(retries(metrics, "comments"))
        if len(seen_at_attempt) <= 3:
            raise ConnectionError("database unreachable")
        return await real_apply(stream, events)

    monkeypatch.setattr(pipeline, "_apply", failing_three_times)
    message = RawMessage(
        value=json.dumps(comment_doc("e1", 1, later(1))).encode(), topic="t", partition=0, offset=0
    )
    done = await pipeline.process(InputStream.COMMENTS, [message])
    assert seen_at_attempt == [0, 1, 2, 3]  # each retry shows before the batch commits
    assert done.retries == 3
    metrics.record_batch("comments", done, 0.01, later(2))
    assert retries(metrics, "comments") == 3  # not counted a second time at the commit
    assert retries(metrics, "requests") == 0
