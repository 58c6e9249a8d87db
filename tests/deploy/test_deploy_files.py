"""Deployment files agree with the code: compose, Dockerfile, alerts, dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from worker.runtime.metrics import Metrics
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def exported_metric_names() -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    metrics = Metrics()  # the leader's table-wide gauges too, exported once read
    return {
        f"{family.name}{suffix}"
        for family in [*metrics.registry.collect(), *metrics.table.registry.collect()]
        for suffix in suffixes[family.type]
    }


def referenced_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bwb_[a-z_]+\b", expr))


def test_compose_services_env_and_ports_agree_with_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "migrate", "worker", "prometheus"} <= set(services)
    fields = set(Settings.model_fields)
    for name in ("migrate", "worker"):
        env = services[name]["environment"]
        unknown = {k for k in env if k.removeprefix("WB_").lower() not in fields}
        assert not unknown, f"{name} sets variables the worker does not read: {unknown}"
        Settings(**{k.removeprefix("WB_").lower(): v for k, v in env.items()})  # valid values
    worker_env = services["worker"]["environment"]
    port = worker_env["WB_WEB_PORT"]
    assert f"{port}:{port}" in services["worker"]["ports"]
    assert worker_env["WB_KAFKA_BROKER"].split(":")[0] == "kafka"
    assert "@postgres:5432/" in worker_env["WB_DATABASE_URL"]
    assert services["migrate"]["command"] == ["wb", "db", "upgrade"]
    deps = services["worker"]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["kafka"]["condition"] == deps["postgres"]["condition"] == "service_healthy"
    for name in ("kafka", "postgres", "worker", "prometheus"):
        assert "healthcheck" in services[name], name
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"worker:{port}"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile
    assert 'CMD ["wb", "run"]' in dockerfile


def test_alert_rules_parse_and_name_only_exported_metrics() -> None:
    path = ROOT / "deploy/prometheus/alerts.yml"
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    assert rules
    exported = exported_metric_names()
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["runbook"]
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor in (ROOT / "docs/runbook.md").read_text().lower(), anchor
        assert referenced_metrics(rule["expr"]) <= exported, rule["alert"]
    if not shutil.which("promtool"):  # CI installs it (.ci/run): there it must be found
        assert os.environ.get("CI", "").lower() != "true", "promtool missing on CI"
    else:
        done = subprocess.run(
            ["promtool", "check", "rules", str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        config = subprocess.run(
            [
                "promtool",
                "check",
                "config",
                "--syntax-only",
                str(ROOT / "deploy/prometheus/prometheus.yml"),
            ],
            capture_output=True,
            text=True,
        )
        assert config.returncode == 0, config.stdout + config.stderr


def test_dashboard_names_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/wb-highlights.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    exported = exported_metric_names()
    for expr in exprs:
        names = referenced_metrics(expr)
        assert names and names <= exported, expr


def test_compose_runs_the_apache_kafka_version_the_tests_run() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["kafka"]["image"]
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    tested = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert tested is not None
    assert image == f"apache/kafka:{tested.group(1)}"
