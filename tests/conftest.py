"""Shared fixtures: databases (SQLite and PostgreSQL), a migrated engine, a fake clock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers import postgres as pg
from tests.helpers.brokers import BROKER_KINDS
from tests.helpers.clock import FakeClock
from tests.helpers.database import truncate_all
from tests.helpers.environment import isolate_from_the_shell
from worker.services.store import HighlightStore
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory

pytest_plugins = ["tests.helpers.live_fixtures"]

# Before any fixture reads it: the session and every process it starts see none of the
# shell's worker settings or libpq variables (tests/helpers/environment.py).
isolate_from_the_shell(os.environ)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server URL: the configured one, else a throwaway server."""
    url = pg.configured_url()
    if url:
        yield url
        return
    with pg.throwaway_server() as server:
        yield server.get_uri()


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database of this test session's own (sync: it runs its own loop)."""
    url = asyncio.run(pg.create_database(pg_admin_url))
    yield url
    asyncio.run(pg.drop_database(pg_admin_url, url))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "store.sqlite3"
    return f"sqlite+aiosqlite:///{path}"


def _backend_params() -> list[object]:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]


@pytest.fixture(scope="session", params=_backend_params())
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of one backend's session database; tests using it run once per backend."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture(scope="session")
async def migrated_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a database migrated to head, once per backend per session."""
    url = database_url
    engine = create_engine(url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def engine(migrated_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The migrated engine with every table emptied before the test."""
    await truncate_all(migrated_engine)
    yield migrated_engine


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> HighlightStore:
    return HighlightStore(sessions, ttl=timedelta(days=7), clock=clock, budget_clock=clock.database)


# The tests written before the scheduler test immediate requests: no settle time and no
# budget, for in-process code and the worker processes the live tests start (they inherit
# the environment). Scheduler tests set their own (tests/services/test_scheduler.py ...).
os.environ.setdefault("WB_REGEN_SETTLE", "0")
os.environ.setdefault("WB_REGEN_RATE", "0")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``make test`` (pytest-xdist, ``--dist loadscope``) a module's tests on one broker
    kind run in one process, in order: its module-scoped broker, database and worker start
    once there, and tests that read what earlier ones did (the metric labels) see it; the
    module's Tansu and Apache Kafka halves, and different modules, run in parallel.
    (``--dist loadgroup`` with marks would say the same, but xdist 3.8 renames items through
    an attribute pytest 9.2 no longer reads, so every test became its own group.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleAndBroker(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module, _, rest = nodeid.partition("::")
            params = rest.rsplit("[", 1)[1].rstrip("]").split("-") if rest.endswith("]") else []
            kind = next((param for param in params if param in BROKER_KINDS), "")
            return f"{module}:{kind}"

    return ByModuleAndBroker(config, log)
