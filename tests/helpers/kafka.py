"""Real Apache Kafka 4.x brokers for tests: KRaft mode, combined broker+controller JVMs.

Nodes (``kafka_nodes``: the JVMs, the classpath), certificates (``kafka_tls``) and the
queries a test asks a running cluster (``kafka_client``) live beside this module.

One node::

    with KafkaCluster() as kafka:                    # or: async with KafkaCluster() as kafka
        producer = AIOKafkaProducer(**kafka.client_config())

Three nodes for failover (replication factor 3, ``min.insync.replicas=2``)::

    async with KafkaCluster(nodes=3) as kafka:
        leader = await kafka.leader("events", 0)
        kafka.kill(leader)                           # SIGKILL; its data stays on disk
        await kafka.wait_for_leader("events", 0, not_on=leader)
        kafka.restart(leader)

SASL_SSL with SCRAM-SHA-512 (a CA and a broker certificate are made at start)::

    async with KafkaCluster(sasl_ssl=True) as kafka:
        kafka.security.ca_file, kafka.security.username, kafka.security.password
        AIOKafkaConsumer(**kafka.client_config())    # the right settings, ready to use

Every node listens on free loopback ports picked by the OS. Storage is formatted with a fresh
cluster id and a dynamic controller quorum (``--standalone`` for one node,
``--initial-controllers`` for three, as Kafka 4.x recommends). ``stop()`` sends SIGTERM, then
SIGKILL after a timeout, and removes the temporary directory it made.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.helpers.kafka_client import ClusterClient
from tests.helpers.kafka_nodes import (
    HOST,
    JVM_FLAGS,
    KafkaNode,
    KafkaStartError,
    classpath,
    kafka_uuid,
)
from tests.helpers.kafka_tls import SCRAM_MECHANISM, Security, make_ca, make_server_pem
from tests.helpers.ports import free_ports


class KafkaCluster(ClusterClient):
    """``nodes`` (1 or 3) Kafka 4.x brokers in KRaft combined mode on loopback.

    A context manager (sync and async) or ``start()``/``stop()`` by hand. Replication factor is
    1 for one node, 3 with ``min.insync.replicas=2`` for three; topics are auto-created with
    ``num.partitions`` partitions. ``sasl_ssl=True`` makes the broker listener SASL_SSL with
    SCRAM-SHA-512 (the controller listener stays plaintext on loopback).
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        sasl_ssl: bool = False,
        username: str = "alice",
        password: str | None = None,
        num_partitions: int = 4,
        heap: str = "512m",
        start_timeout: float = 90.0,
        stop_timeout: float = 15.0,
        workdir: Path | None = None,
        config: Mapping[str, str] | None = None,
        verbose: bool = True,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.replication_factor = 1 if nodes < 3 else 3
        self.num_partitions = num_partitions
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_config = dict(config or {})
        self.verbose = verbose
        self.cluster_id = kafka_uuid()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="wb-kafka-"))
        ports = free_ports(2 * nodes)
        self.nodes = [
            KafkaNode(
                node_id=index + 1,
                port=ports[2 * index],
                controller_port=ports[2 * index + 1],
                directory=self.workdir / f"node{index + 1}",
            )
            for index in range(nodes)
        ]
        self.security: Security | None = None
        self._sasl_ssl = sasl_ssl
        self._username = username
        self._password = password or f"{username}-{uuid.uuid4().hex[:12]}"
        self._broker_password = uuid.uuid4().hex
        self.start_seconds: float | None = None
        self._formatted = False

    # ---------------------------------------------------------------- configuration

    def _server_properties(self, node: KafkaNode) -> dict[str, str]:
        rf = self.replication_factor
        min_isr = str(min(2, rf))
        listener = "SASL_SSL" if self._sasl_ssl else "PLAINTEXT"
        quorum = ",".join(f"{HOST}:{n.controller_port}" for n in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.bootstrap.servers": quorum,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"{listener}://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": (
                f"{listener}://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}"
            ),
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{listener}:{listener}",
            "log.dirs": str(node.data_dir),
            "num.partitions": str(self.num_partitions),
            "default.replication.factor": str(rf),
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            # A SIGKILLed broker is fenced (and its partitions get new leaders) within ~3 s
            # instead of the default 9 s.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            "num.recovery.threads.per.data.dir": "1",
        }
        if self._sasl_ssl:
            assert self.security is not None
            props.update(
                {
                    "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                    "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
                    # Brokers talk to each other as SCRAM user "broker" over the same
                    # SASL_SSL listener; its credential is added at format time like alice's.
                    f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required"
                        f' username="broker" password="{self._broker_password}";'
                    ),
                    "ssl.keystore.type": "PEM",
                    "ssl.keystore.location": str(self.workdir / "tls" / "broker.pem"),
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.location": str(self.security.ca_file),
                    "ssl.client.auth": "none",
                    "ssl.endpoint.identification.algorithm": "https",
                }
            )
        props.update(self.extra_config)
        return props

    def _prepare_tls(self) -> None:
        tls = self.workdir / "tls"
        ca_cert, ca_key = make_ca(tls)
        make_server_pem(tls, ca_cert, ca_key)
        self.security = Security(ca_file=ca_cert, username=self._username, password=self._password)

    def _format(self) -> None:
        """Write each node's server.properties and format its storage (in parallel)."""
        if self._sasl_ssl and self.security is None:
            self._prepare_tls()
        cp = classpath()
        formats: list[tuple[KafkaNode, subprocess.Popen[bytes]]] = []
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            props = self._server_properties(node)
            node.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            command = [
                "java",
                "-Xmx256m",
                *JVM_FLAGS,
                "-cp",
                cp,
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(node.config_path),
                "--cluster-id",
                self.cluster_id,
            ]
            if len(self.nodes) == 1:
                command.append("--standalone")
            else:
                command += [
                    "--initial-controllers",
                    ",".join(
                        f"{n.node_id}@{HOST}:{n.controller_port}:{n.directory_id}"
                        for n in self.nodes
                    ),
                ]
            if self._sasl_ssl:
                command += [
                    "--add-scram",
                    f"{SCRAM_MECHANISM}=[name=broker,password={self._broker_password}]",
                    "--add-scram",
                    f"{SCRAM_MECHANISM}=[name={self._username},password={self._password}]",
                ]
            log = (node.directory / "format.log").open("wb")
            with log:
                formats.append(
                    (node, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
                )
        for node, process in formats:
            if process.wait(120) != 0:
                raise KafkaStartError(
                    f"kafka-storage format failed for node {node.node_id}:\n"
                    + (node.directory / "format.log").read_text(errors="replace")[-3000:]
                )
        self._formatted = True

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Format (first time only), start every node and wait until all are in the metadata."""
        began = time.monotonic()
        try:
            if not self._formatted:
                self._format()
            formatted = time.monotonic()
            for node in self.nodes:
                if not node.running:
                    node.launch(self.heap)
            self.wait_ready(self.nodes, timeout=self.start_timeout)
        except BaseException:
            self.stop()
            raise
        ready = time.monotonic()
        self.start_seconds = ready - began
        self._say(
            f"kafka: {len(self.nodes)} node(s) ready in {self.start_seconds:.1f} s "
            f"(format {formatted - began:.1f} s, JVM start to metadata {ready - formatted:.1f} s)"
            f" at {self.bootstrap}{' SASL_SSL/' + SCRAM_MECHANISM if self._sasl_ssl else ''}"
        )
        return self

    def stop(self, graceful: bool = True) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``stop_timeout``; all at once) and remove
        the temporary directory this cluster made."""
        if graceful:
            for node in self.nodes:
                node._signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            for node in self.nodes:
                if node.process is not None:
                    try:
                        node.process.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        node.kill()
        for node in self.nodes:
            node.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self, node: KafkaNode | int) -> KafkaNode:
        """SIGKILL one node (a crash); its data stays for :meth:`restart`."""
        target = node if isinstance(node, KafkaNode) else self.node(node)
        target.kill()
        return target

    def terminate(self, node: KafkaNode | int) -> KafkaNode:
        """SIGTERM one node (controlled shutdown), SIGKILL after ``stop_timeout``."""
        target = node if isinstance(node, KafkaNode) else self.node(node)
        target.terminate(self.stop_timeout)
        return target

    def restart(self, node: KafkaNode | int, timeout: float | None = None) -> KafkaNode:
        """Start a stopped (or kill and start a running) node on its old ports and data."""
        target = node if isinstance(node, KafkaNode) else self.node(node)
        target.kill()
        began = time.monotonic()
        target.launch(self.heap)
        self.wait_ready([target], timeout=timeout or self.start_timeout)
        self._say(f"kafka: node {target.node_id} back in {time.monotonic() - began:.1f} s")
        return target

    # ---------------------------------------------------------------- tools

    def consumer_groups(self, *args: str, timeout: float = 60.0) -> str:
        """Run Kafka's consumer-group command (kafka-consumer-groups.sh) and return its stdout.

        ``kafka.consumer_groups("--describe", "--group", "g")``,
        ``kafka.consumer_groups("--reset-offsets", "--to-earliest", "--execute",
        "--group", "g", "--topic", "t")``. Raises ``subprocess.CalledProcessError`` (with
        stderr) on a non-zero exit.
        """
        command = [
            "java",
            "-Xmx256m",
            *JVM_FLAGS,
            "-cp",
            classpath(),
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            self.running_bootstrap or self.bootstrap,
        ]
        if self.security is not None:
            properties = self.workdir / "client.properties"
            properties.write_text(self.security.java_client_properties())
            command += ["--command-config", str(properties)]
        result = subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result.stdout

    # ---------------------------------------------------------------- context managers

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)
