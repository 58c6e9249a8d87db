"""CPU per comment of the comment pipeline in process (no Faust, no broker), comparable
across commits: it imports the modules by their layered names, or by the flat names they had
before 2026-12-01, so that the same script measures an older checkout too:

    PYTHONPATH=/path/to/old/checkout python bench/compare_comments.py postgresql+asyncpg://...

The database's public schema is dropped and migrated again; 5,000 fresh highlights are
seeded and 20,000 comments applied in batches of 500. Before the timed part the garbage
collector is settled as the worker settles it after start-up (``settle_garbage_collector``:
the heap frozen, a young generation of 20,000); ``--gc default`` keeps Python's defaults,
under which one or two full collections of the whole heap (about 30 ms each) fall in the
timed part by chance and move the figure by 1.5 us a comment. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

try:
    from worker.domain.batch import RawMessage
    from worker.domain.wire import InputStream
    from worker.services.pipeline import Pipeline
    from worker.storage import migrate
    from worker.storage.database import create_engine, session_factory
except ImportError:  # a checkout from before the layered layout
    from worker.batch import RawMessage  # type: ignore[no-redef]
    from worker.db import create_engine, session_factory  # type: ignore[no-redef]
    from worker.events import InputStream  # type: ignore[no-redef]
    from worker.pipeline import Pipeline  # type: ignore[no-redef]

    from worker import migrate  # type: ignore[no-redef,attr-defined]

EVENTS, BATCH, USERS = 20_000, 500, 5_000
SEED = text(
    "INSERT INTO user_profile_highlights (user_id, bio_text, proof_points_json, quotes_json,"
    " source_group, snapshot_hash, llm_model, generated_at, stale_after, manual_override,"
    " is_stale, generation, regen_attempts, created_at, updated_at)"
    " SELECT g, 'b', '[]', '[]', 'g', 's', 'm', now() - interval '1 day',"
    " now() + interval '6 days', false, false, 0, 0, now(), now()"
    " FROM generate_series(1, :users) g"
)


def comments(now: datetime) -> list[Any]:
    at = (now - timedelta(seconds=1)).isoformat()
    docs = (
        {
            "event_id": f"e{i}",
            "type": "comment.created",
            "comment_id": f"c{i}",
            "request_id": f"r{i}",
            "user_id": 1 + i % USERS,
            "occurred_at": at,
        }
        for i in range(EVENTS)
    )
    return [RawMessage(json.dumps(d).encode(), "signal.comments", 0, i) for i, d in enumerate(docs)]


def settle_like_the_worker() -> None:
    """The worker's collector settings after start-up (the same numbers in every commit
    this script measures; ``worker.kafka.app.settle_garbage_collector``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def main(url: str, worker_gc: bool = True, as_json: bool = False) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(SEED, {"users": USERS})
    pipeline = Pipeline(session_factory(engine))
    messages = comments(datetime.now(UTC))
    if worker_gc:
        settle_like_the_worker()
    cpu, wall = time.process_time(), time.monotonic()
    for start in range(0, EVENTS, BATCH):
        await pipeline.process(InputStream.COMMENTS, messages[start : start + BATCH])
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    if as_json:  # for bench.comment_cost
        print(json.dumps({"cpu_us": cpu / EVENTS * 1e6, "rate": EVENTS / wall}))
    else:
        print(f"{cpu / EVENTS * 1e6:.1f} us CPU per comment, {EVENTS / wall:,.0f}/s wall")
    await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="postgresql+asyncpg://... (its public schema is dropped)")
    parser.add_argument("--gc", choices=("worker", "default"), default="worker")
    parser.add_argument("--json", action="store_true", help="one JSON line: cpu_us, rate")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.gc == "worker", args.json))
