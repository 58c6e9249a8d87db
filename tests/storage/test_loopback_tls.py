"""The tests' and bench's PostgreSQL URLs on loopback ask for no TLS (``tests.helpers.postgres``),
and SQLAlchemy's asyncpg dialect passes that on: a test server's snakeoil TLS otherwise costs
every round trip CPU (docs/performance.md, 2026-12-02). The worker's own URL is untouched."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.helpers.postgres import without_tls_on_loopback
from worker.settings import normalize_database_url
from worker.storage.database import create_engine


@pytest.mark.parametrize(
    ("given", "query"),
    [
        ("postgresql://postgres@127.0.0.1:5432/t", {"ssl": "disable"}),
        ("postgresql://postgres@localhost/t", {"ssl": "disable"}),
        ("postgresql://postgres@127.0.0.1/t?sslmode=require", {"sslmode": "require"}),
        ("postgresql://postgres@127.0.0.1/t?ssl=prefer", {"ssl": "prefer"}),
        ("postgresql://postgres@db.example:5432/t", {}),
        ("postgresql://postgres@/t?host=/run/postgresql", {"host": "/run/postgresql"}),
    ],
)
def test_only_loopback_tcp_urls_that_say_nothing_of_tls_get_ssl_disable(
    given: str, query: dict[str, str]
) -> None:
    url = make_url(without_tls_on_loopback(given))
    assert dict(url.query) == query
    assert url.drivername == make_url(normalize_database_url(given)).drivername


@pytest.mark.postgres
async def test_the_session_database_is_reached_without_tls_on_loopback(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            ssl = await conn.scalar(
                text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
    finally:
        await engine.dispose()
    if make_url(pg_url).host in ("127.0.0.1", "localhost", "::1"):
        assert ssl is False
