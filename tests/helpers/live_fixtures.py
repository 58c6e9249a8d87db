"""Live fixtures (a pytest plugin, see tests/conftest.py): a broker process (Tansu and
Apache Kafka in turn), a migrated
PostgreSQL database and a `wb run` worker, one set per test module (a consumer group join
costs seconds; the tests of a module use distinct users)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers import postgres as pg
from tests.helpers.brokers import TestBroker, broker_params, running_broker
from tests.helpers.live import WB, Kafka, WorkerProcess
from worker.services.store import HighlightStore
from worker.storage.database import create_engine, session_factory


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module", params=broker_params())
def broker(request: pytest.FixtureRequest, logs: Path) -> Iterator[TestBroker]:
    """The module's broker: every test using it runs on Tansu and on Apache Kafka."""
    with running_broker(request.param, logs) as running:
        yield running


@contextmanager
def migrated_database(pg_admin_url: str) -> Iterator[str]:
    """A new database migrated with the real `wb db upgrade`, dropped afterwards."""
    url = asyncio.run(pg.create_database(pg_admin_url, prefix="wblive"))
    subprocess.run(
        [WB, "db", "upgrade"],
        env={**os.environ, "WB_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    try:
        yield url
    finally:
        asyncio.run(pg.drop_database(pg_admin_url, url))


@pytest.fixture(scope="module")
def live_db_url(pg_admin_url: str, broker: TestBroker) -> Iterator[str]:
    """A database of this module's own; one per broker, so that the run on each broker
    starts from an empty database."""
    with migrated_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="module")
async def live_engine(live_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(live_db_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def live_sessions(live_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(live_engine)


@pytest.fixture(scope="module")
def live_store(live_sessions: async_sessionmaker[AsyncSession]) -> HighlightStore:
    return HighlightStore(live_sessions, ttl=timedelta(days=7))


@pytest.fixture(scope="module")
async def kafka(broker: TestBroker) -> AsyncIterator[Kafka]:
    client = Kafka(broker.address)
    await client.start()
    yield client
    await client.stop()


@pytest.fixture
def spawn_defaults() -> dict[str, str]:
    """Settings every worker ``spawn`` starts gets (a test module overrides this fixture)."""
    return {}


@pytest.fixture
def spawn(
    broker: TestBroker, live_db_url: str, logs: Path, spawn_defaults: dict[str, str]
) -> Iterator[Callable[[dict[str, str], str], WorkerProcess]]:
    """Start workers of the module's broker and database for one test, ``spawn(env,
    app_id)`` (workers with the same app id form one consumer group); stopped at its end,
    even when it fails."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], app_id: str) -> WorkerProcess:
        extra = {**spawn_defaults, **env}
        proc = WorkerProcess(broker.address, live_db_url, logs, app_id=app_id, extra_env=extra)
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """The module worker's own settings (a test module overrides this fixture for more)."""
    return {"WB_SWEEP_INTERVAL": "1", "WB_GAUGE_INTERVAL": "1"}


@pytest.fixture(scope="module")
async def worker(
    broker: TestBroker, live_db_url: str, logs: Path, worker_env: dict[str, str]
) -> AsyncIterator[WorkerProcess]:
    """One running worker for the module, sweeping every second."""
    proc = WorkerProcess(broker.address, live_db_url, logs, extra_env=worker_env)
    proc.start()
    try:
        await proc.wait_ready()
        yield proc
    finally:
        proc.stop()
