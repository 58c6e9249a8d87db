"""Helpers for tests against live processes: the embedded broker and `wb run` workers.

Waiting is always for a condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.helpers.ports import free_port

T = TypeVar("T")
WB = str(Path(sys.executable).parent / "wb")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any] | str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as err:
        body, status = err.read().decode(), err.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


@dataclass
class WorkerProcess:
    """A real `wb run` process pointed at a test broker and database."""

    broker: str
    database_url: str
    log_dir: Path
    app_id: str = field(default_factory=lambda: f"wbtest-{uuid.uuid4().hex[:8]}")
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "WB_KAFKA_BROKER": self.broker,
            "WB_DATABASE_URL": self.database_url,
            "WB_APP_ID": self.app_id,
            "WB_WEB_PORT": str(self.port),
            "WB_BROKER_SESSION_TIMEOUT": "6",
            **self.extra_env,
        }

    def start(self) -> WorkerProcess:
        self.starts += 1
        log = open(self.log_dir / f"worker-{self.app_id}-{self.port}-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [WB, "run"], env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        async def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, "worker exited"
            try:
                status, _ = await asyncio.to_thread(http_get, f"{self.url}/readyz")
            except OSError:
                return False
            return status == 200

        await eventually(ready, timeout=timeout, what=f"worker {self.app_id} ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def usage(self) -> tuple[float, float]:
        """The running worker's resident memory (MB) and CPU seconds so far; raises once it
        has exited (an unreaped process still answers psutil, as a zombie)."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"worker {self.app_id} exited")
        process = psutil.Process(self.process.pid)
        times = process.cpu_times()
        return process.memory_info().rss / 2**20, float(times.user + times.system)


class Kafka:
    """A producer and ad-hoc readers against the test broker."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(
        self, topic: str, value: dict[str, Any] | bytes, key: str | None = None
    ) -> tuple[int, int]:
        """Send one message and wait for the broker; returns its partition and offset."""
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        sent = await self.producer.send_and_wait(topic, raw, key=key.encode() if key else None)
        return sent.partition, sent.offset

    async def read_all(self, topic: str, timeout: float = 60.0) -> list[Any]:
        """Every message currently in ``topic`` (from the beginning, no group), up to the end
        offsets taken at the start; fails rather than return part of it (a broker on S3
        storage serves fetches slowly)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while True:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return out
                if time.monotonic() > deadline:
                    raise AssertionError(f"{topic}: read {len(out)} messages, not to the end")
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend(records)
        finally:
            await consumer.stop()

    async def read_json(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in await self.read_all(topic)]
