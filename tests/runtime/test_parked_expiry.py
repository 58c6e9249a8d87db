"""The worker's side of parked comments (both databases): the gauges an alert watches, and
the expiry that publishes ``unmapped`` dead letters at least once (the rows go only once
the broker acked) and counts them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import C, comment, comment_doc
from worker.domain.batch import DeadLetter, RawMessage
from worker.domain.scheduling import IMMEDIATE
from worker.runtime.metrics import Metrics
from worker.runtime.process import Runtime
from worker.services.pipeline import Pipeline
from worker.settings import Settings
from worker.storage.models import ParkedCommentRow

S = timedelta(seconds=1)


async def test_the_gauges_count_parked_comments_and_age_the_oldest(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    pipeline = Pipeline(sessions, clock=clock)
    metrics = Metrics()
    async with sessions() as session:
        await metrics.refresh_gauges(session, T0, IMMEDIATE)
    assert metrics.registry.get_sample_value("wb_parked_oldest_age_seconds") == 0
    await pipeline.process(C, [comment("e1", None, T0, req="req-1")])
    clock.advance(30 * S)
    await pipeline.process(C, [comment("e2", None, T0, req="req-2")])
    async with sessions() as session:
        await metrics.refresh_gauges(session, T0 + 90 * S, IMMEDIATE)
    assert metrics.registry.get_sample_value("wb_parked_comments") == 2
    assert metrics.registry.get_sample_value("wb_parked_oldest_age_seconds") == 90


@pytest.fixture
async def runtime(database_url: str, engine: AsyncEngine) -> AsyncIterator[Runtime]:
    """A worker whose parked comments expire at once (the tables emptied by ``engine``)."""
    settings = Settings(
        database_url=database_url,
        parked_retention=timedelta(0),
        relay_publish_timeout=timedelta(seconds=0.2),
    )
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        await rt.close()


class Broker:
    def __init__(self) -> None:
        self.received: list[DeadLetter] = []

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        self.received.extend(letters)


async def away(letters: Sequence[DeadLetter]) -> None:
    """The broker is unreachable: the Kafka layer's produce retries until cancelled."""
    await asyncio.Event().wait()


async def test_expired_comments_leave_only_once_published_and_are_counted(
    runtime: Runtime, sessions: async_sessionmaker[AsyncSession]
) -> None:
    value = json.dumps(comment_doc("e1", None, T0, req="req-1")).encode()
    await runtime.handle(C, [RawMessage(value, "signal.comments", 2, 7, b"k1")])
    assert await runtime.expire_parked(away) == 0  # timed out, rolled back
    async with sessions() as session:
        assert await session.get(ParkedCommentRow, "e1") is not None  # rolled back: kept
    broker = Broker()
    assert await runtime.expire_parked(broker.publish) == 1
    assert [(d.message.key, d.reason.value) for d in broker.received] == [(b"k1", "unmapped")]
    async with sessions() as session:
        assert await session.get(ParkedCommentRow, "e1") is None
    assert await runtime.expire_parked(broker.publish) == 0
    labels = {"stream": "comments", "reason": "unmapped"}
    assert runtime.metrics.registry.get_sample_value("wb_dead_letters_total", labels) == 1
    assert runtime.unsaved_dead_letters == {("comments", "unmapped"): 1}
