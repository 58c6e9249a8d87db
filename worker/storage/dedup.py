"""Idempotency: claiming event ids in ``processed_events`` and recording their outcome.

A batch's ids are claimed first with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a
second worker that holds the same events (a rebalance hands a partition over while the
first is mid-batch) waits for the first one's commit and then skips them, so no effect is
applied twice. On PostgreSQL the ids travel as one array literal (``worker.storage.pgarray``),
which costs a fraction of a multi-row VALUES statement's per-row parameters, and the
statement answers with the ids it could not claim, usually none. A stream whose batch must
hold per-key advisory locks before it reads (request mappings: ``services.mappings``) takes
them in the claim's own statement, after the claim, for the events it claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Generic, TypeVar

from sqlalchemy import TextClause, delete, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import BatchResult
from worker.domain.wire import InputEvent, InputStream
from worker.storage.database import dialect_insert, is_postgresql
from worker.storage.driver_rows import driver_rows
from worker.storage.models import ProcessedEventRow
from worker.storage.pgarray import Write, array, literal, unnest_rows, write_together

T = TypeVar("T")
DEAD_LETTERED = "dead_lettered"
CLAIMED = "claimed"  # until the batch's write stores the outcome

# Returns the ids it could not claim (usually none), not the hundreds it claimed.
_PG_CLAIMED = (
    f"WITH ids AS (SELECT unnest({array('ids', 'text')}) AS e), claimed AS ("
    "INSERT INTO processed_events (stream, event_id, outcome, processed_at) "
    "SELECT CAST(:stream AS text), e, CAST(:outcome AS text), CAST(:now AS timestamptz) FROM ids "
    "ON CONFLICT (stream, event_id) DO NOTHING RETURNING event_id) "
)
_PG_UNCLAIMED = "SELECT e FROM ids EXCEPT ALL SELECT event_id FROM claimed"
PG_CLAIM = text(_PG_CLAIMED + _PG_UNCLAIMED)


def advisory_lock(key: str) -> str:
    """SQL taking the transaction-scoped advisory lock of the text ``key`` (an SQL
    expression). One definition, because two statements must take the same lock: parking a
    comment and mapping its request serialise on it (``services.signal_records``)."""
    return f"pg_advisory_xact_lock(hashtextextended({key}, 7))"


# The claim, then the advisory locks of the claimed events' keys (sorted: concurrent batches
# never deadlock on them), as one statement: ``locked`` reads ``claimed``, so every claim is
# inserted before the first lock is asked for (a batch waiting on another's claim holds no
# advisory lock), and its count is read, so the locks are taken even when every id was
# claimed (then the one row answers NULL).
_PG_LOCKED = (
    f"WITH ids AS (SELECT * FROM unnest({array('ids', 'text')}, {array('keys', 'text')}) "
    "AS t(e, k)), claimed AS ("
    "INSERT INTO processed_events (stream, event_id, outcome, processed_at) "
    "SELECT CAST(:stream AS text), e, CAST(:outcome AS text), CAST(:now AS timestamptz) FROM ids "
    "ON CONFLICT (stream, event_id) DO NOTHING RETURNING event_id), "
    f"locked AS (SELECT count({advisory_lock('k')}) AS n FROM (SELECT DISTINCT k FROM ids "
    "JOIN claimed ON claimed.event_id = ids.e ORDER BY k) AS s) "
)
PG_CLAIM_LOCKING = text(
    _PG_LOCKED + f"SELECT t.e FROM locked LEFT JOIN ({_PG_UNCLAIMED}) AS t ON true"
)


@cache
def _claim_reading(also: str, locking: bool) -> TextClause:
    """``PG_CLAIM`` / ``PG_CLAIM_LOCKING`` answering ``also`` too: each row is an id it
    could not claim (NULL: none) and the value; always one row at least."""
    start, one = (_PG_LOCKED, "locked") if locking else (_PG_CLAIMED, "(SELECT 1) AS one")
    return text(start + f"SELECT t.e, {also} FROM {one} LEFT JOIN ({_PG_UNCLAIMED}) AS t ON true")


# The claimed rows' outcomes, as an upsert: its conflict check probes the primary key for
# every row, with no plan to choose. The UPDATE ... FROM join it replaces was planned, and
# with the statistics of an empty table (a new database, after a truncate, and in the
# prepared statement's cached plan until the first analyze) it read all of the stream's
# rows to find a batch's: 11.4 ms a batch at 50,000 events against 2.6 with probes
# (docs/performance.md, issue 28). Every row exists (the claim's, in this transaction), so
# the proposed row is never inserted: only ``outcome`` changes, ``processed_at`` stays
# the claim's (the proposed value only satisfies NOT NULL); on half-filled pages (migration
# 0014) each is a HOT update.
PG_OUTCOMES = (
    "INSERT INTO processed_events AS p (stream, event_id, outcome, processed_at) "
    "SELECT CAST(:p_stream AS text), v.event_id, v.outcome, statement_timestamp() "
    f"FROM {unnest_rows({'event_id': 'text', 'outcome': 'text'}, 'p_')} "
    "ON CONFLICT (stream, event_id) DO UPDATE SET outcome = excluded.outcome"
)


@dataclass(frozen=True)
class Claim(Generic[T]):
    """The events a transaction must apply, and what the claim's statement read besides
    (``claim``'s ``also``; None without it)."""

    events: list[tuple[T, InputEvent]]
    also: Any = None


async def claim(
    session: AsyncSession,
    stream: InputStream,
    events: Sequence[tuple[T, InputEvent]],
    now: datetime,
    result: BatchResult,
    lock: Callable[[InputEvent], str] | None = None,
    outcome: str = CLAIMED,
    also: str | None = None,
) -> Claim[T]:
    """Claim the batch's event ids: the events this transaction must apply.

    PostgreSQL only: ``lock`` gives the key of each event whose ``advisory_lock`` the
    claim's statement then takes for the claimed events (one round trip less per batch);
    ``outcome``, when the stream knows it before applying (every claimed mapping is
    ``mapped``), is stored at once instead of updated in the batch's write (for 500 events
    7 of a mapping batch's 33 ms in the database); ``also``, a scalar SQL expression the
    batch needs before its rules run, is read in the claim's statement too (a round trip
    less; ``Claim.also``), even when every event was claimed before (not without events)."""
    first: dict[str, tuple[T, InputEvent]] = {}
    for item in events:
        if item[1].event_id in first:
            result.count(stream, "duplicate")
        else:
            first[item[1].event_id] = item
    if also is not None and not is_postgresql(session):
        raise ValueError("claim(also=...) is PostgreSQL's")
    if not first:
        return Claim([])
    value = None
    if is_postgresql(session):
        ids = literal("text", list(first))
        params = {"stream": stream.value, "now": now, "ids": ids, "outcome": outcome}
        if lock is not None:
            params["keys"] = literal("text", [lock(event) for _, event in first.values()])
        if also is not None:
            answered = await driver_rows(session, _claim_reading(also, lock is not None), params)
            taken = {e for e, _ in answered} - {None}
            value = answered[0][1]
        elif lock is None:
            taken = {r[0] for r in await driver_rows(session, PG_CLAIM, params)}
        else:
            taken = {r[0] for r in await driver_rows(session, PG_CLAIM_LOCKING, params)} - {None}
        claimed = first.keys() - taken
    else:
        stmt = (
            dialect_insert(session)(ProcessedEventRow)
            .on_conflict_do_nothing(index_elements=["stream", "event_id"])
            .returning(ProcessedEventRow.event_id)
        )
        rows = [
            {"stream": stream.value, "event_id": i, "outcome": CLAIMED, "processed_at": now}
            for i in first
        ]
        claimed = set((await session.scalars(stmt, rows)).all())
    if skipped := len(first.keys() - claimed):
        result.outcomes[(stream.value, "duplicate")] += skipped
    return Claim([item for event_id, item in first.items() if event_id in claimed], value)


async def record_outcomes(
    session: AsyncSession, stream: InputStream, outcomes: dict[str, list[str]]
) -> None:
    """Store each claimed event's outcome; a dead-lettered event is unclaimed, so that a
    replay from the dead-letter topic is applied rather than skipped."""
    table = ProcessedEventRow
    in_stream = table.stream == stream.value
    if dead := outcomes.get(DEAD_LETTERED):
        await session.execute(delete(table).where(in_stream & table.event_id.in_(dead)))
    applied = {o: ids for o, ids in outcomes.items() if o != DEAD_LETTERED}
    if is_postgresql(session):
        await write_together(session, [outcomes_write(stream, applied)])
        return
    for outcome, ids in applied.items():
        where = in_stream & table.event_id.in_(ids)
        await session.execute(update(table).where(where).values(outcome=outcome))


def outcomes_write(stream: InputStream, outcomes: dict[str, list[str]]) -> Write | None:
    """PostgreSQL: recording applied events' outcomes as a ``Write`` (one statement, or a
    part of the batch's one statement: ``pgarray.write_together``)."""
    pairs = [(i, o) for o, ids in outcomes.items() for i in ids]
    if not pairs:
        return None
    params: dict[str, object] = {
        "p_stream": stream.value,
        "p_event_id": literal("text", [i for i, _ in pairs]),
        "p_outcome": literal("text", [o for _, o in pairs]),
    }
    return Write(PG_OUTCOMES, params)


PG_UNCLAIM = (
    "DELETE FROM processed_events WHERE stream = CAST(:u_stream AS text) "
    f"AND event_id = ANY({array('u_ids', 'text')})"
)


def record_writes(stream: InputStream, outcomes: dict[str, list[str]]) -> list[Write | None]:
    """PostgreSQL: ``record_outcomes`` as ``Write``s for a batch's one statement: the
    dead-lettered events unclaimed (a replay from the dead-letter topic is applied), the
    others' outcomes stored."""
    applied = {o: ids for o, ids in outcomes.items() if o != DEAD_LETTERED}
    dead = outcomes.get(DEAD_LETTERED)
    unclaim = (
        Write(PG_UNCLAIM, {"u_stream": stream.value, "u_ids": literal("text", dead)})
        if dead
        else None
    )
    return [unclaim, outcomes_write(stream, applied)]
