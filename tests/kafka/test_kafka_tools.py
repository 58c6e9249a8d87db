"""Operating the worker with Apache Kafka's own tools, as the README and the runbook say:
Debian's kcat for the walkthrough, Kafka's consumer-group command for an offset reset."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.brokers import TestBroker, running_broker
from tests.helpers.factories import comment_doc, result
from tests.helpers.live import Kafka, WorkerProcess, eventually
from tests.helpers.live_fixtures import migrated_database
from worker.services.store import HighlightStore
from worker.storage.database import create_engine, session_factory
from worker.storage.models import HighlightRow, ProcessedEventRow

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
COMMENTS, REGEN = "signal.comments", "profile.highlights.regen-requests"
USERS = range(5001, 5021)


@pytest.fixture(scope="module")
def apache(logs: Path) -> Iterator[TestBroker]:
    with running_broker("kafka", logs) as broker:
        yield broker


@pytest.fixture
def apache_db(pg_admin_url: str) -> Iterator[str]:
    with migrated_database(pg_admin_url) as url:
        yield url


@pytest.fixture
async def apache_sessions(apache_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(apache_db)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="module")
async def apache_client(apache: TestBroker) -> AsyncIterator[Kafka]:
    client = Kafka(apache.address)
    await client.start()
    yield client
    await client.stop()


def kcat_walkthrough() -> list[str]:
    """The README's kcat lines, continuation lines joined, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- walkthrough: kcat")[1].split("```sh\n", 1)[1].split("```")[0]
    joined = block.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def sh(line: str, bootstrap: str) -> str:
    done = subprocess.run(
        ["bash", "-c", line],
        env={**os.environ, "B": bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (line, done.stderr)
    return done.stdout


async def test_readme_kcat_walkthrough_against_apache_kafka(
    apache: TestBroker, apache_db: str, logs: Path
) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        if os.environ.get("CI"):
            pytest.fail("kcat is missing (scripts/provision installs it)")
        pytest.skip("kcat is not installed")
    lines = kcat_walkthrough()
    assert lines[0].startswith("B=") and len(lines) == 5, lines
    worker = WorkerProcess(apache.address, apache_db, logs).start()
    try:
        await worker.wait_ready()
        for line in lines[1:3]:  # a good comment, then a bad one
            sh(line, apache.address)

        async def seen(line: str, pattern: str) -> list[str]:
            out = await asyncio.to_thread(sh, line, apache.address)
            return [x for x in out.splitlines() if re.search(pattern, x)]

        requests = await eventually(
            lambda: seen(lines[3], r'^key=42 \{.*"user_id":\s*42'),
            what="the regen request through kcat",
        )
        assert json.loads(requests[0].removeprefix("key=42 "))["reason"] == "missing"
        dead = await eventually(lambda: seen(lines[4], r"not json$"), what="the dead letter")
        assert dead[0].startswith("key=42 ")
        assert "error=not_json" in dead[0] and "source_topic=signal.comments" in dead[0]
    finally:
        worker.stop()


async def _state(sessions: async_sessionmaker[AsyncSession]) -> dict[int, tuple[int, bool]]:
    async with sessions() as session:
        rows = (await session.scalars(select(HighlightRow))).all()
        return {r.user_id: (r.generation, r.is_stale) for r in rows}


async def _processed(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(ProcessedEventRow)
        return int(await session.scalar(query) or 0)


async def test_offset_reset_to_earliest_replays_and_changes_nothing_twice(
    apache: TestBroker,
    apache_client: Kafka,
    apache_db: str,
    apache_sessions: async_sessionmaker[AsyncSession],
    logs: Path,
) -> None:
    assert apache.cluster is not None
    now = datetime.now(UTC)
    store = HighlightStore(apache_sessions)
    for user in USERS:
        await store.upsert_auto(result(user, generated_at=now - timedelta(hours=1)), f"s{user}")
    worker = WorkerProcess(apache.address, apache_db, logs).start()
    await worker.wait_ready()
    for i, user in enumerate(USERS):
        doc = comment_doc(f"reset-{i}", user, now - timedelta(minutes=1), "created", f"r{i}")
        await apache_client.send(COMMENTS, doc, key=str(user))

    async def all_processed() -> bool:
        return await _processed(apache_sessions) >= 20

    await eventually(all_processed, what="20 comments applied")
    await eventually(lambda: _requests(apache_client, 20), what="20 regen requests")
    before = await _state(apache_sessions)
    worker.stop()  # offsets of an active group cannot be reset
    group = worker.app_id
    reset = await asyncio.to_thread(
        apache.cluster.consumer_groups,
        "--group",
        group,
        "--topic",
        COMMENTS,
        "--reset-offsets",
        "--to-earliest",
        "--execute",
    )
    assert re.search(rf"{COMMENTS}\s+\d+\s+0", reset), reset  # every partition back to 0
    worker.start()
    await worker.wait_ready()

    async def caught_up() -> bool:
        out = await asyncio.to_thread(
            apache.cluster.consumer_groups, "--describe", "--group", group
        )
        lags = [line.split() for line in out.splitlines() if line.startswith(group)]
        mine = [parts for parts in lags if parts[1] == COMMENTS]
        return bool(mine) and all(parts[5] == "0" for parts in mine)

    await eventually(caught_up, timeout=60, what="the replay to reach the end of the topic")
    worker.stop()
    assert await _state(apache_sessions) == before  # replayed: recognised, nothing changed
    asked = await _requests_by_user(apache_client)
    assert sorted(asked) == list(USERS)
    assert all(len(ids) == 1 for ids in asked.values()), asked  # none asked twice


async def _requests_by_user(client: Kafka) -> dict[int, set[str]]:
    """Distinct request ids per user of this test (a copy of one id is at-least-once)."""
    asked: dict[int, set[str]] = {}
    for request in await client.read_json(REGEN):
        if request["user_id"] in USERS:
            asked.setdefault(request["user_id"], set()).add(request["event_id"])
    return asked


async def _requests(client: Kafka, count: int) -> bool:
    return len(await _requests_by_user(client)) >= count
