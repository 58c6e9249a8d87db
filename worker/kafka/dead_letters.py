"""Dead letters: the contract of ``<topic>.dlq`` (suffix, headers), writing one, and
``wb dlq replay``, which sends them back to the topic they came from.

A dead letter is the refused message's original bytes and key (so it, and a replay of it,
land on the partition of the message's other events) with headers saying why and where
from: ``error`` (a reason of the closed set), ``reason`` (detail), ``source_topic``,
``source_partition``, ``source_offset``.

Once the cause is fixed (a bug, a missing mapping, a producer that sent bad data and was
corrected), an operator replays the dead-letter topic. Progress is a consumer group's
committed offsets (``<app id>-dlq-replay``), committed after each produced chunk, so a
replay that is interrupted and run again does not send anything twice and a later
replay only sends what arrived since. Replay stops at the end offsets seen at its start.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from worker.domain.batch import DeadLetter
from worker.kafka.connection import KafkaConnection, connected, partitions_of
from worker.kafka.publisher import Outgoing

SUFFIX = ".dlq"
ERROR, REASON = "error", "reason"
SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET = "source_topic", "source_partition", "source_offset"
REPLAY_HEADER = "wb_replayed_from"
MAX_REASON_BYTES = 1000


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of ``topic`` (itself if it is one already)."""
    return topic if topic.endswith(SUFFIX) else f"{topic}{SUFFIX}"


def dead_letter_record(letter: DeadLetter) -> Outgoing:
    """The record that carries ``letter`` to its topic's dead-letter topic."""
    m = letter.message
    headers = [
        (ERROR, letter.reason.value.encode()),
        (REASON, letter.detail.encode("utf-8", "replace")[:MAX_REASON_BYTES]),
        (SOURCE_TOPIC, m.topic.encode()),
        (SOURCE_PARTITION, str(m.partition).encode()),
        (SOURCE_OFFSET, str(m.offset).encode()),
    ]
    return Outgoing(dead_letter_topic(m.topic), m.key, m.value, headers)


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: int = 0
    by_error: Counter[str] = field(default_factory=Counter)


def _headers(record: object) -> dict[str, bytes]:
    return {k: v for k, v in (getattr(record, "headers", None) or [])}


async def replay(
    conn: KafkaConnection,
    dlq_topic: str,
    group: str,
    *,
    only_error: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> ReplayResult:
    """Re-produce each dead letter's original bytes to its ``source_topic``."""
    result = ReplayResult()
    consumer = AIOKafkaConsumer(
        **conn.client_options(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**conn.client_options(), acks="all")
    async with connected(conn, consumer), connected(conn, producer):
        await _replay_from_committed(
            consumer, producer, dlq_topic, only_error, limit, dry_run, result
        )
    return result


async def _replay_from_committed(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    dlq_topic: str,
    only_error: str | None,
    limit: int | None,
    dry_run: bool,
    result: ReplayResult,
) -> None:
    """From the replay group's committed offsets (or the beginning) to the current end."""
    tps = await partitions_of(consumer, dlq_topic)
    if not tps:
        return
    consumer.assign(tps)
    committed = {tp: await consumer.committed(tp) for tp in tps}
    for tp, offset in committed.items():
        if offset is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        while await consumer.position(tp) < ends[tp]:
            if await _chunk(consumer, producer, tp, ends[tp], only_error, limit, dry_run, result):
                return


async def _chunk(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    tp: TopicPartition,
    end: int,
    only_error: str | None,
    limit: int | None,
    dry_run: bool,
    result: ReplayResult,
) -> bool:
    """Replay one fetched chunk and commit past it; True when the limit was reached."""
    records = (await consumer.getmany(tp, timeout_ms=1000, max_records=500)).get(tp, [])
    last, stop = None, False
    for record in records:
        if record.offset >= end or (limit is not None and result.replayed >= limit):
            stop = True
            break
        await _one(producer, record, only_error, dry_run, result)
        last = record.offset
    if last is not None and not dry_run:
        await producer.flush()
        await consumer.commit({tp: OffsetAndMetadata(last + 1, "")})
    return stop and limit is not None and result.replayed >= limit


async def _one(
    producer: AIOKafkaProducer,
    record: object,
    only_error: str | None,
    dry_run: bool,
    result: ReplayResult,
) -> None:
    headers = _headers(record)
    error = headers.get(ERROR, b"").decode(errors="replace")
    source = headers.get(SOURCE_TOPIC, b"").decode(errors="replace")
    if not source or (only_error is not None and error != only_error):
        result.skipped += 1
        return
    result.by_error[error] += 1
    result.replayed += 1
    if not dry_run:
        position = (
            f"{source}:{headers.get(SOURCE_PARTITION, b'?').decode()}:"
            f"{headers.get(SOURCE_OFFSET, b'?').decode()}"
        )
        await producer.send(
            source,
            getattr(record, "value", None),
            key=getattr(record, "key", None),
            headers=[(REPLAY_HEADER, position.encode())],
        )
