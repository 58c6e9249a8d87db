"""``wb topic produce|tail``: type and read topic messages by hand, like kcat.

kcat works against Apache Kafka; the embedded Tansu build does not answer the ApiVersions
handshake of Debian's kcat (librdkafka 2.0), so these speak Kafka through aiokafka and
work against both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker.kafka.connection import KafkaConnection, connected, partitions_of


async def produce(conn: KafkaConnection, topic: str, lines: Iterable[str], key: str | None) -> int:
    """Send each non-empty line as one message (acks=all); returns how many were sent."""
    sent = 0
    async with connected(conn, AIOKafkaProducer(**conn.client_options(), acks="all")) as producer:
        for line in lines:
            line = line.rstrip("\n")
            if line.strip():
                await producer.send_and_wait(
                    topic, line.encode(), key=key.encode() if key else None
                )
                sent += 1
    return sent


def render(record: Any) -> str:
    """One line per message: key, then the value (JSON kept as is), then headers."""
    value = record.value.decode("utf-8", "replace") if record.value is not None else "null"
    key = record.key.decode("utf-8", "replace") if record.key is not None else ""
    headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or [])}
    suffix = f" headers={json.dumps(headers, ensure_ascii=False)}" if headers else ""
    return f"{record.partition}:{record.offset} key={key} {value}{suffix}"


async def tail(
    conn: KafkaConnection,
    topic: str,
    emit: Callable[[str], None],
    *,
    from_beginning: bool,
    exit_at_end: bool,
) -> int:
    """Print messages of every partition; with ``exit_at_end`` stop at the current end."""
    consumer = AIOKafkaConsumer(**conn.client_options(), enable_auto_commit=False)
    count = 0
    async with connected(conn, consumer):
        tps = await partitions_of(consumer, topic)
        if not tps:
            return 0
        consumer.assign(tps)
        await (consumer.seek_to_beginning(*tps) if from_beginning else consumer.seek_to_end(*tps))
        ends = await consumer.end_offsets(tps)
        while True:
            if exit_at_end and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                return count
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    emit(render(record))
                    count += 1
