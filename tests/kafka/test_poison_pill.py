"""Poison pills on one live partition: good events interleaved with every hostile message
the decoder tests know (huge numbers, duplicate keys last in 256 KiB, extreme offsets,
invalid UTF-8, NUL, deep and wide values, ...). Every good event is applied, every hostile
one reaches the dead-letter topic with its key and a reason of the closed set, the agent is
never restarted, the committed offset reaches the end and ``/healthz`` answers throughout."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import hostile
from tests.helpers.factories import comment_doc
from tests.helpers.live import Kafka, WorkerProcess, eventually, http_get
from worker.domain.decoder import Rejected, RejectReason, decode
from worker.domain.wire import InputStream
from worker.storage.models import ProcessedEventRow

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
COMMENTS = "signal.comments"
KEY = "poison"  # one key: one partition for all of them, in this order
REASONS = {r.value for r in RejectReason}


def hostile_comments() -> list[tuple[str, bytes, str | None]]:
    """(name, bytes, expected reason or None when the decoder accepts it)."""
    out = []
    for name, stream, raw in hostile.messages():
        if stream is InputStream.COMMENTS:
            try:
                decode(stream, raw, datetime.now(UTC))
                out.append((name, raw, None))
            except Rejected as exc:
                out.append((name, raw, exc.reason.value))
    return out


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_good_events_survive_every_hostile_message_on_their_partition(
    worker: WorkerProcess, kafka: Kafka, live_sessions: async_sessionmaker[AsyncSession]
) -> None:
    pills = hostile_comments()
    assert sum(reason is not None for _, _, reason in pills) >= 20
    healthz: list[float] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status, _ = await asyncio.to_thread(http_get, f"{worker.url}/healthz", 5.0)
            assert status == 200
            healthz.append(time.monotonic() - started)
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    good, now = [], datetime.now(UTC) - timedelta(minutes=1)
    last = None
    for i, (_, raw, _) in enumerate(pills):
        doc = comment_doc(f"pill-good-{i}", 7000 + i, now, "created", f"pr-{i}")
        good.append(doc["event_id"])
        await kafka.send(COMMENTS, doc, key=KEY)
        last = await kafka.producer.send_and_wait(COMMENTS, raw, key=KEY.encode())
    assert last is not None
    tp = TopicPartition(COMMENTS, last.partition)

    async def all_good_applied() -> bool:
        async with live_sessions() as session:
            rows = await session.scalars(
                select(ProcessedEventRow.event_id).where(ProcessedEventRow.event_id.in_(good))
            )
            return len(set(rows)) == len(good)

    await eventually(all_good_applied, timeout=120, what="every good event applied")
    expected = [(raw, reason) for _, raw, reason in pills if reason is not None]

    async def dead_letters() -> list[object]:
        letters = await kafka.read_all(f"{COMMENTS}.dlq")
        return letters if len(letters) >= len(expected) else []

    letters = await eventually(dead_letters, timeout=60, what="every hostile message dead-lettered")
    by_value = {bytes(r.value): r for r in letters}
    for raw, reason in expected:
        letter = by_value[raw]
        headers = dict(letter.headers)
        assert letter.key == KEY.encode()
        assert headers["error"].decode() == reason and reason in REASONS

    async def offsets_at_end() -> bool:
        return await committed(kafka.bootstrap, worker.app_id, tp) == last.offset + 1

    await eventually(offsets_at_end, timeout=60, what="the committed offset at the end")
    stop.set()
    await watcher
    log = "".join(
        p.read_text(errors="replace") for p in worker.log_dir.glob(f"worker-{worker.app_id}-*.log")
    )
    assert "Restarting dead" not in log and "Traceback" not in log
    assert healthz and max(healthz) < 2.0, f"/healthz took up to {max(healthz):.2f}s"
