"""One settings object for the whole service, read from ``WB_*`` environment variables.

Everything configurable lives here so that the CLI, the worker and the tests agree on
defaults; nothing else reads the environment.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.domain.clock_skew import DEFAULT_MAX_CLOCK_SKEW

DEFAULT_SQLITE_PATH = Path("var") / "wb-highlights.sqlite3"
# The bytes a fetch waits for while messages flow, on the embedded broker (Tansu): it
# answers a fetch at once when that much is there and otherwise holds it its whole wait, so
# 4 KB (Apache Kafka's choice) cost every fetch the wait at 1,000-2,000 comments/s. With 1
# byte the stale mark's p99 at 2,000/s went from 43-44 to 35-38 ms (one worker) and from
# 64-69 to 53-64 ms (two, hot users); on Apache Kafka 1 byte made it worse, 26-28 -> 31-36 ms
# (docs/performance.md, 2026-12-07, 11:14-12:50).
EMBEDDED_BUSY_MIN_BYTES = 1


def normalize_database_url(url: str) -> str:
    """Rewrite plain ``postgresql://`` / ``sqlite://`` URLs to their async drivers.

    Operators paste the URL their tooling prints; the store only speaks asyncio.
    """
    for prefix in (
        "postgresql://",
        "postgres://",
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def normalize_broker(value: str) -> str:
    """Accept ``host:port[,host:port]`` or ``kafka://host:port[;...]``; return Faust's form."""
    parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
    out = []
    for part in parts:
        hostport = part.split("://", 1)[1] if "://" in part else part
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"broker address {part!r} is not host:port")
        out.append(f"kafka://{host}:{port}")
    if not out:
        raise ValueError("empty broker address")
    return ";".join(out)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_MAX_SECONDS = timedelta.max.days * 86400


def parse_duration(value: Any) -> Any:
    """``90``, ``1.5``, ``250ms``, ``30s``, ``15m``, ``2h``, ``7d`` (or ISO 8601 ``PT15M``)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            if not seconds <= _MAX_SECONDS:  # ``1e999`` is inf: no timedelta either
                raise ValueError(f"a duration is at most {timedelta.max.days} days")
            return timedelta(seconds=seconds)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    """Runtime configuration; every field maps to ``WB_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="WB_", extra="ignore")

    database_url: str = Field(default=f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}")
    kafka_broker: str | None = None
    app_id: str = "wb-highlights"
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)

    topic_comments: str = "signal.comments"
    topic_requests: str = "signal.requests"
    topic_generated: str = "profile.highlights.generated"
    topic_regen_requests: str = "profile.highlights.regen-requests"
    # The batch lane's requests (expiry, reseed, bulk; ``worker.domain.cost``) on a topic of
    # their own, for a generator that sends them to a provider's batch API; unset: the one
    # request topic.
    topic_regen_requests_batch: str | None = None
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)

    batch_size: int = Field(default=500, ge=1, le=10_000)
    # Batches of one input topic in flight at once, each from its own partitions and on its
    # own connection (``worker.kafka.partition_lanes``); 1 = one after another.
    input_lanes: int = Field(default=4, ge=1, le=16)
    regen_retry_after: Duration = timedelta(minutes=15)
    # The scheduler (README "Regeneration budget"): settle 0 and rate 0 = request at once.
    regen_settle: Duration = timedelta(seconds=5)
    regen_max_wait: Duration = timedelta(seconds=60)
    regen_rate: float = Field(default=600.0, ge=0)  # requests a minute, all workers; 0 = no cap
    regen_burst: int = Field(default=100, ge=0)  # 0 = one minute's worth
    regen_tick: Duration = timedelta(milliseconds=250)
    regen_batch_deadline: Duration = Field(default=timedelta(hours=24), gt=timedelta(0))
    # The daily spend cap in US dollars, all workers (0 = off): README "What regeneration costs".
    regen_max_usd_per_day: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    # LLM tokens a minute, all workers (0 = no token budget), and a request's charge before
    # any usage was reported (README "What regeneration costs").
    regen_tokens_per_min: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    regen_tokens_estimate: int = Field(default=2000, ge=1, le=10_000_000)
    # The batch lane's own budget (both 0: it shares the one above, after interactive work).
    regen_batch_rate: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    regen_batch_tokens_per_min: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    sweep_interval: Duration = timedelta(seconds=60)
    sweep_chunk: int = Field(default=20_000, ge=100, le=1_000_000)
    relay_interval: Duration = timedelta(seconds=1)
    relay_publish_timeout: Duration = timedelta(seconds=10)
    highlight_ttl: Duration = timedelta(days=7)
    dedup_retention: Duration = timedelta(days=14)
    # A comment whose request is still unmapped this long after it was parked is sent to the
    # comments' dead-letter topic (``unmapped``). Kept within ``dedup_retention``: its claim
    # must outlive the parking, or a redelivery would park it a second time.
    parked_retention: Duration = timedelta(days=7)
    db_retry_max_backoff: float = Field(default=5.0, gt=0)
    serve_stale_for: Duration = timedelta(0)
    # Input timestamps further ahead of their receipt than this are clamped to the receipt
    # time (``worker.domain.clock_skew``): NTP keeps machines milliseconds apart and batch
    # latency only makes timestamps late, so minutes ahead is a broken clock.
    max_clock_skew: Duration = Field(default=DEFAULT_MAX_CLOCK_SKEW, ge=timedelta(0))
    shutdown_timeout: Duration = timedelta(seconds=30)
    consumer_fetch_wait: Duration = timedelta(milliseconds=100)
    # While messages flow a fetch waits at most 10 ms and until this many bytes came
    # (``worker.kafka.consumer.FetchPace``): on Apache Kafka, which answers a fetch the
    # moment its bytes are there, fewer and fuller fetches. ``wb run``'s embedded broker
    # uses ``EMBEDDED_BUSY_MIN_BYTES`` unless this is set.
    consumer_busy_min_bytes: int = Field(default=4096, ge=1, le=1_048_576)
    gauge_interval: Duration = timedelta(seconds=15)
    history_interval: Duration = timedelta(minutes=1)
    history_retention: Duration = timedelta(days=8)
    bulk_rate: float = Field(default=50.0, gt=0, le=10_000)
    broker_session_timeout: float = Field(default=10.0, gt=0)
    broker_heartbeat_interval: float = Field(default=1.0, gt=0)
    log_level: str = "info"
    secret_key: str | None = None
    # None: Secure whenever the panel is reachable beyond loopback (then it must be HTTPS).
    admin_secure_cookie: bool | None = None
    # Secured clusters (managed Kafka): TLS and SASL for the worker and every CLI client.
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_connect_timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (self.kafka_sasl_mechanism is None or not self.kafka_sasl_username):
            raise ValueError(
                f"WB_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "WB_KAFKA_SASL_MECHANISM and WB_KAFKA_SASL_USERNAME"
            )
        if sasl and self.kafka_sasl_password is None and self.kafka_sasl_password_file is None:
            raise ValueError("SASL needs WB_KAFKA_SASL_PASSWORD or WB_KAFKA_SASL_PASSWORD_FILE")
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError("WB_KAFKA_SSL_CERT_FILE and WB_KAFKA_SSL_KEY_FILE go together")
        return self

    def kafka_sasl_secret(self) -> str | None:
        """The SASL password, from the environment or its file (read when connecting, so
        a rotated file is picked up by the next process)."""
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is not None:
            return self.kafka_sasl_password_file.read_text().strip()
        return None

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("topic_regen_requests_batch")
    @classmethod
    def _optional_topic(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("kafka_broker")
    @classmethod
    def _broker(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return normalize_broker(value)

    @property
    def is_embedded(self) -> bool:
        """True when no external broker is configured: ``wb run`` starts the bundled one."""
        return self.kafka_broker is None

    def on_embedded_broker(self, address: str) -> Settings:
        """These settings for a worker on the embedded broker ``wb run`` started at
        ``address``: its fetch pace too, unless ``WB_CONSUMER_BUSY_MIN_BYTES`` was set."""
        update: dict[str, Any] = {"kafka_broker": normalize_broker(address)}
        if "consumer_busy_min_bytes" not in self.model_fields_set:
            update["consumer_busy_min_bytes"] = EMBEDDED_BUSY_MIN_BYTES
        return self.model_copy(update=update)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def lanes_per_input(self) -> int:
        """Batches of one input topic in flight at once: ``input_lanes``, but one on SQLite,
        whose one writer at a time would make a second lane only wait for the first."""
        return 1 if self.is_sqlite else self.input_lanes

    @property
    def input_pool_size(self) -> int:
        """Connections the input batches keep: one per lane of the three input topics, so
        that steady work never opens one (a connection beyond the pool is closed when
        returned)."""
        return 3 * self.lanes_per_input

    @property
    def secure_admin_cookie(self) -> bool:
        """Mark the panel's cookies ``Secure``: by default unless bound to loopback only."""
        if self.admin_secure_cookie is not None:
            return self.admin_secure_cookie
        return self.web_host not in ("127.0.0.1", "::1", "localhost")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` instead."""
    return Settings()
