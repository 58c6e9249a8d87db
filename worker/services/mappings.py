"""Request mappings (``signal.requests``), set-based on PostgreSQL: the parked comments of
a batch's requests released exactly once, in four statements whatever the batch's size
(as comments and results).

The claim's own statement also stores the mappings' outcome (``MAPPED``: known before they
are applied) and takes the advisory locks of the claimed events' request ids
(``lock_request``'s, all at once, in one order: ``claim_lock``), so that a comment parked
concurrently is either committed before our next statement takes its snapshot (and we
release it) or parks after our commit (and then finds the mapping). The locks cannot be
taken in the next statement itself: its snapshot would predate them. That next statement
saves the mappings, deletes-returning their parked comments, and creates and locks those
comments' users' rows (``MAP_UNPARK_AND_LOCK``); then the released comments go the comment
batch's way (``comments.apply_locked``: the rules on plain values, every write in one
statement). Released comments are not validated again: they were when they were parked,
and their fields come out of the stored payload in SQL. A request mapped twice in one
batch with different users keeps the ORM path's meaning: its parked comments go to the
user its first mapping event gives, the later events are saved in the batch's write
statement. SQLite keeps the ORM path (``pipeline``); both call the same rules
(``signal_records``'s newer-mapping rule is the SQL twin of ``save_mapping``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import BatchResult
from worker.domain.scheduling import RegenPolicy
from worker.domain.wire import InputEvent, InputStream, ParkedComment, RequestEvent
from worker.services import signal_records
from worker.services.comments import apply_locked
from worker.services.locking import STATE, lock_states
from worker.storage.models import RowState
from worker.storage.pgarray import Write

# Save the mappings, take their parked comments out, then create the rows of those comments'
# users and lock them all (as ``comments.CREATE_AND_LOCK``), in one statement: every part
# reads the snapshot taken after the claim's advisory locks. Each released comment comes back
# with its user's row state (NULL where a concurrent transaction created the row: locked on
# its own afterwards). The user ids travel to the lock as an array (an index scan in order).
# The parked comments are found by a join with the saved mappings, not by
# ``request_id = ANY(<the batch's ids>)``: for that filter the planner sometimes chose a
# sequential scan of parked_comments, each row compared with every id of the batch (1-2 s
# per batch with 25,000 parked: the slow runs of bench's mappings part, 0.2-0.3x).
MAP_UNPARK_AND_LOCK = text(
    f"WITH m AS ({signal_records.upsert_mappings('m_')}), "
    "r AS (DELETE FROM parked_comments AS p USING m WHERE p.request_id = m.request_id "
    "RETURNING p.event_id, p.request_id, p.payload, p.parked_at, m.user_id), "
    "u AS (SELECT ARRAY(SELECT DISTINCT user_id FROM r ORDER BY user_id) AS ids), "
    "created AS (INSERT INTO user_profile_highlights (user_id, created_at, updated_at) "
    "SELECT x, CAST(:m_now AS timestamptz), CAST(:m_now AS timestamptz) "
    "FROM u, unnest(u.ids) AS x ORDER BY x "
    f"ON CONFLICT (user_id) DO NOTHING RETURNING {STATE}), "
    f"locked AS (SELECT {STATE} FROM user_profile_highlights "
    "WHERE user_id = ANY(CAST((SELECT ids FROM u) AS bigint[])) ORDER BY user_id FOR UPDATE), "
    "s AS (SELECT * FROM created UNION ALL SELECT * FROM locked) "
    f"SELECT {signal_records.RELEASED}, s.* FROM r LEFT JOIN s ON s.user_id = r.user_id"
)

_STATE_AT = 7  # the row state's first column in MAP_UNPARK_AND_LOCK's answer


MAPPED = "mapped"  # every claimed mapping's outcome, stored by the claim itself


def _nothing(outcomes: dict[str, list[str]]) -> None:
    """The released comments' outcomes are not recorded: their own events were, when
    they were parked (``parked``); the mappings' outcome was stored by the claim."""
    return None


def claim_lock(event: InputEvent) -> str:
    """The key of the advisory lock a mapping's claim takes (``dedup.claim(lock=...)``)."""
    if not isinstance(event, RequestEvent):
        raise TypeError(f"not a request mapping: {type(event).__name__}")
    return event.request_id


async def apply_mapping_batch(
    session: AsyncSession,
    events: list[RequestEvent],
    now: datetime,
    result: BatchResult,
    policy: RegenPolicy,
) -> dict[str, list[str]]:
    """Apply mappings claimed with ``claim_lock`` and ``MAPPED`` (their request ids locked,
    their outcome stored), in order; returns comment outcomes of the released comments
    (their stale marks follow ``policy``)."""
    if not events:
        return {}
    first: dict[str, RequestEvent] = {}
    later: list[RequestEvent] = []
    for event in events:
        if event.request_id in first:
            later.append(event)
        else:
            first[event.request_id] = event
    found = await session.execute(
        MAP_UNPARK_AND_LOCK, signal_records.mapping_params(list(first.values()), now)
    )
    targets, rows = await _released(session, found.all(), list(first), now)
    again = _remapped(later, now)  # rare: the request mapped again in this batch
    outcomes = await apply_locked(session, targets, rows, now, result, {}, _nothing, policy, again)
    comments = InputStream.COMMENTS.value
    for outcome, ids in outcomes.items():
        result.outcomes[(comments, outcome)] += len(ids)
    if targets:
        result.outcomes[(comments, "unparked")] += len(targets)
    result.outcomes[(InputStream.REQUESTS.value, MAPPED)] += len(events)
    return outcomes


async def _released(
    session: AsyncSession, found: Sequence[Sequence[Any]], requests: list[str], now: datetime
) -> tuple[list[tuple[ParkedComment, int]], dict[int, RowState]]:
    """The released comments in the ORM path's order (by mapping, then as parked) with
    their users, and those users' locked rows; a row another transaction created meanwhile
    (not in the statement's snapshot) is locked here on its own."""
    order = {request_id: i for i, request_id in enumerate(requests)}
    released = sorted(found, key=lambda r: (order[r[0]], r[2], r[3]))
    targets = [(ParkedComment(*r[3:_STATE_AT]), r[1]) for r in released]
    rows: dict[int, RowState] = {}
    for r in released:
        if r[_STATE_AT] is not None and r[1] not in rows:
            rows[r[1]] = RowState(*r[_STATE_AT:])
    if late := {user_id for _, user_id in targets} - rows.keys():
        rows.update(await lock_states(session, late, now))
    return targets, rows


def _remapped(later: list[RequestEvent], now: datetime) -> Write | None:
    """The later mappings of requests mapped twice in one batch, saved with the batch's
    writes: one event per request, the first of its newest (what applying them in order
    with the newer-mapping rule leaves)."""
    if not later:
        return None
    newest: dict[str, RequestEvent] = {}
    for event in later:
        kept = newest.get(event.request_id)
        if kept is None or event.occurred_at > kept.occurred_at:
            newest[event.request_id] = event
    params = signal_records.mapping_params(list(newest.values()), now, "l_")
    return Write(signal_records.upsert_mappings("l_"), params)
