"""Real Apache Kafka 4.x brokers for tests: KRaft mode, combined broker+controller JVMs.

The jars come from Maven Central through deploy/kafka/pom.xml; ``deploy/kafka/resolve`` (the
install step) writes their classpath to var/kafka/classpath.txt and this module only reads it,
so nothing is resolved or downloaded during a test. Without the file (or without ``java``)
:func:`classpath` raises :class:`KafkaUnavailable`, which a fixture can turn into a skip.

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
import atexit
import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEPLOY = ROOT / "deploy" / "kafka"
LOG4J2_CONFIG = KAFKA_DEPLOY / "log4j2.yaml"
CLASSPATH_FILE = Path(
    os.environ.get("WB_KAFKA_CLASSPATH_FILE", str(ROOT / "var" / "kafka" / "classpath.txt"))
)
HOST = "127.0.0.1"
SCRAM_MECHANISM = "SCRAM-SHA-512"

# Start-up flags: the serial GC and the C1 compiler only (-XX:TieredStopAtLevel=1) start a
# broker much faster on two cores (measured: one node ready in 4.0-5.2 s instead of 7.2-7.9 s,
# three in 13 s instead of 24 s, on a loaded machine); -Xshare:auto uses the JDK's class-data
# archive when it has one.
JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
    f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
)

T = TypeVar("T")


class KafkaUnavailable(RuntimeError):
    """No classpath file (run deploy/kafka/resolve) or no java: the broker cannot start."""


class KafkaStartError(RuntimeError):
    """A node exited or did not become ready before the deadline (the message has its log)."""


def classpath() -> str:
    """The resolved classpath of Kafka's jars (var/kafka/classpath.txt)."""
    if shutil.which("java") is None:
        raise KafkaUnavailable("java is not installed (Kafka 4.x brokers need Java 17+)")
    try:
        text = CLASSPATH_FILE.read_text().strip()
    except FileNotFoundError:
        raise KafkaUnavailable(
            f"{CLASSPATH_FILE} is missing: run deploy/kafka/resolve (the install step)"
        ) from None
    missing = [jar for jar in text.split(os.pathsep) if jar and not Path(jar).is_file()]
    if not text or missing:
        raise KafkaUnavailable(
            f"{CLASSPATH_FILE} names missing jars ({missing[:2]}...): run deploy/kafka/resolve"
        )
    return text


def kafka_uuid() -> str:
    """A Kafka ``Uuid`` string, like ``kafka-storage random-uuid`` (saves a JVM start).

    Kafka's ``Uuid.toString()`` is the URL-safe base64 of the 16 bytes without padding, and
    ``Uuid.randomUuid()`` never returns one that starts with '-' (it would read as an option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on the loopback address, as the OS hands them out."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Security:
    """SASL_SSL settings of a secured cluster: what a client needs to connect."""

    ca_file: Path
    username: str
    password: str
    mechanism: str = SCRAM_MECHANISM

    def ssl_context(self, ca_file: Path | None = None) -> ssl.SSLContext:
        """A client TLS context trusting ``ca_file`` (default: the cluster's CA)."""
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(cafile=str(ca_file or self.ca_file))
        return context

    def client_kwargs(
        self, *, password: str | None = None, ca_file: Path | None = None
    ) -> dict[str, Any]:
        """aiokafka keyword arguments (security_protocol, sasl_*, ssl_context)."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password if password is None else password,
            "ssl_context": self.ssl_context(ca_file),
        }

    def java_client_properties(self) -> str:
        """The same settings for Kafka's Java tools (``--command-config``)."""
        return (
            "security.protocol=SASL_SSL\n"
            f"sasl.mechanism={self.mechanism}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{self.username}" password="{self.password}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={self.ca_file}\n"
        )


def make_ca(directory: Path, name: str = "wb-test-ca") -> tuple[Path, Path]:
    """A self-signed CA: (certificate PEM, private key PEM) in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_server_pem(
    directory: Path, ca_cert: Path, ca_key: Path, hosts: Sequence[str] = (HOST, "localhost")
) -> Path:
    """A broker key and certificate signed by the CA, in one PEM file (PKCS#8 key first, then
    the certificate chain), as Kafka's ``ssl.keystore.type=PEM`` reads it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wb-test-kafka")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    path = directory / "broker.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
        + ca.public_bytes(serialization.Encoding.PEM)
    )
    return path


# --------------------------------------------------------------------------- nodes

_LIVE: weakref.WeakSet[KafkaNode] = weakref.WeakSet()

# Every broker JVM is started by this one long-lived thread, through `setpriv --pdeathsig
# KILL`: Linux kills the JVM when the thread that started it ends, i.e. when this interpreter
# ends, even by SIGKILL or os._exit (pytest-timeout's thread method), where atexit never runs.
# (The parent-death signal follows the starting *thread*, hence one thread that lives as long
# as the interpreter rather than whichever worker thread called start().)
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-spawner")
_SETPRIV = shutil.which("setpriv")


@atexit.register
def _kill_leftovers() -> None:
    """No JVM outlives the interpreter, even when a test forgot to stop its cluster."""
    for node in list(_LIVE):
        node.kill()


@dataclass(eq=False)
class KafkaNode:
    """One combined broker+controller JVM; its directory (config, data, log) survives restarts."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    directory_id: str = field(default_factory=kafka_uuid)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "kafka.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def launch(self, heap: str) -> None:
        if self.running:
            raise RuntimeError(f"kafka node {self.node_id} is already running")
        command = [
            "java",
            f"-Xmx{heap}",
            *JVM_FLAGS,
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp",
            classpath(),
            "kafka.Kafka",
            str(self.config_path),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {datetime.now(UTC).isoformat()}\n".encode())
            log.flush()
            if _SETPRIV is not None:
                command = [_SETPRIV, "--pdeathsig", "KILL", *command]
            self.process = _SPAWNER.submit(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # a Ctrl-C in the terminal is the test runner's
            ).result()
        _LIVE.add(self)

    def kill(self) -> None:
        """SIGKILL, as a crash: no controlled shutdown, no flush."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL if it has not exited by ``timeout``."""
        self._signal(signal.SIGTERM)
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)
        if not self.running:
            _LIVE.discard(self)


# --------------------------------------------------------------------------- cluster


class KafkaCluster:
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

    # ---------------------------------------------------------------- properties

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


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
