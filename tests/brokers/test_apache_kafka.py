"""The test broker helper (tests/helpers/kafka.py) against real Apache Kafka 4.x in KRaft mode:
one node, one node with SASL_SSL + SCRAM-SHA-512, and a three-node cluster for failover.

Each module-scoped cluster starts once (a single node in ~3-4 s, three in ~7 s on two cores);
the tests use their own topic and group names. Skipped when the classpath was not resolved
(deploy/kafka/resolve) or java is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from tests.helpers.kafka import KafkaCluster
from tests.helpers.kafka_nodes import KafkaUnavailable, classpath
from tests.helpers.kafka_tls import make_ca

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _cluster(**kwargs: object) -> Iterator[KafkaCluster]:
    try:
        classpath()
    except KafkaUnavailable as exc:
        pytest.skip(str(exc))
    with KafkaCluster(**kwargs) as cluster:  # type: ignore[arg-type]
        yield cluster


@pytest.fixture(scope="module")
def single() -> Iterator[KafkaCluster]:
    yield from _cluster()


@pytest.fixture(scope="module")
def secured() -> Iterator[KafkaCluster]:
    yield from _cluster(sasl_ssl=True)


@pytest.fixture(scope="module")
def trio() -> Iterator[KafkaCluster]:
    yield from _cluster(nodes=3)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _consume(cluster: KafkaCluster, topic: str, group: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, group_id=group, auto_offset_reset="earliest", **cluster.client_config()
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) < count:
                message = await consumer.getone()
                values.append(message.value)
        await consumer.commit()
        return values
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- one node


async def test_single_node_produce_consume_and_group_command(single: KafkaCluster) -> None:
    assert single.start_seconds is not None
    assert single.bootstrap == f"127.0.0.1:{single.nodes[0].port}"
    topic, group = _name("roundtrip"), _name("group")

    producer = AIOKafkaProducer(acks="all", **single.client_config())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")  # auto-created, 4 partitions
    finally:
        await producer.stop()
    assert await _consume(single, topic, group, 1) == [b"hello"]

    described = single.consumer_groups("--describe", "--group", group)
    assert group in described and topic in described
    assert len([line for line in described.splitlines() if line.startswith(group)]) == 4

    reset = single.consumer_groups(
        "--reset-offsets", "--to-earliest", "--execute", "--group", group, "--topic", topic
    )
    assert topic in reset
    assert await _consume(single, topic, group, 1) == [b"hello"]  # read again from the start


# --------------------------------------------------------------------------- SASL_SSL


async def test_sasl_ssl_scram_roundtrip(secured: KafkaCluster) -> None:
    security = secured.security
    assert security is not None and security.mechanism == "SCRAM-SHA-512"
    assert security.ca_file.is_file() and security.username == "alice"
    topic = _name("secure")
    producer = AIOKafkaProducer(**secured.client_config())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over tls")
    finally:
        await producer.stop()
    group = _name("secure-group")
    assert await _consume(secured, topic, group, 1) == [b"over tls"]
    assert group in secured.consumer_groups("--list")  # the Java tool over SASL_SSL too


async def _refused(cluster: KafkaCluster, caplog: pytest.LogCaptureFixture, **kw: object) -> str:
    assert cluster.security is not None
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap,
        request_timeout_ms=5000,
        **cluster.security.client_kwargs(**kw),  # type: ignore[arg-type]
    )
    began = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            async with asyncio.timeout(20):
                with pytest.raises(KafkaConnectionError):
                    await producer.start()
    finally:
        await producer.stop()
    assert time.monotonic() - began < 10, "a refused connection must fail fast, not hang"
    return caplog.text


async def test_wrong_password_fails_fast(
    secured: KafkaCluster, caplog: pytest.LogCaptureFixture
) -> None:
    text = await _refused(secured, caplog, password="not-the-password")
    assert "SaslAuthenticationFailed" in text and "invalid credentials" in text


async def test_untrusted_ca_fails_fast(
    secured: KafkaCluster, caplog: pytest.LogCaptureFixture
) -> None:
    other_ca, _ = make_ca(secured.workdir / "untrusted", name="some-other-ca")
    text = await _refused(secured, caplog, ca_file=other_ca)
    assert "CERTIFICATE_VERIFY_FAILED" in text


# --------------------------------------------------------------------------- three nodes


async def test_leader_failover_with_acks_all(trio: KafkaCluster) -> None:
    assert len(trio.bootstrap.split(",")) == 3
    topic = _name("failover")
    admin = AIOKafkaAdminClient(**trio.client_config())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=3)])
    finally:
        await admin.close()

    leader = await trio.leader(topic, 0)
    producer = AIOKafkaProducer(acks="all", request_timeout_ms=15000, **trio.client_config())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=0)
        trio.kill(leader)
        try:
            new_leader = await trio.wait_for_leader(topic, 0, not_on=leader, timeout=30)
            assert new_leader is not leader and new_leader.running
            # Two in-sync replicas left = min.insync.replicas: acks=all still succeeds.
            async with asyncio.timeout(30):
                sent = await producer.send_and_wait(topic, b"after", partition=0)
            assert sent.offset == 1
        finally:
            trio.restart(leader)
        assert leader.running
        await producer.send_and_wait(topic, b"restarted", partition=0)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(auto_offset_reset="earliest", **trio.client_config())
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        async with asyncio.timeout(30):
            batch = await consumer.getmany(partition, timeout_ms=10000)
        assert [m.value for m in batch[partition]] == [b"before", b"after", b"restarted"]
    finally:
        await consumer.stop()


async def test_group_coordinator_found_and_group_described(trio: KafkaCluster) -> None:
    topic, group = _name("coord"), _name("coord-group")
    producer = AIOKafkaProducer(acks="all", **trio.client_config())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    assert await _consume(trio, topic, group, 1) == [b"x"]

    coordinator = await trio.coordinator(group)
    assert coordinator in trio.nodes and coordinator.running
    described = trio.consumer_groups("--describe", "--group", group)
    assert group in described and topic in described

    trio.kill(coordinator)
    try:
        moved = await trio.coordinator(group)  # another replica of __consumer_offsets takes over
        assert moved is not coordinator
        assert group in trio.consumer_groups("--describe", "--group", group)
    finally:
        trio.restart(coordinator)
