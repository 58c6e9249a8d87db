"""A dead letter keeps the original message's Kafka key, and a replay reuses it: the
replayed message lands on the partition it came from, in order with its key's others
(a keyless dead letter used to be replayed to whichever partition the producer chose)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers.live import Kafka, WorkerProcess, eventually
from worker.domain.batch import DeadLetter, RawMessage
from worker.domain.decoder import RejectReason
from worker.kafka import dead_letters as dlq
from worker.kafka.dead_letters import dead_letter_record
from worker.kafka.publisher import PARTITIONER

COMMENTS = "signal.comments"


def test_the_dead_letter_carries_the_original_key() -> None:
    message = RawMessage(b"{oops", COMMENTS, 3, 17, b"user-42")
    out = dead_letter_record(DeadLetter(message, RejectReason.NOT_JSON, "Expecting value"))
    assert (out.topic, out.key, out.value) == (f"{COMMENTS}.dlq", b"user-42", b"{oops")
    headers = dict(out.headers)
    assert (headers["source_partition"], headers["source_offset"]) == (b"3", b"17")


def test_a_message_without_a_key_stays_without_one() -> None:
    out = dead_letter_record(
        DeadLetter(RawMessage(b"x", COMMENTS, 0, 1), RejectReason.NOT_JSON, "d")
    )
    assert out.key is None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any]] = []

    async def send(self, topic: str, value: Any, key: Any = None, headers: Any = None) -> None:
        self.sent.append((topic, value, key))


async def test_replay_reuses_the_dead_letters_key() -> None:
    record = SimpleNamespace(
        value=b"{oops",
        key=b"user-42",
        headers=[("error", b"not_json"), ("source_topic", COMMENTS.encode())],
    )
    producer = FakeProducer()
    await dlq._one(producer, record, None, False, dlq.ReplayResult())  # type: ignore[arg-type]
    assert producer.sent == [(COMMENTS, b"{oops", b"user-42")]


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
async def test_a_replayed_dead_letter_returns_to_its_partition(
    worker: WorkerProcess, kafka: Kafka, live_db_url: str
) -> None:
    from tests.helpers.cli import wb

    key, bad = b"user-4242", b"{not json, key 4242"
    await kafka.producer.send_and_wait(COMMENTS, bad, key=key)

    async def dead_letters() -> list[Any]:
        return [r for r in await kafka.read_all(f"{COMMENTS}.dlq") if r.value == bad]

    [letter] = await eventually(dead_letters, what="the dead letter")
    [original] = [r for r in await kafka.read_all(COMMENTS) if r.value == bad]
    assert letter.key == key
    dlq_partitions = sorted(await kafka.producer.partitions_for(f"{COMMENTS}.dlq"))
    assert letter.partition == PARTITIONER(key, dlq_partitions, dlq_partitions)
    env = {"WB_KAFKA_BROKER": kafka.bootstrap, "WB_DATABASE_URL": live_db_url}
    env["WB_APP_ID"] = worker.app_id
    done = await asyncio.to_thread(wb, "dlq", "replay", COMMENTS, "--error", "not_json", env=env)
    assert done.returncode == 0, done.stderr

    async def replayed() -> list[Any]:
        records = await kafka.read_all(COMMENTS)
        return [r for r in records if r.value == bad and dlq.REPLAY_HEADER in dict(r.headers)]

    [again] = await eventually(replayed, what="the replayed message")
    assert (again.key, again.partition) == (key, original.partition)
