"""How every Kafka client of ours connects: the worker (Faust) and the CLI's own clients
(``wb topic``, ``wb dlq replay``, the start-up check) take their address, TLS and SASL
from here, so a secured cluster works the same for all of them.

Secrets stay inside: ``KafkaConnection``'s repr shows neither the password nor the key,
and errors name the broker and the kind of failure, never a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context

from worker.settings import Settings


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the brokers against the CA file (or the system's CAs); a client
    certificate when both its files are set (mutual TLS)."""

    def path(value: object) -> str | None:
        return str(value) if value is not None else None

    context: ssl.SSLContext = create_ssl_context(
        cafile=path(settings.kafka_ssl_ca_file),
        certfile=path(settings.kafka_ssl_cert_file),
        keyfile=path(settings.kafka_ssl_key_file),
    )
    return context


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        if settings.kafka_broker is None:
            raise ValueError("no broker configured (WB_KAFKA_BROKER)")
        protocol = settings.kafka_security_protocol
        context = None
        if protocol in ("SSL", "SASL_SSL"):
            context = create_ssl_context(
                cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None,
                certfile=str(settings.kafka_ssl_cert_file)
                if settings.kafka_ssl_cert_file
                else None,
                keyfile=str(settings.kafka_ssl_key_file) if settings.kafka_ssl_key_file else None,
            )
        sasl = protocol.startswith("SASL_")
        return cls(
            bootstrap=",".join(
                b.removeprefix("kafka://") for b in settings.kafka_broker.split(";")
            ),
            security_protocol=protocol,
            ssl_context=context,
            sasl_mechanism=settings.kafka_sasl_mechanism if sasl else None,
            username=settings.kafka_sasl_username if sasl else None,
            password=settings.kafka_sasl_secret() if sasl else None,
            connect_timeout=settings.kafka_connect_timeout.total_seconds(),
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` for this connection (None for PLAINTEXT)."""
        if self.sasl_mechanism is not None:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context,
                mechanism=self.sasl_mechanism,
            )
        if self.ssl_context is not None:
            return faust.SSLCredentials(self.ssl_context)
        return None


class BrokerUnreachable(Exception):
    """A Kafka client could not connect: the broker, the protocol and why, in one line."""


class _Reasons(logging.Handler):
    """aiokafka raises a bare "Unable to bootstrap" and logs the cause (a refused SASL
    login, an untrusted certificate): keep the last such line to say why."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if message:
            self.last = message[:300]


@contextlib.asynccontextmanager
async def connected(conn: KafkaConnection, client: Any) -> AsyncIterator[Any]:
    """Start an aiokafka client within ``WB_KAFKA_CONNECT_TIMEOUT`` or raise ``BrokerUnreachable``
    (never hang on a wrong password or an untrusted certificate); stop it afterwards."""
    reasons = _Reasons()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(reasons)
    try:
        await asyncio.wait_for(client.start(), conn.connect_timeout)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await client.close() if hasattr(client, "close") else await client.stop()
        why = reasons.last or str(exc) or type(exc).__name__
        raise BrokerUnreachable(
            f"cannot connect to Kafka at {conn.bootstrap} ({conn.security_protocol}): {why}"
        ) from None
    finally:
        logger.removeHandler(reasons)
    try:
        yield client
    finally:
        await client.close() if hasattr(client, "close") else await client.stop()


async def prepare_topics(
    conn: KafkaConnection, names: Iterable[str], partitions: int, replication: int
) -> list[str]:
    """Check that the brokers accept us, and create the worker's topics that are missing
    (Faust declares only its internal topics; a consumer that started before its input
    topic existed would not see it until its next metadata refresh, minutes later).
    Returns the names created."""
    timeout = conn.connect_timeout
    admin = AIOKafkaAdminClient(**conn.client_options(), request_timeout_ms=int(timeout * 1000))
    async with connected(conn, admin):
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
        missing = sorted(set(names) - existing)
        if missing:
            await asyncio.wait_for(
                admin.create_topics([NewTopic(n, partitions, replication) for n in missing]),
                timeout,
            )
    return missing


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, asked of the brokers now. ``consumer.topics()`` leaves
    the client's own metadata alone, so ``partitions_for_topic`` knows only subscribed
    topics on Apache Kafka (the embedded broker happened to answer anyway)."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or [])]
