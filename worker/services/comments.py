"""Comment events: which comment makes a row stale, and its set-based form for PostgreSQL.

``apply_comment`` is the one rule (a comment newer than the highlight, or any deletion,
makes it stale; no highlight yet asks for a first one; the mark itself is
``staleness.mark_stale_row``) and works on an ORM row as well as on the plain
``RowState`` values. ``apply_comment_batch`` applies a batch of comments on PostgreSQL in
two statements after the claim, whatever its size: create the missing rows and lock them
all, with the input states of its comments (``input_snapshots.lock_with_inputs``: read
again after the lock only for users whose states another batch changed meanwhile), then
(rules applied in Python on the plain values) write the changed rows, the
outbox row, Signal activity, the input states and the outcomes together. The ORM's
unit of work cost more than the database did, and every round trip waits its turn on the
worker's event loop: comments are the hot stream, bursts of tens of thousands a minute.
SQLite and the other streams keep the ORM path; both call the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import BatchResult, RawMessage
from worker.domain.scheduling import RegenPolicy
from worker.domain.values import StaleOutcome, StaleReason
from worker.domain.wire import Comment, CommentEvent, InputStream
from worker.services import signal_records
from worker.services.input_snapshots import InputSets, lock_with_inputs
from worker.services.locking import REQUESTED, WRITTEN
from worker.services.outbox import OutboxEntry, OutboxSink, Requestable, insert_write
from worker.services.staleness import StaleMark, mark_stale_row
from worker.storage.database import dialect_insert
from worker.storage.models import DeletedCommentRow, RowState
from worker.storage.pgarray import (
    Write,
    columns_of,
    literal,
    sent_as_instants,
    unnest_rows,
    write_together,
)

COMMENT_REASONS = {
    "comment.created": StaleReason.NEW_COMMENT,
    "comment.edited": StaleReason.COMMENT_EDITED,
    "comment.deleted": StaleReason.COMMENT_DELETED,
}
STALE_OUTCOMES = {
    StaleOutcome.REQUESTED: "stale_marked",
    StaleOutcome.COALESCED: "coalesced",
    StaleOutcome.SETTLED: "settled",
    StaleOutcome.OVERRIDE_LOCKED: "override_locked",
}
ALREADY_INCLUDED = "already_included"
UNCHANGED_INPUT = "unchanged_input"  # the input set already held it (redelivered, older)


def apply_comment(
    sink: OutboxSink,
    row: Requestable,
    event: Comment,
    now: datetime,
    result: BatchResult,
    inputs: InputSets,
) -> str:
    """Apply one comment to its user's locked row (its input state loaded in ``inputs``);
    returns the outcome's name. A change the input set already holds changes nothing; one
    it did not is later than a highlight of known coverage (``covered_version``: the
    snapshot rule), else than one generated before the comment (the timestamp rule)."""
    if not inputs.apply(row, event):
        return UNCHANGED_INPUT
    if row.generated_at is None:
        reason = StaleReason.MISSING
    elif (
        event.type == "comment.deleted"
        or row.covered_version is not None
        or event.occurred_at > row.generated_at
    ):
        reason = COMMENT_REASONS[event.type]
    else:
        return ALREADY_INCLUDED
    mark = StaleMark.stale(reason, now, f"comment:{event.event_id}", unseen=1)
    outcome = mark_stale_row(sink, row, mark)
    result.stale_event_times.append(event.occurred_at)
    if outcome is StaleOutcome.REQUESTED:
        result.regen_requests[reason.value] += 1
        if reason is StaleReason.MISSING:
            return "missing_requested"
    return STALE_OUTCOMES[outcome]


async def resolve_or_park(
    session: AsyncSession, source: RawMessage, event: CommentEvent, now: datetime
) -> int | None:
    """The comment's user from the request map, or park the comment (None) with where it
    came from (``source``)."""
    resolved = await signal_records.resolve_users(session, {event.request_id})
    if event.request_id not in resolved:
        await signal_records.lock_request(session, event.request_id)
        resolved = await signal_records.resolve_users(session, {event.request_id})
    if event.request_id in resolved:
        return resolved[event.request_id]
    signal_records.park(session, source, event, now)
    await session.flush()  # the parked row must exist before the lock is released
    return None


# Besides a stale mark's columns, a comment moves the row's input snapshot
# (``worker.services.input_snapshots``).
INPUT_COLUMNS = {"input_version": "bigint", "input_fingerprint": "bigint"}
MARKED = sent_as_instants({k: v for k, v in WRITTEN.items() if k not in REQUESTED})
# A changed row's columns; those only a request changes go only with the rows that made one.
WRITE_COLUMNS = {"user_id": "bigint", **MARKED, **INPUT_COLUMNS}
ASKED_COLUMNS = {**WRITE_COLUMNS, **REQUESTED}


def _update(columns: dict[str, str], prefix: str) -> str:
    """Write ``columns`` of the rows in ``prefix``'s arrays (keyed by ``user_id``)."""
    return (
        "UPDATE user_profile_highlights AS h SET "
        + ", ".join(f"{name} = v.{name}" for name in columns if name != "user_id")
        + f" FROM {unnest_rows(columns, prefix)} WHERE h.user_id = v.user_id"
    )


# Two updates of disjoint rows, as two parts of the batch's one statement.
WRITE, WRITE_ASKED = _update(WRITE_COLUMNS, "h_"), _update(ASKED_COLUMNS, "q_")


def _rows_writes(
    touched: Collection[RowState], queued: list[OutboxEntry], now: datetime
) -> list[Write | None]:
    """PostgreSQL: write the changed rows back; the rows that made a request (``queued``:
    its key is the user id) with the ``REQUESTED`` columns, the others without."""
    marked, requested = list(touched), list[RowState]()
    if queued:  # else, the commonest, no mark made a request (queued on the row, or pending)
        asked = {int(entry.key) for entry in queued}
        marked = [row for row in touched if row.user_id not in asked]
        requested = [row for row in touched if row.user_id in asked]
    return [
        Write(WRITE, columns_of(WRITE_COLUMNS, marked, "h_", now)) if marked else None,
        Write(WRITE_ASKED, columns_of(ASKED_COLUMNS, requested, "q_", now)) if requested else None,
    ]


DELETED_COLUMNS = {"user_id": "bigint", "comment_id": "text"}
DELETED = (
    "INSERT INTO deleted_comments (user_id, comment_id, deleted_at) "
    f"SELECT v.user_id, v.comment_id, CAST(:d_now AS timestamptz) FROM "
    f"{unnest_rows(DELETED_COLUMNS, 'd_')} ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class _Deleted:
    user_id: int
    comment_id: str


def deleted_write(deleted: set[tuple[int, str]], now: datetime) -> Write | None:
    """PostgreSQL: record the batch's deleted comments (their quotes are withheld at once)."""
    if not deleted:
        return None
    items = [_Deleted(u, c) for u, c in sorted(deleted)]
    return Write(DELETED, {**columns_of(DELETED_COLUMNS, items, "d_"), "d_now": now})


async def record_deleted(
    session: AsyncSession, deleted: set[tuple[int, str]], now: datetime
) -> None:
    """The ORM paths' form of ``deleted_write``."""
    if deleted:
        await session.execute(
            dialect_insert(session)(DeletedCommentRow).on_conflict_do_nothing(
                index_elements=["user_id", "comment_id"]
            ),
            [{"user_id": u, "comment_id": c, "deleted_at": now} for u, c in sorted(deleted)],
        )


async def resolve_batch(session: AsyncSession, request_ids: set[str]) -> dict[str, int]:
    """The users of ``request_ids`` from the request map; the requests it does not know are
    locked (``signal_records.LOCK_REQUESTS``, all at once, in one order) and looked up
    again, so that the comments still unresolved can be parked under the lock (the
    park/map race of ``resolve_or_park``, closed for a whole batch in at most three
    statements whatever its size)."""
    resolved = await signal_records.resolve_users(session, request_ids)
    if unknown := request_ids - resolved.keys():
        await session.execute(
            signal_records.LOCK_REQUESTS, {"ids": literal("text", sorted(unknown))}
        )
        resolved.update(await signal_records.resolve_users(session, unknown))
    return resolved


async def apply_comment_batch(
    session: AsyncSession,
    events: list[tuple[RawMessage, CommentEvent]],
    now: datetime,
    result: BatchResult,
    record: Callable[[dict[str, list[str]]], Write | None],
    policy: RegenPolicy,
) -> dict[str, list[str]]:
    """Apply already-claimed comments (with the messages they came from: a parked one keeps
    its source) in order under ``policy``; returns event ids by outcome.

    The batch's writes (changed rows, its outbox row, Signal activity, and what ``record``
    makes of the outcomes) go to the database as one statement."""
    outcomes: dict[str, list[str]] = {}
    unknown = {e.request_id for _, e in events if e.user_id is None}
    resolved = await resolve_batch(session, unknown)
    targets: list[tuple[CommentEvent, int]] = []
    parked: list[tuple[RawMessage, CommentEvent]] = []
    for source, event in events:
        user_id = event.user_id or resolved.get(event.request_id)
        if user_id is None:
            parked.append((source, event))
            outcomes.setdefault("parked", []).append(event.event_id)
            continue
        targets.append((event, user_id))
    park = signal_records.park_write(parked, now)
    rows: dict[int, RowState] = {}
    inputs = InputSets()
    if targets:
        keys = [(user_id, event.comment_id) for event, user_id in targets]
        rows, inputs = await lock_with_inputs(session, keys, now)
    applied = await apply_locked(
        session, targets, rows, now, result, outcomes, record, policy, park, inputs
    )
    for outcome, ids in applied.items():
        result.outcomes[(InputStream.COMMENTS.value, outcome)] += len(ids)
    return applied


async def apply_locked(
    session: AsyncSession,
    targets: Sequence[tuple[Comment, int]],
    rows: dict[int, RowState],
    now: datetime,
    result: BatchResult,
    outcomes: dict[str, list[str]],
    record: Callable[[dict[str, list[str]]], Write | None],
    policy: RegenPolicy,
    also: Write | None = None,
    inputs: InputSets | None = None,
) -> dict[str, list[str]]:
    """Apply comments whose user is known and whose rows are created and locked (``rows``),
    in order, adding their outcomes to ``outcomes``; then write the changed rows, the outbox
    row, Signal activity and what ``record`` makes of ``outcomes`` as one statement. The
    comment batch locks the rows and reads their input states first (``lock_with_inputs``,
    given as ``inputs``); released parked comments come with their rows locked
    (``worker.services.mappings``' map-and-unpark statement) and their states are read here."""
    queued: list[OutboxEntry] = []
    sink = OutboxSink(queued.append, policy)  # the batch's one outbox row
    activity: dict[int, signal_records.ActivityDelta] = {}
    touched: dict[int, RowState] = {}
    deleted: set[tuple[int, str]] = set()
    if inputs is None:
        inputs = InputSets()
        await inputs.load(session, ((user_id, event.comment_id) for event, user_id in targets))
    for event, user_id in targets:
        activity.setdefault(user_id, signal_records.ActivityDelta()).add(event)
        if event.type == "comment.deleted":
            deleted.add((user_id, event.comment_id))
        outcome = apply_comment(sink, rows[user_id], event, now, result, inputs)
        if outcome != UNCHANGED_INPUT:  # already included: its input snapshot moved
            touched[user_id] = rows[user_id]
        outcomes.setdefault(outcome, []).append(event.event_id)
    activity_upsert, falling = signal_records.activity_write(activity, now)
    await write_together(
        session,
        [
            *_rows_writes(touched.values(), queued, now),
            insert_write(queued),
            activity_upsert,
            deleted_write(deleted, now),
            inputs.write(),
            record(outcomes),
            also,
        ],
    )
    await signal_records.record_activity(
        session, falling, now
    )  # rare: more deletions than comments
    return outcomes
