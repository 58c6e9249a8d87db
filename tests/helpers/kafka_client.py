"""What a test asks a running Apache Kafka cluster through aiokafka: whether its nodes are
up, who leads a partition, who coordinates a group; the base of ``KafkaCluster``, which
adds the processes (configuration, format, start, stop)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from tests.helpers.kafka_nodes import HOST, KafkaNode, KafkaStartError
from tests.helpers.kafka_tls import Security

T = TypeVar("T")


class ClusterClient:
    """Queries of the cluster's ``nodes`` (secured by ``security`` when set)."""

    nodes: list[KafkaNode]
    security: Security | None

    @property
    def bootstrap(self) -> str:
        """Every node's address, "127.0.0.1:p1,127.0.0.1:p2,..." (dead ones included)."""
        return ",".join(node.address for node in self.nodes)

    @property
    def running_bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes if node.running)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no kafka node {node_id} (nodes: {[n.node_id for n in self.nodes]})")

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """aiokafka keyword arguments for a producer, consumer or client of this cluster."""
        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.security is not None:
            config.update(self.security.client_kwargs())
        config.update(overrides)
        return config

    def wait_ready(self, nodes: Iterable[KafkaNode] | None = None, timeout: float = 60.0) -> None:
        """Block until each of ``nodes`` (default: the running ones) answers a metadata request
        listing every one of them as a live broker, or raise :class:`KafkaStartError`."""
        targets = list(nodes) if nodes is not None else [n for n in self.nodes if n.running]
        _run_coroutine(self.wait_ready_async(targets, timeout))

    async def wait_ready_async(
        self, nodes: Iterable[KafkaNode] | None = None, timeout: float = 60.0
    ) -> None:
        targets = list(nodes) if nodes is not None else [n for n in self.nodes if n.running]
        expected = {n.node_id for n in targets}
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while True:
            for node in targets:
                if not node.running:
                    code = node.process.returncode if node.process else None
                    raise KafkaStartError(
                        f"kafka node {node.node_id} exited (code {code}):\n" + node.log_tail()
                    )
            pending = [n for n in targets if not await _port_open(n.port)]
            if not pending:
                try:
                    seen = [await self._broker_ids(n.address) for n in targets]
                    if all(expected <= ids for ids in seen):
                        return
                    last_error = f"brokers in metadata: {[sorted(ids) for ids in seen]}"
                except Exception as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            else:
                last_error = f"ports of nodes {[n.node_id for n in pending]} not open yet"
            if time.monotonic() > deadline:
                raise KafkaStartError(
                    f"kafka nodes {sorted(expected)} not ready after {timeout:.0f} s "
                    f"({last_error}); last log lines:\n"
                    + "\n".join(n.log_tail(10) for n in targets)
                )
            await asyncio.sleep(0.2)

    async def _broker_ids(self, address: str) -> set[int]:
        async with self._client(address) as client:
            return {int(broker.nodeId) for broker in client.cluster.brokers()}

    @contextlib.asynccontextmanager
    async def _client(self, bootstrap: str | None = None) -> Any:
        """A bootstrapped aiokafka ``AIOKafkaClient`` (short timeouts), closed afterwards."""
        from aiokafka import AIOKafkaClient

        kwargs: dict[str, Any] = {
            "bootstrap_servers": bootstrap or self.running_bootstrap or self.bootstrap,
            "request_timeout_ms": 5000,
            "retry_backoff_ms": 100,
            "metadata_max_age_ms": 1000,
        }
        if self.security is not None:
            kwargs.update(self.security.client_kwargs())
        client = AIOKafkaClient(**kwargs)
        try:
            await client.bootstrap()
            yield client
        finally:
            await client.close()

    # ---------------------------------------------------------------- who is where

    async def leader(self, topic: str, partition: int = 0, timeout: float = 30.0) -> KafkaNode:
        """The node leading ``topic``/``partition`` now (waits while there is none)."""
        return await self.wait_for_leader(topic, partition, timeout=timeout)

    async def wait_for_leader(
        self,
        topic: str,
        partition: int = 0,
        *,
        not_on: KafkaNode | int | None = None,
        timeout: float = 30.0,
    ) -> KafkaNode:
        """Wait until ``topic``/``partition`` has a live leader other than ``not_on``."""
        from aiokafka.structs import TopicPartition

        excluded = not_on.node_id if isinstance(not_on, KafkaNode) else not_on
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                async with self._client() as client:
                    metadata = await client.fetch_all_metadata()
                    leader = metadata.leader_for_partition(TopicPartition(topic, partition))
                    last = leader
                    if leader is not None and leader >= 0 and leader != excluded:
                        node = self.node(int(leader))
                        if node.running:
                            return node
            except Exception as exc:
                last = exc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no leader for {topic}[{partition}] (other than {excluded}) after "
                    f"{timeout:.0f} s; last answer: {last!r}"
                )
            await asyncio.sleep(0.2)

    async def coordinator(self, group_id: str, timeout: float = 30.0) -> KafkaNode:
        """The group coordinator of ``group_id`` (FindCoordinator; waits while unavailable)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                async with self._client() as client:
                    node_id = await client.coordinator_lookup(0, group_id)  # 0 = GROUP
                    node = self.node(int(node_id))
                    if node.running:
                        return node
                    last = f"coordinator {node_id} is not running"
            except Exception as exc:
                last = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"no coordinator for group {group_id!r}: {last!r}")
            await asyncio.sleep(0.2)


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, whether or not a loop runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="kafka-helper", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
