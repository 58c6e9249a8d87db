"""The alert rules fire when their condition happens and stay quiet otherwise.

``deploy/prometheus/alerts.test.yml`` holds promtool unit tests (synthetic series) for every
alert; the live test runs the real ``prometheus`` server, with the project's rule
expressions, against a real ``wb run`` worker and causes a dead-letter burst and a
database outage.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import postgres as pg
from tests.helpers.brokers import TestBroker
from tests.helpers.live import WB, Kafka, WorkerProcess, eventually, http_get
from tests.helpers.prometheus import ALERTS, JOB, PrometheusServer, rules_with_short_for, tool

TESTS = ALERTS.with_name("alerts.test.yml")
COMMENTS = "signal.comments"
MALFORMED = [b"{oops", b"\xff\xfe", b"[]", b'{"event_id": "d", "event_id": "e"}', b"{no"]


def alert_names() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(TESTS)],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_is_quiet() -> None:
    doc = yaml.safe_load(TESTS.read_text())
    assert doc["rule_files"] == [ALERTS.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = set(alert_names())
    assert len(names) == 13
    assert names - fires == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


# --- live -----------------------------------------------------------------------------

FOR_IN_TEST = "2s"


@pytest.fixture
def private_pg() -> Iterator[Any]:
    """A throwaway PostgreSQL this test may stop and start (never the shared server)."""
    with pg.throwaway_server() as server:
        yield server


@pytest.fixture
def outage_db(private_pg: Any) -> str:
    """A database migrated with the real `wb db upgrade` on the private server."""
    url = asyncio.run(pg.create_database(private_pg.get_uri(), prefix="wbalerts"))
    subprocess.run(
        [WB, "db", "upgrade"],
        env={**os.environ, "WB_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    return url


async def firing(prom: PrometheusServer, name: str) -> dict[str, Any]:
    """The alert ``name`` if it is firing, else an empty dict."""
    alert = await prom.alert(name)
    return alert if alert is not None and alert["state"] == "firing" else {}


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
async def test_live_prometheus_fires_dead_letter_and_database_alerts(
    broker: TestBroker,
    kafka: Kafka,
    outage_db: str,
    private_pg: Any,
    logs: Path,
    tmp_path: Path,
) -> None:
    tool("prometheus")  # before starting anything
    started = time.monotonic()
    worker = WorkerProcess(
        broker.address,
        outage_db,
        logs,
        extra_env={"WB_DB_RETRY_MAX_BACKOFF": "1", "WB_GAUGE_INTERVAL": "1"},
    ).start()
    rules = rules_with_short_for(ALERTS, FOR_IN_TEST)
    project = yaml.safe_load(ALERTS.read_text())
    assert [r["expr"] for g in rules["groups"] for r in g["rules"]] == [
        r["expr"] for g in project["groups"] for r in g["rules"]
    ]
    prom = PrometheusServer(tmp_path, [f"127.0.0.1:{worker.port}"], rules)
    try:
        prom.start()
        await asyncio.gather(worker.wait_ready(), prom.wait_ready())

        # Healthy: the worker is scraped, its counters are at 0, every rule was evaluated
        # on them, and no alert is pending or firing.
        selector = f'{{job="{JOB}", stream="comments", reason="not_json"}}'

        async def scraped_twice() -> bool:  # the leader's table-wide gauges too
            up = await prom.query(f'up{{job="{JOB}"}} == 1')
            samples = await prom.query(f"count_over_time(wb_dead_letters_total{selector}[1m])")
            table = await prom.query(f'wb_highlights{{job="{JOB}"}}')
            return bool(up and table) and bool(samples) and float(samples[0]["value"][1]) >= 2

        await eventually(scraped_twice, timeout=60, what="worker scraped twice")
        healthy_since = time.time()
        await eventually(
            lambda: prom.evaluated_since(healthy_since), timeout=30, what="rules evaluated"
        )
        assert await prom.alerts() == {}

        # A dead-letter burst: WbDeadLetters fires, nothing about the database does.
        await asyncio.gather(*(kafka.send(COMMENTS, raw) for raw in MALFORMED))
        alert = await eventually(
            lambda: firing(prom, "WbDeadLetters"), timeout=60, what="WbDeadLetters firing"
        )
        assert alert["labels"]["severity"] == "ticket"
        assert alert["annotations"]["runbook"] == "docs/runbook.md#wbdeadletters"
        dead_letters_at = time.monotonic() - started
        assert await prom.alerts() == {"WbDeadLetters": "firing"}

        # A database outage (the server stopped) while a comment arrives: the batch is
        # retried, and WbDatabaseRetries fires while the outage lasts.
        await asyncio.to_thread(private_pg.stop)
        try:
            comment = {
                "event_id": "alerts-live-1",
                "type": "comment.created",
                "comment_id": "alerts-cm-1",
                "request_id": "alerts-req-1",
                "user_id": 7001,
                "occurred_at": "2026-01-01T12:00:00+00:00",
            }
            await kafka.send(COMMENTS, comment, key="7001")
            alert = await eventually(
                lambda: firing(prom, "WbDatabaseRetries"),
                timeout=90,
                what="WbDatabaseRetries firing",
            )
            assert alert["labels"]["severity"] == "page"
            outage_fired_at = time.monotonic() - started
            status, _ = await asyncio.to_thread(http_get, f"{worker.url}/readyz")
            assert status == 503, "the database should still be away"
            assert "WbWorkerDown" not in await prom.alerts()  # it is still scraped
        finally:
            await asyncio.to_thread(private_pg.start)
        await worker.wait_ready(timeout=60)
        print(
            f"\nALERTS-LIVE: WbDeadLetters firing at {dead_letters_at:.1f}s, "
            f"WbDatabaseRetries firing at {outage_fired_at:.1f}s after the worker started"
        )
    finally:
        prom.stop()
        worker.stop()
