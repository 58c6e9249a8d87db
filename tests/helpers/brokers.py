"""The brokers a live test runs on: the embedded Tansu and Apache Kafka 4.x.

Every test that needs a broker takes the ``broker`` fixture, parametrised over
``BROKER_KINDS``: the same test runs against both. Apache Kafka needs its classpath
(``deploy/kafka/resolve``, run by ``make test``): without it the Kafka half is skipped on a
developer's machine and fails under CI, which must run it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.kafka import KafkaCluster
from tests.helpers.kafka_nodes import KafkaUnavailable
from tests.helpers.ports import free_port
from worker.kafka.embedded import EmbeddedBroker

BROKER_KINDS = ("tansu", "kafka")


@dataclass
class TestBroker:
    """A running broker of either kind; ``cluster`` is set for Apache Kafka."""

    __test__ = False  # not a test class, despite its name

    kind: str
    address: str
    cluster: KafkaCluster | None = None
    embedded: EmbeddedBroker | None = None

    def kill(self) -> None:
        """SIGKILL every broker process (a crash, not a shutdown)."""
        if self.embedded is not None:
            self.embedded.kill()
        if self.cluster is not None:
            for node in self.cluster.nodes:
                if node.running:
                    self.cluster.kill(node)


def broker_params() -> list[object]:
    return [pytest.param(kind, id=kind) for kind in BROKER_KINDS]


def kafka_or_skip(**kwargs: object) -> KafkaCluster:
    """A started Apache Kafka cluster; skipped (not failed) off CI when Kafka's classpath
    or java is missing."""
    try:
        return KafkaCluster(**kwargs).start()  # type: ignore[arg-type]
    except KafkaUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Apache Kafka unavailable: {exc}")


@contextmanager
def running_broker(kind: str, logs: Path, nodes: int = 1) -> Iterator[TestBroker]:
    """Start a broker of ``kind`` for the duration of the block; logs go under ``logs``."""
    if kind == "tansu":
        with EmbeddedBroker(
            port=free_port(), log_path=logs / f"tansu-{os.urandom(3).hex()}.log"
        ) as tansu:
            yield TestBroker("tansu", tansu.address)
        return
    cluster = kafka_or_skip(
        nodes=nodes, workdir=logs / f"kafka-{os.urandom(3).hex()}", verbose=False
    )
    try:
        yield TestBroker("kafka", cluster.bootstrap, cluster)
    finally:
        cluster.stop(graceful=False)
