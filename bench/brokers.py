"""The brokers a bench run measures on: the embedded Tansu and Apache Kafka 4.1.1.

Production runs Apache Kafka; the embedded broker is what a developer's machine has at
hand. The comment stream's parts (lean reference, no-op agent, worker; latency) run on
each broker asked for, each in a broker of its own that the bench starts and stops (the
test suite's ``KafkaCluster``: free loopback ports, the JVM ended by pid).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.kafka import KafkaCluster
from worker.kafka.embedded import EmbeddedBroker

KINDS = ("tansu", "kafka")


@dataclass(frozen=True)
class BrokerAt:
    """A running broker: its kind (labels the figures), its bootstrap address and its
    processes' ids (the latency part reads the broker's CPU)."""

    kind: str
    address: str
    pids: tuple[int, ...]


def kinds(choice: str) -> list[str]:
    """``--broker``'s choice as the brokers to run on, the embedded one first."""
    return list(KINDS) if choice == "both" else [choice]


@contextmanager
def started(kind: str, logs: Path) -> Iterator[BrokerAt]:
    """A broker of ``kind`` for the duration of the block (its log under ``logs``)."""
    if kind == "tansu":
        with EmbeddedBroker(log_path=logs / "broker.log") as tansu:
            assert tansu.process is not None
            yield BrokerAt(kind, tansu.address, (tansu.process.pid,))
        return
    with KafkaCluster(verbose=False) as kafka:
        pids = tuple(n.process.pid for n in kafka.nodes if n.process is not None)
        yield BrokerAt(kind, kafka.bootstrap, pids)
