"""Producing many messages at once: one record batch per partition, built here.

The relay publishes every regen request a comment burst causes. Sending them one by one
(``producer.send``, plus Faust's wrapper) costs Python work per message that a burst
multiplies; aiokafka's batch interface (``create_batch`` / ``send_batch``) builds each
partition's record batch directly, for a fraction of it (docs/performance.md). Each
message goes to the partition Kafka's default partitioner picks for its key (murmur2, as
the Java client and ``producer.send`` do), so a user's messages share one partition and
keep their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

PARTITIONER = DefaultPartitioner()


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


async def produce(producer: Any, messages: Sequence[Outgoing]) -> None:
    """Send ``messages`` with ``producer`` (an ``AIOKafkaProducer``) and return once the
    broker acknowledged all of them; raise if any batch failed. Order per partition is
    the order of ``messages``."""
    partitions: dict[str, list[int]] = {}
    building: dict[tuple[str, int], Any] = {}
    acks: list[asyncio.Future[Any]] = []
    for m in messages:
        if (known := partitions.get(m.topic)) is None:
            known = partitions[m.topic] = sorted(await producer.partitions_for(m.topic))
        tp = (m.topic, PARTITIONER(m.key, known, known))
        batch = building.get(tp)
        if batch is None:
            batch = building[tp] = producer.create_batch()
        if _append(batch, m):
            continue
        acks.append(await _submit(producer, batch, tp))  # full: send it, start the next
        batch = building[tp] = producer.create_batch()
        if not _append(batch, m):
            raise ValueError(f"a message of {len(m.value or b'')} bytes fits no batch")
    for tp, batch in building.items():
        acks.append(await _submit(producer, batch, tp))
    await asyncio.gather(*acks)


def _append(batch: Any, m: Outgoing) -> bool:
    return batch.append(key=m.key, value=m.value, timestamp=None, headers=m.headers) is not None


async def _submit(producer: Any, batch: Any, tp: tuple[str, int]) -> asyncio.Future[Any]:
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, tp[0], partition=tp[1])
    return future
