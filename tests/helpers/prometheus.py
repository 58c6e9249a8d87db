"""Prometheus's own tools for tests: ``promtool`` and a real ``prometheus`` server on a
loopback port with a temporary config and TSDB (stopped at exit)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.live import eventually, http_get
from tests.helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
JOB = "wb-highlights"


def tool(name: str) -> str:
    """The path of ``name`` (``promtool``, ``prometheus``); CI installs them, so there a
    missing one fails the test, elsewhere it skips it."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (Debian/Ubuntu: apt-get install prometheus)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must install it")
    pytest.skip(reason)


def rules_with_short_for(path: Path, for_: str) -> dict[str, Any]:
    """The rules of ``path`` with the same expressions, every ``for:`` shortened to ``for_``
    (a live test can't wait the real minutes)."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    return doc


def _timestamp(rfc3339: str) -> float:
    """Prometheus's RFC 3339 times have nanoseconds; Python reads microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339.replace("Z", "+00:00"))
    return datetime.fromisoformat(trimmed).timestamp()


@dataclass
class PrometheusServer:
    """``prometheus`` scraping ``targets`` every second and evaluating ``rules`` every
    second."""

    workdir: Path
    targets: list[str]
    rules: dict[str, Any]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        rules_path = self.workdir / "alerts.yml"
        rules_path.write_text(yaml.safe_dump(self.rules, sort_keys=False))
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules_path)],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        async def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, (
                "prometheus exited: " + (self.workdir / "prometheus.log").read_text()[-2000:]
            )
            try:
                status, _ = await asyncio.to_thread(http_get, f"{self.url}/-/ready")
            except OSError:
                return False
            return status == 200

        await eventually(ready, timeout=timeout, what="prometheus ready")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    async def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = await asyncio.to_thread(http_get, f"{self.url}/api/v1/{path}{query}")
        assert status == 200 and isinstance(body, dict) and body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def alerts(self) -> dict[str, str]:
        """Active alerts: name -> state (``pending`` or ``firing``), from /api/v1/alerts."""
        data = await self.api("alerts")
        return {a["labels"]["alertname"]: a["state"] for a in data["alerts"]}

    async def alert(self, name: str) -> dict[str, Any] | None:
        data = await self.api("alerts")
        found = [a for a in data["alerts"] if a["labels"]["alertname"] == name]
        return found[0] if found else None

    async def evaluated_since(self, moment: float) -> bool:
        """Every alerting rule has been evaluated after ``moment`` (a Unix time)."""
        groups = (await self.api("rules", type="alert"))["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return bool(rules) and all(
            r["health"] == "ok" and _timestamp(r["lastEvaluation"]) > moment for r in rules
        )
