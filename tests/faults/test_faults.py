"""Fault injection with real processes: a broker, PostgreSQL and `wb run` workers.

Each test drives a seeded workload while faults happen, waits for convergence, and checks
the end state against the oracle in ``harness.check``. Figures are printed for the report
(run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import postgres as pg
from tests.helpers.brokers import TestBroker, broker_params, kafka_or_skip, running_broker
from tests.helpers.faults import (
    COMMENTS,
    GENERATED,
    REQUESTS,
    SCHEDULER_ENV,
    Workload,
    check,
    converged,
)
from tests.helpers.kafka import KafkaCluster
from tests.helpers.live import Kafka, WorkerProcess, eventually, http_get
from worker.kafka.embedded import EmbeddedBroker
from worker.services.store import HighlightStore
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow, pytest.mark.faults]
INPUTS = (COMMENTS, REQUESTS, GENERATED)
COMMIT_INTERVAL_S = 2.8  # Faust's broker_commit_interval default
FAULT_ENV = {
    "WB_SWEEP_INTERVAL": "2",
    "WB_DB_RETRY_MAX_BACKOFF": "1",
    "WB_BATCH_SIZE": "200",
    "WB_GAUGE_INTERVAL": "5",
    **SCHEDULER_ENV,
}


REPORT_FILE = Path("var") / "fault-report.txt"


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures (``-s``) and append them, dated, to var/fault-report.txt."""
    line = f"FAULT-REPORT {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print("\n" + line)
    REPORT_FILE.parent.mkdir(exist_ok=True)
    with REPORT_FILE.open("a") as out:
        out.write(f"{datetime.now().isoformat(timespec='seconds')} {line}\n")


async def processed_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    from sqlalchemy import func, select

    from worker.storage.models import ProcessedEventRow

    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(ProcessedEventRow)) or 0)


@pytest.fixture(params=broker_params())
def broker(request: pytest.FixtureRequest, logs: Path) -> Iterator[TestBroker]:
    """A broker of the test's own (Tansu, then Apache Kafka): each workload starts from
    empty topics."""
    with running_broker(request.param, logs) as running:
        yield running


@pytest.fixture
async def kafka(broker: TestBroker) -> AsyncIterator[Kafka]:
    client = Kafka(broker.address)
    await client.start()
    yield client
    await client.stop()


@pytest.fixture
def spawn(logs: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `wb run` workers that are stopped at teardown, even when the test fails."""
    started: list[WorkerProcess] = []

    def start(broker_address: str, url: str, **kwargs: Any) -> WorkerProcess:
        env = {**FAULT_ENV, **kwargs.pop("extra_env", {})}
        proc = WorkerProcess(broker_address, url, logs, extra_env=env, **kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
async def fresh_db(
    pg_admin_url: str,
) -> AsyncIterator[tuple[str, async_sessionmaker[AsyncSession]]]:
    url = await pg.create_database(pg_admin_url, prefix="wbfault")
    engine = create_engine(url)
    await migrate.upgrade(engine)
    yield url, session_factory(engine)
    await engine.dispose()
    await pg.drop_database(pg_admin_url, url)


async def seeded(sessions: async_sessionmaker[AsyncSession], seed: int) -> Workload:
    """The seeded workload, its users' highlights stored before the worker starts."""
    workload = Workload(seed=seed)
    await workload.seed_store(HighlightStore(sessions))
    return workload


async def test_crash_sigkill_five_times(
    broker: TestBroker, kafka: Kafka, fresh_db: tuple[str, Any], spawn: Callable[..., Any]
) -> None:
    url, sessions = fresh_db
    workload = await seeded(sessions, 11)
    worker = spawn(broker.address, url)
    await worker.wait_ready()
    producing = asyncio.create_task(workload.produce(kafka, seconds=20))
    rng = random.Random(5)
    kills = []
    for _ in range(5):
        before = await processed_count(sessions)
        # Progress since the last start, or all produced and nothing left to do (a fast
        # worker can catch up before the fifth kill: then it is killed idle).
        await eventually(
            lambda b=before: _grew_or_done(sessions, b, producing, workload),
            timeout=60,
            what="progress",
        )
        await asyncio.sleep(rng.uniform(0.2, 1.5))  # mid-batch / mid-relay, at random
        worker.kill()
        kills.append(await processed_count(sessions))
        worker.start()
        await worker.wait_ready(timeout=90)
    await producing
    await converged(sessions, workload)
    figures = await check(sessions, kafka, workload)
    worker.stop()
    report(
        f"crash[{broker.kind}]", {**figures, "sigkills": len(kills), "processed_at_kills": kills}
    )


async def _grew_or_done(
    sessions: async_sessionmaker[AsyncSession],
    before: int,
    producing: asyncio.Task[None],
    workload: Workload,
) -> bool:
    done = await processed_count(sessions)
    good = sum(len(ids) for ids in workload.good_ids().values())
    return done > before or (producing.done() and done >= good)


async def _grew(sessions: async_sessionmaker[AsyncSession], before: int) -> bool:
    return await processed_count(sessions) > before


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in parts}
    finally:
        await consumer.stop()


@pytest.fixture
def private_pg() -> Iterator[Any]:
    """A throwaway PostgreSQL this test may stop and start (never the shared server)."""
    with pg.throwaway_server() as server:
        yield server


async def test_database_outage_of_15_seconds(
    broker: TestBroker, kafka: Kafka, private_pg: Any, spawn: Callable[..., Any]
) -> None:
    admin_url = private_pg.get_uri()
    url = await pg.create_database(admin_url, prefix="wboutage")
    engine = create_engine(url)
    await migrate.upgrade(engine)
    sessions = session_factory(engine)
    workload = await seeded(sessions, 22)
    worker = spawn(broker.address, url)
    await worker.wait_ready()
    producing = asyncio.create_task(workload.produce(kafka, seconds=20))
    await eventually(lambda: _grew(sessions, 500), timeout=60, what="progress before outage")
    await engine.dispose()
    await asyncio.to_thread(private_pg.stop)
    started = asyncio.get_running_loop().time()

    async def not_ready() -> bool:
        status, _ = await asyncio.to_thread(http_get, f"{worker.url}/readyz")
        return status == 503

    await eventually(not_ready, timeout=15, what="/readyz 503 during the outage")
    # Work committed to the database before the outage may still have its offsets committed
    # by Faust's periodic commit (every 2.8 s); after that nothing may move.
    await asyncio.sleep(COMMIT_INTERVAL_S + 1)
    offsets_during = {t: await committed_offsets(kafka.bootstrap, worker.app_id, t) for t in INPUTS}
    await asyncio.sleep(max(0.0, 15 - (asyncio.get_running_loop().time() - started)))
    assert worker.process is not None and worker.process.poll() is None, "worker died"
    assert await not_ready()
    for topic in INPUTS:
        assert (
            await committed_offsets(kafka.bootstrap, worker.app_id, topic) == offsets_during[topic]
        ), f"offsets of {topic} moved during the outage"
    await asyncio.to_thread(private_pg.start)

    async def ready() -> bool:
        return (await asyncio.to_thread(http_get, f"{worker.url}/readyz"))[0] == 200

    await eventually(ready, timeout=60, what="/readyz 200 after the outage")
    await producing
    await converged(sessions, workload)
    figures = await check(sessions, kafka, workload)
    worker.stop()
    await engine.dispose()
    report(
        f"database-outage[{broker.kind}]",
        {
            **figures,
            "outage_s": 15,
            "offsets_frozen_at": sum(v or 0 for o in offsets_during.values() for v in o.values()),
        },
    )


SWEEP_LINE = re.compile(r"^\[(?P<ts>[\d\- :,]+)\].*sweep (?P<what>started|finished)")


def sweep_intervals(log_path: Path) -> list[tuple[datetime, datetime]]:
    spans, start = [], None
    for line in log_path.read_text(errors="replace").splitlines():
        match = SWEEP_LINE.match(line)
        if not match:
            continue
        ts = datetime.strptime(match["ts"].strip(), "%Y-%m-%d %H:%M:%S,%f")
        if match["what"] == "started":
            start = ts
        elif start is not None:
            spans.append((start, ts))
            start = None
    return spans


async def test_rebalance_two_workers_one_stops_and_returns(
    broker: TestBroker,
    kafka: Kafka,
    fresh_db: tuple[str, Any],
    logs: Path,
    spawn: Callable[..., Any],
) -> None:
    url, sessions = fresh_db
    workload = await seeded(sessions, 33)
    first = spawn(broker.address, url)
    second = spawn(broker.address, url, app_id=first.app_id)
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    producing = asyncio.create_task(workload.produce(kafka, seconds=20))
    await eventually(lambda: _grew(sessions, 1500), timeout=60, what="progress")
    second.stop()
    await asyncio.sleep(3)
    second.start()
    await second.wait_ready(timeout=90)
    await producing
    await converged(sessions, workload)
    figures = await check(sessions, kafka, workload)
    first.stop()
    second.stop()
    spans = sorted(
        span for path in logs.glob(f"worker-{first.app_id}-*.log") for span in sweep_intervals(path)
    )
    assert spans, "no sweep ran"
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - timedelta(milliseconds=1), "two sweeps overlapped"
    report(
        f"rebalance[{broker.kind}]", {**figures, "workers": 2, "restarts": 1, "sweeps": len(spans)}
    )


@pytest.fixture
def s3_endpoint(logs: Path) -> Iterator[str]:
    """A local S3 (moto) so the broker's topics and offsets survive its restart."""
    import subprocess
    import sys
    import urllib.request

    from tests.helpers.ports import free_port
    from worker.kafka.embedded import wait_for_port

    port = free_port()
    with (logs / "moto.log").open("wb") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_for_port("127.0.0.1", port, 30), "moto_server did not start"
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/tansu", method="PUT"),
                timeout=10,
            ).close()
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=10)


@pytest.mark.timeout(900)  # a broker on emulated S3 is slow: 230-370 s on a 2-core machine
async def test_broker_restart_worker_reconnects(
    s3_endpoint: str, fresh_db: tuple[str, Any], logs: Path, spawn: Callable[..., Any]
) -> None:
    url, sessions = fresh_db
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    broker = EmbeddedBroker(storage="s3://tansu/", env=env, log_path=logs / "s3-broker.log").start()
    kafka = Kafka(broker.address)
    await kafka.start()
    workload = await seeded(sessions, 44)
    worker = spawn(broker.address, url)
    try:
        await worker.wait_ready()
        producing = asyncio.create_task(workload.produce(kafka, seconds=20))
        await eventually(lambda: _grew(sessions, 1000), timeout=60, what="progress")
        broker.kill()
        await asyncio.sleep(5)
        assert worker.process is not None and worker.process.poll() is None, "worker died"
        broker = EmbeddedBroker(
            port=broker.port, storage="s3://tansu/", env=env, log_path=logs / "s3-broker.log"
        ).start()
        await producing
        # Fetches from the emulated S3 are slow: 3,485 of 8,700 events in 240 s once on a
        # loaded 2-core machine (CI alone: the whole test in 230-370 s).
        await converged(sessions, workload, timeout=480)
        figures = await check(sessions, kafka, workload)
        assert worker.process.poll() is None, "the worker was restarted by hand?"
        report("broker-restart", {**figures, "broker_restarts": 1, "down_s": 5})
    finally:
        worker.stop()
        await kafka.stop()
        broker.stop()


@asynccontextmanager
async def own_kafka(logs: Path, nodes: int) -> AsyncIterator[tuple[KafkaCluster, Kafka]]:
    """An Apache Kafka cluster of the test's own (it kills brokers) and a client of it,
    both stopped afterwards (the ``spawn`` fixture stops the workers first)."""
    cluster = kafka_or_skip(nodes=nodes, workdir=logs / f"kafka-{nodes}", verbose=False)
    kafka = Kafka(cluster.bootstrap)
    try:
        await kafka.start()
        yield cluster, kafka
    finally:
        await kafka.stop()
        cluster.stop(graceful=False)


@pytest.fixture
async def one_kafka(logs: Path) -> AsyncIterator[tuple[KafkaCluster, Kafka]]:
    async with own_kafka(logs, nodes=1) as running:
        yield running


@pytest.fixture
async def three_kafkas(logs: Path) -> AsyncIterator[tuple[KafkaCluster, Kafka]]:
    async with own_kafka(logs, nodes=3) as running:
        yield running


@pytest.mark.timeout(600)
async def test_apache_kafka_restart_with_its_data_on_disk(
    fresh_db: tuple[str, Any], one_kafka: tuple[KafkaCluster, Kafka], spawn: Callable[..., Any]
) -> None:
    """(b) on Apache Kafka: the single broker is killed and started again on its log dirs."""
    (url, sessions), (cluster, kafka) = fresh_db, one_kafka
    workload = await seeded(sessions, 45)
    worker = spawn(cluster.bootstrap, url)
    await worker.wait_ready()
    producing = asyncio.create_task(workload.produce(kafka, seconds=20))
    await eventually(lambda: _grew(sessions, 1000), timeout=60, what="progress")
    cluster.kill(cluster.nodes[0])
    await asyncio.sleep(5)  # the fault lasts 5 s: a duration, not synchronisation
    assert worker.process is not None and worker.process.poll() is None, "worker died"
    started = asyncio.get_running_loop().time()
    await asyncio.to_thread(cluster.restart, cluster.nodes[0])
    restart_s = round(asyncio.get_running_loop().time() - started, 1)
    await producing
    await converged(sessions, workload)
    figures = await check(sessions, kafka, workload)
    assert worker.process.poll() is None, "the worker was restarted by hand?"
    report("kafka-broker-restart", {**figures, "down_s": 5, "broker_restart_s": restart_s})


@pytest.mark.timeout(900)
async def test_three_brokers_lose_the_partition_leader_and_the_group_coordinator(
    fresh_db: tuple[str, Any],
    three_kafkas: tuple[KafkaCluster, Kafka],
    spawn: Callable[..., Any],
) -> None:
    """(c) replication factor 3, min.insync.replicas 2: the leader of the input partitions
    and the broker coordinating the worker's group are killed mid-run and brought back."""
    (url, sessions), (cluster, kafka) = fresh_db, three_kafkas
    workload = await seeded(sessions, 46)
    worker = spawn(cluster.bootstrap, url, extra_env={"WB_TOPIC_REPLICATION_FACTOR": "3"})
    killed: list[str] = []
    await worker.wait_ready(timeout=90)
    producing = asyncio.create_task(workload.produce(kafka, seconds=30))
    await eventually(lambda: _grew(sessions, 800), timeout=90, what="progress")
    for role in ("leader", "coordinator"):
        if role == "leader":
            node = await cluster.leader(COMMENTS, 0)
        else:
            node = await cluster.coordinator(worker.app_id)
        killed.append(f"{role}=node{node.node_id}")
        cluster.kill(node)
        await cluster.wait_for_leader(COMMENTS, 0, not_on=node, timeout=60)
        before = await processed_count(sessions)
        await eventually(lambda b=before: _grew(sessions, b), timeout=90, what="progress")
        await asyncio.to_thread(cluster.restart, node)
    await producing
    await converged(sessions, workload, timeout=240)
    figures = await check(sessions, kafka, workload)
    assert worker.process.poll() is None, "the worker died"
    report("kafka-three-brokers", {**figures, "killed": "+".join(killed)})
