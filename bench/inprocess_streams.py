"""In process, without Faust: CPU per event of the result and mapping batches on PostgreSQL.

    WB_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/wbprof \\
      .venv/bin/python -m bench.inprocess_streams results 20000 500

Seeds ``n`` stale rows with a pending request (and, for mappings, ``n / 2`` parked
comments), then applies ``n`` events through ``Pipeline.process`` in batches of ``size``;
prints CPU microseconds per event and the wall rate. The database must exist (it is
migrated and emptied here). A fourth argument ``statements`` also prints each kind of
statement's wall time per batch (by its first words; timing itself costs CPU, so the CPU
figure of such a run is not comparable). On loopback it connects without TLS, as the bench does
(``tests.helpers.postgres.without_tls_on_loopback``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.postgres import without_tls_on_loopback
from tests.helpers.statements import a_statement
from worker.domain.batch import RawMessage
from worker.domain.wire import InputStream
from worker.services.pipeline import Pipeline
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory

NOW = datetime.now(UTC)
SEED = (
    "INSERT INTO user_profile_highlights (user_id, created_at, updated_at, generated_at, "
    "snapshot_hash, is_stale, stale_since, generation, regen_request_id, regen_generation, "
    "regen_requested_at) SELECT g, now(), now(), now() - interval '1 day', 's', true, now(), "
    "1, 'pend-' || g, 1, now() FROM generate_series(1, :n) g"
)
PARK = (
    "INSERT INTO parked_comments (event_id, request_id, payload, parked_at) "
    "SELECT 'pk-' || g, 'q' || g, jsonb_build_object('event_id', 'pk-' || g, "
    "'type', 'comment.created', 'comment_id', 'pk-' || g, 'request_id', 'q' || g, "
    "'occurred_at', CAST(:at AS text)), now() FROM generate_series(1, :n, 2) g"
)


def _raw(doc: dict[str, Any], offset: int) -> RawMessage:
    return RawMessage(value=json.dumps(doc).encode(), topic="t", partition=0, offset=offset)


def _events(kind: str, n: int) -> list[RawMessage]:
    if kind == "mappings":
        at = (NOW - timedelta(hours=2)).isoformat()
        docs = [
            {"event_id": f"m{i}", "request_id": f"q{i}", "user_id": i, "occurred_at": at}
            for i in range(1, n + 1)
        ]
    else:
        at = (NOW - timedelta(minutes=1)).isoformat()
        docs = [
            {
                "event_id": f"g{i}",
                "user_id": i,
                "bio_text": "b",
                "proof_points": ["p1", "p2"],
                "quotes": ["q"],
                "source_group": "g",
                "snapshot_hash": f"n{i}",
                "llm_model": "m",
                "generated_at": at,
                "generation": 1,
                "regen_request_id": f"pend-{i}",
            }
            for i in range(1, n + 1)
        ]
    return [_raw(doc, i) for i, doc in enumerate(docs)]


class StatementTimes:
    """Wall time of each statement the engine runs, by its first words (``WITH w0`` is a
    batch's one write, ``WITH m`` the mappings' map-and-unpark, ``WITH ids`` a claim), sent
    through SQLAlchemy or by asyncpg itself (``worker.storage.driver_rows``: asyncpg's query
    log times those)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.started: dict[int, float] = {}
        self.drivers: set[Any] = set()
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)
        event.listen(engine.sync_engine, "checkout", self._watch_driver)

    def _watch_driver(self, dbapi_connection: Any, *_: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver not in self.drivers:
            self.drivers.add(driver)
            driver.add_query_logger(self._logged)

    def _logged(self, logged: Any) -> None:
        if a_statement(logged.query):
            self.times[" ".join(logged.query.split()[:3])[:40]].append(logged.elapsed)

    def _before(self, _conn: Any, cursor: Any, *_args: Any) -> None:
        self.started[id(cursor)] = time.perf_counter()

    def _after(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        key = " ".join(statement.split()[:3])[:40]
        self.times[key].append(time.perf_counter() - self.started.pop(id(cursor)))

    def report(self) -> str:
        rows = sorted(self.times.items(), key=lambda item: -sum(item[1]))
        return "\n".join(
            f"  {1000 * sum(t) / len(t):6.1f} ms per run x{len(t)}  {key}" for key, t in rows
        )


async def main(kind: str, n: int, size: int, statements: bool = False) -> None:
    engine = create_engine(without_tls_on_loopback(os.environ["WB_BENCH_DATABASE_URL"]))
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE user_profile_highlights, outbox, processed_events, signal_activity, "
                "parked_comments, signal_requests, fresh_transitions"
            )
        )
        await conn.execute(text(SEED), {"n": n})
        if kind == "mappings":
            await conn.execute(text(PARK), {"n": n, "at": (NOW - timedelta(hours=1)).isoformat()})
    timed = StatementTimes(engine) if statements else None
    pipeline = Pipeline(session_factory(engine))
    stream = InputStream.REQUESTS if kind == "mappings" else InputStream.GENERATED
    messages = _events(kind, n)
    cpu, wall = time.process_time(), time.monotonic()
    for i in range(0, n, size):
        await pipeline.process(stream, messages[i : i + size])
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    print(f"{kind}: {n} events, {cpu / n * 1e6:.0f} us CPU/event, {n / wall:,.0f}/s wall")
    if timed is not None:
        print(timed.report())
    await engine.dispose()


if __name__ == "__main__":
    extra = sys.argv[4:5] == ["statements"]
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), extra))
