"""The batched publisher against a real broker: every message arrives once, on the
partition Kafka's default partitioner picks for its key, in order, with its headers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.helpers.brokers import TestBroker
from tests.helpers.live import Kafka
from worker.kafka.publisher import PARTITIONER, Outgoing, produce

pytestmark = [pytest.mark.broker]
PARTITIONS = 3


@pytest.fixture
async def producer(broker: TestBroker) -> AsyncIterator[AIOKafkaProducer]:
    # A small batch size, so that one partition's messages fill several batches.
    client = AIOKafkaProducer(bootstrap_servers=broker.address, acks=-1, max_batch_size=2048)
    await client.start()
    yield client
    await client.stop()


async def new_topic(broker: TestBroker) -> str:
    name = f"publisher-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.address)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()
    return name


async def test_keyed_messages_land_in_order_on_their_default_partition(
    broker: TestBroker, kafka: Kafka, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(broker)
    sent = [Outgoing(topic, f"user-{i % 17}".encode(), f"{i:05d}".encode()) for i in range(600)]
    await produce(producer, sent)
    records = await kafka.read_all(topic)
    assert sorted(r.value for r in records) == [m.value for m in sent]  # each exactly once
    partitions = list(range(PARTITIONS))
    for record in records:
        assert record.partition == PARTITIONER(record.key, partitions, partitions)
    for key in {m.key for m in sent}:
        arrived = [r.value for r in sorted(records, key=lambda r: r.offset) if r.key == key]
        assert arrived == [m.value for m in sent if m.key == key]


async def test_headers_unkeyed_and_oversized_messages(
    broker: TestBroker, kafka: Kafka, producer: AIOKafkaProducer
) -> None:
    """Dead letters: no key, headers, and a value larger than a whole batch."""
    topic = await new_topic(broker)
    large = b"x" * 300_000
    sent = [
        Outgoing(topic, None, b"small", [("error", b"not_json"), ("reason", b"bad")]),
        Outgoing(topic, None, large, [("error", b"too_large")]),
    ]
    await produce(producer, sent)
    records = {r.value: r for r in await kafka.read_all(topic)}
    assert set(records) == {b"small", large}
    assert list(records[b"small"].headers) == [("error", b"not_json"), ("reason", b"bad")]
    assert list(records[large].headers) == [("error", b"too_large")]
