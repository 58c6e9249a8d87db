"""Two shared pieces at size (issue 28, ``docs/scaling.md``), on a throwaway cluster with
PostgreSQL's default ``max_connections`` (100) and ``max_locks_per_transaction`` (64):

- the scheduler step (``scheduler.publish_due``, rolled back, five times) and the plans of
  its skip query and its due pick, at each queue length given (every row queued and due,
  none skippable: the usual case); each step releases the budget's burst (``--burst``,
  100; a steady step at 600 a minute releases 2.5 a 250 ms tick: ``--burst 3``);
- how many concurrent transactions holding 500 advisory locks each (a mapping batch's, at
  ``WB_BATCH_SIZE`` 500) the shared lock table holds before "out of shared memory".

    python -m bench.shared_pieces 50000 500000 [--burst N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import Select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import pgcluster
from tests.helpers import postgres as pg
from worker.domain.scheduling import RegenPolicy
from worker.services import scheduler
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory

QUEUED = (
    "INSERT INTO user_profile_highlights (user_id, bio_text, proof_points_json, quotes_json, "
    "source_group, snapshot_hash, llm_model, generated_at, stale_after, manual_override, "
    "is_stale, generation, regen_attempts, created_at, updated_at, regen_queued_at, "
    "regen_first_change_at, regen_last_change_at, regen_priority, regen_queued_reason, "
    "regen_unseen, input_fingerprint) SELECT g, 'bio', '[]', '[]', 'grp', 's', 'm', :gen, "
    ":future, false, true, 1, 0, :gen, :gen, :q, :q, :q, 3, 'new_comment', 1, g "
    "FROM generate_series(1, :n) g"
)
LOCKS = "SELECT count(pg_advisory_xact_lock(hashtextextended($1 || g, 7))) "
LOCKS += "FROM generate_series(1, $2) g"


def _sql(stmt: Select[Any]) -> str:
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


async def _plan(engine: AsyncEngine, stmt: Select[Any]) -> list[str]:
    async with engine.begin() as conn:
        found = await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + _sql(stmt)))
        plan = [str(line) for line in found.scalars().all()]
        await conn.rollback()
    return plan


async def step_at(engine: AsyncEngine, n: int, policy: RegenPolicy) -> dict[str, Any]:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE user_profile_highlights"))
        params = {"gen": now - timedelta(days=1), "future": now + timedelta(days=30)}
        await conn.execute(text(QUEUED), {**params, "q": now - timedelta(minutes=1), "n": n})
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(text("VACUUM ANALYZE user_profile_highlights"))
    plans = {"skip": await _plan(engine, scheduler.skippable(now, policy))}
    plans["due"] = await _plan(engine, scheduler.due_rows(now, policy, 10))
    sessions = session_factory(engine)
    times = []
    for _ in range(5):
        async with sessions() as session:
            started = time.perf_counter()
            await scheduler.publish_due(session, now, policy)
            await session.flush()
            times.append((time.perf_counter() - started) * 1000)
            await session.rollback()
    return {"step_ms": sorted(times), **plans}


async def advisory_capacity(url: str, per_transaction: int = 500) -> tuple[int, str]:
    """Transactions of ``per_transaction`` distinct advisory locks held at once, until one
    fails; returns how many held and the failure."""
    _, kwargs = pg.asyncpg_dsn(url)
    conns: list[asyncpg.Connection] = []
    try:
        for k in range(1, 200):
            conn = await asyncpg.connect(**kwargs)
            conns.append(conn)
            await conn.execute("SET lock_timeout = '5s'")
            await conn.execute("BEGIN")
            try:
                await conn.fetchval(LOCKS, f"r{k}-", per_transaction)
            except asyncpg.PostgresError as exc:
                return k - 1, str(exc)
        return len(conns), "no failure"
    finally:
        for conn in conns:
            await conn.close()


async def measure(admin: str, sizes: list[int], policy: RegenPolicy) -> None:
    url = await pg.create_database(admin, prefix="wbscale")
    try:
        engine = create_engine(url)
        await migrate.upgrade(engine)
        for n in sizes:
            got = await step_at(engine, n, policy)
            print(f"== queue {n:,}: step ms {', '.join(f'{t:.1f}' for t in got['step_ms'])}")
            for part in ("skip", "due"):
                print(f"  {part} query:", *got[part][:12], sep="\n    ")
        await engine.dispose()
        held, why = await advisory_capacity(url)
        print(f"== advisory locks: {held} transactions of 500 held; then: {why}")
    finally:
        await pg.drop_database(admin, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", type=int, nargs="+", help="queue lengths")
    parser.add_argument("--burst", type=int, default=100, help="requests a step releases")
    args = parser.parse_args()
    policy = RegenPolicy(timedelta(seconds=5), timedelta(seconds=60), 600.0, args.burst)
    pgcluster.SETTINGS["max_connections"] = "100"  # PostgreSQL's default (the tests: 400)
    with pg.throwaway_server() as server:
        asyncio.run(measure(server.get_uri(), args.sizes, policy))


if __name__ == "__main__":
    main()
