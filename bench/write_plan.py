"""Where the comment batch's statements spend PostgreSQL's time, node by node (issue 28):
a throwaway cluster with ``auto_explain`` (``log_analyze``, ``log_wal``, ``log_buffers``,
nested statements off), 50,000 fresh highlights, then comments through ``Pipeline.process``
in batches of 500 under the worker's default policy (settle 5 s: requests queue on the row,
as in the bench's ingest); prints the plans of the last batch's statements that took at
least 1 ms, as the server logged them.

    python -m bench.write_plan [batches] [analyze]

``analyze``: ANALYZE ``processed_events`` and ``comment_inputs`` half way. Without it their
statistics are those of empty tables, as in the bench's ingest (``Bench.reset_highlights``
analyzes an empty ``processed_events``; autovacuum's first pass comes a minute later).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bench.harness import bench_comment
from tests.helpers import pgcluster
from tests.helpers import postgres as pg
from worker.domain.batch import RawMessage
from worker.domain.scheduling import RegenPolicy
from worker.domain.wire import InputStream
from worker.services.pipeline import Pipeline
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory

USERS, BATCH = 50_000, 500
NOW = datetime.now(UTC)
SEED = (
    "INSERT INTO user_profile_highlights (user_id, bio_text, proof_points_json, quotes_json, "
    "source_group, snapshot_hash, llm_model, generated_at, stale_after, manual_override, "
    "is_stale, generation, regen_attempts, created_at, updated_at) SELECT g, 'bio', '[]', "
    "'[]', 'grp', 'snap-' || g, 'm', :gen, :future, false, false, 0, 0, :gen, :gen "
    "FROM generate_series(1, :n) g"
)
AUTO_EXPLAIN = {
    "shared_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "1ms",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_wal": "on",
    "auto_explain.log_timing": "on",
}


def comments(batches: int) -> list[list[RawMessage]]:
    """The bench's comments (``Bench.produce_comments``): random users, one time."""
    rng, at = random.Random(7), (NOW - timedelta(hours=1)).isoformat()
    out = []
    for b in range(batches):
        batch = []
        for i in range(b * BATCH, (b + 1) * BATCH):
            user = rng.randint(1, USERS)
            doc = bench_comment(f"e{i}", i, user, at)
            batch.append(RawMessage(json.dumps(doc).encode(), "t", 0, i, str(user).encode()))
        out.append(batch)
    return out


async def run(url: str, batches: int, analyze: bool) -> None:
    engine = create_engine(url)
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        params = {"gen": NOW - timedelta(days=1), "future": NOW + timedelta(days=30)}
        await conn.execute(text(SEED), {**params, "n": USERS})
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(text("VACUUM ANALYZE user_profile_highlights"))
    policy = RegenPolicy(timedelta(seconds=5), timedelta(seconds=60), 600.0, 100)
    pipeline = Pipeline(session_factory(engine), policy=policy)
    for i, batch in enumerate(comments(batches)):
        if analyze and i == batches // 2:
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE processed_events, comment_inputs"))
        await pipeline.process(InputStream.COMMENTS, batch)
    await engine.dispose()


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    analyze = sys.argv[2:3] == ["analyze"]
    pgcluster.SETTINGS.update(AUTO_EXPLAIN)
    with pgcluster.private_cluster() as cluster:
        admin = cluster.get_uri()
        url = asyncio.run(pg.create_database(admin, prefix="wbplan"))
        asyncio.run(run(url, batches, analyze))
        log = (cluster.datadir / "server.log").read_text()
    plans = log.split("LOG:  duration: ")
    marker = "Query Text: WITH w0"  # the last batch's write and the statements before it
    last = max(i for i, p in enumerate(plans) if marker in p)
    for plan in plans[max(1, last - 2) : last + 1]:
        print("duration: " + plan.split("\n\t")[0])
        for line in plan.split("\n"):
            if "actual time" in line or "WAL:" in line or "Buffers:" in line:
                print("  " + line.strip()[:150])


if __name__ == "__main__":
    main()
