"""A secured Apache Kafka (SASL_SSL, SCRAM-SHA-512, certificates made here): the worker and
every CLI client connect with the settings; a wrong password or an untrusted certificate
is a one-line error and a non-zero exit within a bounded time, and no secret is printed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers.brokers import kafka_or_skip
from tests.helpers.cli import wb
from tests.helpers.factories import comment_doc
from tests.helpers.kafka import KafkaCluster
from tests.helpers.kafka_tls import make_ca
from tests.helpers.live import WorkerProcess, eventually, http_get

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = kafka_or_skip(sasl_ssl=True, workdir=tmp_path_factory.mktemp("sasl"), verbose=False)
    try:
        yield cluster
    finally:
        cluster.stop(graceful=False)


def client_env(cluster: KafkaCluster, tmp: Path, **overrides: str) -> dict[str, str]:
    """The worker's settings for the secured cluster; the password comes from a file."""
    assert cluster.security is not None
    secret = tmp / "sasl-password"
    secret.write_text(cluster.security.password + "\n")
    return {
        "WB_KAFKA_BROKER": cluster.bootstrap,
        "WB_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "WB_KAFKA_SSL_CA_FILE": str(cluster.security.ca_file),
        "WB_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "WB_KAFKA_SASL_USERNAME": cluster.security.username,
        "WB_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "WB_KAFKA_CONNECT_TIMEOUT": "10s",
        **overrides,
    }


async def test_worker_and_cli_work_over_sasl_ssl_and_print_no_secret(
    secured: KafkaCluster, tmp_path: Path
) -> None:
    assert secured.security is not None
    env = client_env(secured, tmp_path)
    db = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    worker = WorkerProcess(secured.bootstrap, db, tmp_path, extra_env=env).start()
    try:
        await worker.wait_ready(timeout=90)
        doc = comment_doc("sasl-1", 4242, datetime.now(UTC), "created", "r-1")
        sent = await asyncio.to_thread(
            wb,
            "topic",
            "produce",
            "signal.comments",
            "--key",
            "4242",
            env=env,
            stdin=json.dumps(doc) + "\n",
        )
        assert sent.returncode == 0, sent.stderr

        async def requested() -> list[str]:
            out = await asyncio.to_thread(
                wb,
                "topic",
                "tail",
                "profile.highlights.regen-requests",
                "--from-beginning",
                "--exit",
                env=env,
            )
            assert out.returncode == 0, out.stderr
            return [
                line
                for line in out.stdout.splitlines()
                if '"user_id": 4242' in line or '"user_id":4242' in line
            ]

        assert await eventually(requested, timeout=60, what="regen request over SASL_SSL")
        _, metrics = http_get(f"{worker.url}/metrics")
    finally:
        worker.stop()
    password = secured.security.password
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
    assert password not in logs
    assert password not in str(metrics)


@pytest.mark.parametrize("fault", ["wrong_password", "untrusted_ca"])
def test_a_refused_connection_is_one_line_and_a_nonzero_exit_soon(
    secured: KafkaCluster, tmp_path: Path, fault: str
) -> None:
    assert secured.security is not None
    overrides = {"WB_KAFKA_SASL_PASSWORD": "not-the-password"}
    if fault == "untrusted_ca":
        other_ca, _ = make_ca(tmp_path, "someone-else")
        overrides = {"WB_KAFKA_SSL_CA_FILE": str(other_ca)}
    env = client_env(secured, tmp_path, **overrides)
    if fault == "wrong_password":
        env.pop("WB_KAFKA_SASL_PASSWORD_FILE")
    env["WB_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    for command in (("topic", "tail", "signal.comments", "--exit"), ("run",)):
        started = time.monotonic()
        result = wb(*command, env=env)
        elapsed = time.monotonic() - started
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("wb: error:")]
        assert len(errors) == 1, result.stderr
        assert "cannot connect to Kafka" in errors[0]
        assert secured.security.password not in result.stderr + result.stdout
        assert "not-the-password" not in result.stderr + result.stdout
        assert elapsed < 40, f"{command} took {elapsed:.1f}s"
