"""``wb run`` before the worker starts: a PostgreSQL database behind the code is refused
in one line (a deploy never migrates a shared schema by itself)."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import postgres as pg
from tests.helpers.cli import wb
from worker.storage import migrate


@pytest.mark.postgres
def test_run_refuses_a_postgresql_database_behind_the_code(pg_admin_url: str) -> None:
    url = asyncio.run(pg.create_database(pg_admin_url, prefix="wbrun"))
    try:
        # a broker is named, so nothing embedded starts; the database check comes first
        done = wb("run", env={"WB_DATABASE_URL": url, "WB_KAFKA_BROKER": "127.0.0.1:1"})
    finally:
        asyncio.run(pg.drop_database(pg_admin_url, url))
    assert done.returncode == 1
    expected = (
        f"wb: error: database is at revision None, code needs {migrate.head_revision()}: "
        "run `wb db upgrade`\n"
    )
    assert done.stderr.endswith(expected)
