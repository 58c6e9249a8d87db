"""The brokers a bench run measures on: the embedded Tansu and Apache Kafka 4.1.1.

Production runs Apache Kafka; the embedded broker is what a developer's machine has at
hand. The comment stream's parts (lean reference, no-op agent, worker; latency) run on
each broker asked for, each in a broker of its own that the bench starts and stops (the
test suite's ``KafkaCluster``: free loopback ports, the JVM ended by pid).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.kafka import KafkaCluster
from worker.kafka.embedded import EmbeddedBroker
from worker.settings import EMBEDDED_BUSY_MIN_BYTES

KINDS = ("tansu", "kafka")


@dataclass(frozen=True)
class BrokerAt:
    """A running broker: its kind (labels the figures), its bootstrap address, its
    processes' ids (the latency part reads the broker's CPU) and the settings a worker
    has on it beyond the bench's own: on Tansu, those ``wb run`` gives a worker on its
    embedded broker (``Settings.on_embedded_broker``)."""

    kind: str
    address: str
    pids: tuple[int, ...]
    worker_env: dict[str, str] = field(default_factory=dict)


def kinds(choice: str) -> list[str]:
    """``--broker``'s choice as the brokers to run on, the embedded one first."""
    return list(KINDS) if choice == "both" else [choice]


@contextmanager
def started(kind: str, logs: Path) -> Iterator[BrokerAt]:
    """A broker of ``kind`` for the duration of the block (its log under ``logs``)."""
    if kind == "tansu":
        with EmbeddedBroker(log_path=logs / "broker.log") as tansu:
            assert tansu.process is not None
            embedded = {"WB_CONSUMER_BUSY_MIN_BYTES": str(EMBEDDED_BUSY_MIN_BYTES)}
            yield BrokerAt(kind, tansu.address, (tansu.process.pid,), embedded)
        return
    with KafkaCluster(verbose=False) as kafka:
        pids = tuple(n.process.pid for n in kafka.nodes if n.process is not None)
        yield BrokerAt(kind, kafka.bootstrap, pids)
