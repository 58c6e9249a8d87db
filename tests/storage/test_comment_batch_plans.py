"""The comment batch's joins back to growing tables (``comment_inputs``, ``processed_events``)
probe the primary key per key, and answer what a plain join answers.

A plain join was planned from the table's statistics: with those of a table never analyzed
(a new database, after a truncate; a prepared statement's cached plan keeps the plan made
then until the first analyze) it read the whole table once a batch (docs/performance.md,
issue 28). The outcomes' upsert has no plan to choose; the input states' probe is planned
per key, and an index probe is its cheapest plan on any table PostgreSQL does not know
to be empty (on one analyzed while empty, a cached plan made before the table grows
scans it per key until the next analyze: docs/performance.md)."""

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
from worker.services.input_snapshots import FIND, LOCK_AND_FIND, InputSets, lock_with_inputs
from worker.storage import dedup
from worker.storage.database import session_factory
from worker.storage.models import ProcessedEventRow
from worker.storage.pgarray import literal, write_together

FILL_INPUTS = text(
    "INSERT INTO comment_inputs (user_id, comment_id, version_at, version_event, deleted) "
    "SELECT g % 50, 'c' || g, CAST(:t AS timestamptz), 'e' || g, g % 7 = 0 "
    "FROM generate_series(1, :n) AS g"
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


async def _statistics(engine: AsyncEngine, state: str) -> None:
    """``never analyzed``: what a truncate leaves (and a new database has);
    ``analyzed``: 2,000 input states analyzed."""
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE comment_inputs, processed_events"))
        if state == "analyzed":
            await conn.execute(FILL_INPUTS, {"t": T0, "n": 2000})
            await conn.execute(text("ANALYZE comment_inputs, processed_events"))


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


@pytest.mark.parametrize("state", ["never analyzed", "analyzed"])
async def test_the_input_states_are_probed_by_key_whatever_the_statistics(
    engine: AsyncEngine, state: str
) -> None:
    _postgresql(engine)
    await _statistics(engine, state)
    users, comments = _keys(30)
    params = {
        "u": literal("bigint", users),
        "c": literal("text", comments),
        "ids": literal("bigint", sorted(set(users))),
        "now": T0,
    }
    for statement in (FIND, LOCK_AND_FIND):
        nodes = await _plan(engine, statement.text, params)
        on_inputs = [n for n in nodes if n.get("Relation Name") == "comment_inputs"]
        assert [(n["Node Type"], n.get("Index Name")) for n in on_inputs] == [
            ("Index Scan", "pk_comment_inputs")
        ], on_inputs


async def test_the_probes_read_what_a_join_reads(engine: AsyncEngine) -> None:
    """Present and absent keys, users with several: ``InputSets.load`` (``FIND``) and
    ``lock_with_inputs`` (``LOCK_AND_FIND``) know exactly the joined rows."""
    _postgresql(engine)
    async with engine.begin() as conn:
        await conn.execute(FILL_INPUTS, {"t": T0, "n": 600})
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
