"""The comment batch's reads and writes back to growing tables (``comment_inputs``,
``processed_events``) probe the primary key once a key, whatever PostgreSQL knows of the
table, and answer what a plain join answers.

A plain join was planned from the table's statistics, and a prepared statement keeps its
plan until the next analyze: with those of a table never analyzed (a new database, after
a truncate) it read the whole table once a batch (docs/performance.md, issue 28). A probe
per key left to the planner is planned as a scan per key where the table was analyzed
while empty and was small when the plan was made; ``comment_input_states`` (migration
0015) plans its probe with scans off. The outcomes' upsert has no plan to choose."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.clock import T0
from tests.helpers.factories import comment_doc
from worker.domain.batch import BatchResult
from worker.domain.snapshot import CommentInput
from worker.domain.wire import CommentEvent, InputStream
from worker.services.input_snapshots import FIND, InputSets, lock_with_inputs
from worker.storage import dedup
from worker.storage.database import session_factory
from worker.storage.models import ProcessedEventRow
from worker.storage.pgarray import literal, write_together

FILL_INPUTS = text(
    "INSERT INTO comment_inputs (user_id, comment_id, version_at, version_event, deleted) "
    "SELECT g % 50, 'c' || g, CAST(:t AS timestamptz), 'e' || g, g % 7 = 0 "
    "FROM generate_series(CAST(:first AS integer), :n) AS g"
)
# The scans of comment_inputs this session has not reported yet (this transaction's and
# perhaps some before).
SCANS = text(
    "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'comment_inputs'"
)
# What the statements replaced: a plain join of the batch's keys to the table.
JOINED = text(
    "SELECT c.user_id, c.comment_id, c.version_at, c.version_event, c.deleted "
    "FROM comment_inputs c JOIN unnest(CAST(CAST(:u AS text) AS bigint[]), "
    "CAST(CAST(:c AS text) AS text[])) AS k(user_id, comment_id) "
    "ON c.user_id = k.user_id AND c.comment_id = k.comment_id"
)


def _postgresql(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the set-based statements are PostgreSQL's")


async def _plan(engine: AsyncEngine, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's nodes, flattened (subplans included)."""
    async with engine.connect() as conn:
        doc = (await conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params)).scalar_one()
    nodes, todo = [], [(json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def _keys(n: int) -> tuple[list[int], list[str]]:
    """Keys of the fill (every third one) and keys it does not hold, interleaved."""
    users = [g % 50 for g in range(1, n, 3)] + [g % 50 for g in range(n + 1, n + 30)]
    comments = [f"c{g}" for g in range(1, n, 3)] + [f"c{g}" for g in range(n + 1, n + 30)]
    return users, comments


@pytest.mark.parametrize("state", ["never analyzed", "analyzed while empty"])
async def test_the_input_states_are_probed_by_key_whatever_the_statistics(
    engine: AsyncEngine, state: str
) -> None:
    """The statement is prepared and run while the table is small (its plan is cached),
    then the table grows to 3,000 rows: the read still probes the key once a key, and
    never scans the table (a plain join read all of it, a lateral probe planned while
    the table looked empty read all of it once a key)."""
    _postgresql(engine)
    users, comments = _keys(3000)
    params = {"u": literal("bigint", users), "c": literal("text", comments)}
    async with engine.connect() as conn:  # one connection: its prepared statement's plan
        await conn.execute(text("TRUNCATE comment_inputs"))
        if state == "analyzed while empty":
            await conn.execute(text("ANALYZE comment_inputs"))
        await conn.execute(FILL_INPUTS, {"t": T0, "first": 1, "n": 20})
        await conn.commit()
        for _ in range(8):  # past PostgreSQL's five custom plans: the generic one is kept
            await conn.execute(FIND, params)
            await conn.commit()
        await conn.execute(FILL_INPUTS, {"t": T0, "first": 21, "n": 3000})
        await conn.commit()
        before = (await conn.execute(SCANS)).one()  # counts not yet reported: since then
        found = (await conn.execute(FIND, params)).all()
        after = (await conn.execute(SCANS)).one()
    assert len(found) == 1000
    assert (after[0] - before[0], after[1] - before[1]) == (0, len(users))


async def test_the_probes_read_what_a_join_reads(engine: AsyncEngine) -> None:
    """Present and absent keys, users with several: ``InputSets.load`` (``FIND``) and
    ``lock_with_inputs`` (``LOCK_AND_FIND``) know exactly the joined rows."""
    _postgresql(engine)
    async with engine.begin() as conn:
        await conn.execute(FILL_INPUTS, {"t": T0, "first": 1, "n": 600})
    users, comments = _keys(600)
    async with engine.connect() as conn:
        params = {"u": literal("bigint", users), "c": literal("text", comments)}
        joined = {
            (u, c): CommentInput(a, e, d) for u, c, a, e, d in await conn.execute(JOINED, params)
        }
    assert 150 < len(joined) < len(users)
    expected = {key: joined.get(key) for key in zip(users, comments, strict=True)}
    async with session_factory(engine).begin() as session:
        loaded = InputSets()
        await loaded.load(session, zip(users, comments, strict=True))
        _, locked = await lock_with_inputs(session, list(zip(users, comments, strict=True)), T0)
    assert loaded.known == expected
    assert locked.known == expected


async def test_outcomes_change_only_the_outcome_of_the_claimed_rows(engine: AsyncEngine) -> None:
    """The outcomes' upsert, planned without a scan of ``processed_events`` (its conflict
    check probes the key), stores each outcome and leaves the claim's time and every
    other row as they were."""
    _postgresql(engine)
    async with engine.begin() as conn:  # the bench's: truncated and analyzed while empty
        await conn.execute(text("TRUNCATE processed_events"))
        await conn.execute(text("ANALYZE processed_events"))
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        earlier = [_event(f"old{i}") for i in range(3)]
        await dedup.claim(session, InputStream.COMMENTS, earlier, T0, BatchResult())
    outcomes = {"stale_marked": ["e1", "e3"], "settled": ["e2"]}
    write = dedup.outcomes_write(InputStream.COMMENTS, outcomes)
    assert write is not None
    nodes = await _plan(engine, write.sql, write.params)
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    assert [n["Node Type"] for n in scans] == ["Function Scan"], scans
    claimed_at = T0 + timedelta(minutes=1)
    async with sessions.begin() as session:
        events = [_event(f"e{i}") for i in (1, 2, 3)]
        await dedup.claim(session, InputStream.COMMENTS, events, claimed_at, BatchResult())
        await write_together(session, [write])
    async with sessions() as session:
        rows = (await session.execute(select(ProcessedEventRow))).scalars().all()
    stored = {(r.event_id, r.outcome, r.processed_at) for r in rows}
    assert stored == {
        *((f"old{i}", dedup.CLAIMED, T0) for i in range(3)),
        ("e1", "stale_marked", claimed_at),
        ("e2", "settled", claimed_at),
        ("e3", "stale_marked", claimed_at),
    }


def _event(event_id: str) -> tuple[None, CommentEvent]:
    return None, CommentEvent.model_validate(comment_doc(event_id, 1, T0))
