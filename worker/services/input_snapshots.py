"""The live input sets as stored (``comment_inputs``), and what comments do to them.

A transaction that applies comments reads the stored state of the comments it names,
changes it in order with ``worker.domain.snapshot.step`` (moving each user's
``input_version`` and ``input_fingerprint`` on the locked row, the same object the stale
mark then changes), and writes the changed comments back with the rest of its writes:
the set-based path as one more ``Write`` of its one statement, the ORM path as one upsert.
Every writer holds the user's row lock (``lock_with_inputs`` / ``lock_rows``) first, so there
is one writer per user and the read-change-write needs no lock of its own. Both paths
call ``InputSets.apply``: the differential test compares what they store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.snapshot import CommentInput, signed, step
from worker.domain.wire import Comment
from worker.services.locking import MARK_STATE, created_and_locked, lock_existing
from worker.services.outbox import Requestable
from worker.storage.database import dialect_insert, is_postgresql
from worker.storage.driver_rows import driver_rows
from worker.storage.models import CommentInputRow, RowState
from worker.storage.pgarray import INSTANT, Write, array, arrays_of, literal, unnest_rows

Key = tuple[int, str]  # (user_id, comment_id)

COLUMNS = {
    "user_id": "bigint",
    "comment_id": "text",
    "version_at": INSTANT,
    "version_event": "text",
    "deleted": "boolean",
}
# The stored state of a batch's comments, the keys as two arrays: one probe of the primary
# key per key, whatever the planner knows of the table (``comment_input_states``, migration
# 0015: a plain join is planned from the table's statistics, and read the whole table
# once a batch while they were an empty table's: docs/performance.md, issue 28).
_FOUND = (
    "FROM comment_input_states("
    f"{array('u', 'bigint')}, {array('c', 'text')}) AS c(user_id, comment_id, at, event, gone)"
)
FIND = text(f"SELECT c.user_id, c.comment_id, c.at, c.event, c.gone {_FOUND}")
# PostgreSQL, a comment batch's first statement after the claim: create the missing rows
# and lock all (``locking``; the columns ``MARK_STATE``), each with the input_version its
# snapshot saw (``seen``) and the batch's input states of its user as the snapshot saw
# them (arrays; NULL: none). The snapshot predates the locks the statement waits for;
# every change of a user's input states moves the row's input_version in the same
# transaction (under the lock), so a locked row whose input_version is not the one seen
# had its states changed meanwhile, and only those users' are read again
# (``lock_with_inputs``).
LOCK_AND_FIND = text(
    f"{created_and_locked(MARK_STATE)}, found AS ("
    "SELECT c.user_id, array_agg(c.comment_id) AS cids, array_agg(c.at) AS ats, "
    "array_agg(c.event) AS events, array_agg(c.gone) AS deleted "
    f"{_FOUND} GROUP BY c.user_id) "
    "SELECT r.*, s.input_version AS seen, f.cids, f.ats, f.events, f.deleted "
    "FROM (SELECT * FROM created UNION ALL SELECT * FROM locked) r "
    "LEFT JOIN user_profile_highlights s ON s.user_id = r.user_id "
    "LEFT JOIN found f ON f.user_id = r.user_id"
)
_STATE_WIDTH = len(MARK_STATE.split(", "))  # the RowState columns it reads
UPSERT = (
    f"INSERT INTO comment_inputs ({', '.join(COLUMNS)}) "
    f"SELECT * FROM {unnest_rows(COLUMNS, 'i_')} "
    "ON CONFLICT (user_id, comment_id) DO UPDATE SET version_at = excluded.version_at, "
    "version_event = excluded.version_event, deleted = excluded.deleted"
)


@dataclass
class InputSets:
    """The stored state of the comments a transaction applies (``known``) and those it
    changed (``changed``, to write back)."""

    known: dict[Key, CommentInput | None] = field(default_factory=dict)
    changed: dict[Key, CommentInput] = field(default_factory=dict)

    async def load(self, session: AsyncSession, keys: Iterable[Key]) -> None:
        """Read the state of ``keys`` not read yet (a comment never seen has none). In no
        order: the read takes no locks (the user's row lock is held). On PostgreSQL through
        asyncpg itself (``driver_rows``): a comment batch reads here under its rows' locks
        whenever another worker changed the same users' states meanwhile, as two workers
        on the same users do all the time, and SQLAlchemy's execution added its cost to
        every such batch while the other worker waited for the locks."""
        missing = [key for key in dict.fromkeys(keys) if key not in self.known]
        if not missing:
            return
        self.known.update(dict.fromkeys(missing))
        found: Iterable[Sequence[Any]]
        if is_postgresql(session):
            users, comments = zip(*missing, strict=True)
            params = {"u": literal("bigint", users), "c": literal("text", comments)}
            found = await driver_rows(session, FIND, params)
        else:
            C = CommentInputRow
            found = await session.execute(
                select(C.user_id, C.comment_id, C.version_at, C.version_event, C.deleted).where(
                    tuple_(C.user_id, C.comment_id).in_(missing)
                )
            )
        for user_id, comment_id, at, event, deleted in found:
            self.known[(user_id, comment_id)] = CommentInput(at, event, deleted)

    def apply(self, row: Requestable, event: Comment) -> bool:
        """Apply a comment about ``row``'s user (its state loaded); False when it changes
        nothing (``worker.domain.snapshot.step``), else the row's snapshot moves on."""
        key = (row.user_id, event.comment_id)
        change = step(
            self.known[key], event.type, event.occurred_at, event.event_id, event.comment_id
        )
        if change is None:
            return False
        state, delta = change
        self.known[key] = self.changed[key] = state
        row.input_version += 1
        row.input_fingerprint = signed(row.input_fingerprint + delta)
        return True

    def _columns(self) -> dict[str, Sequence[object]]:
        """The changed comments, column by column, in the order they first changed (each key
        once: the upsert needs no order, the user's row lock is held)."""
        users, comments = zip(*self.changed, strict=True)
        at, event, deleted = zip(*self.changed.values(), strict=True)
        return dict(zip(COLUMNS, (users, comments, at, event, deleted), strict=True))

    def write(self) -> Write | None:
        """PostgreSQL: the changed comments as one upsert from arrays (``write_together``)."""
        if not self.changed:
            return None
        columns = self._columns()
        return Write(UPSERT, arrays_of(COLUMNS, columns, "i_"))

    async def save(self, session: AsyncSession) -> None:
        """The ORM paths' form of ``write``: one upsert, executemany."""
        if self.changed:
            columns = self._columns()
            rows = [
                dict(zip(columns, values, strict=True))
                for values in zip(*columns.values(), strict=True)
            ]
            insert = dialect_insert(session)(CommentInputRow)
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=["user_id", "comment_id"],
                    set_={
                        name: insert.excluded[name]
                        for name in ("version_at", "version_event", "deleted")
                    },
                ),
                rows,
            )
            self.changed.clear()


async def lock_with_inputs(
    session: AsyncSession, keys: list[Key], now: datetime
) -> tuple[dict[int, RowState], InputSets]:
    """PostgreSQL: create the missing rows of the keys' users and lock them all
    (``locking.lock_states``) and load the keys' input states, in one statement
    (``LOCK_AND_FIND``) but for the users whose states changed since its snapshot or whose
    rows it found neither created nor locked (another transaction's since): theirs are
    locked and read after it, as a second and third statement (rare: concurrent writers
    of one user)."""
    unique = list(dict.fromkeys(keys))
    user_ids = {u for u, _ in unique}
    users, comments = zip(*unique, strict=True)
    params = {
        "ids": literal("bigint", sorted(user_ids)),
        "now": now,
        "u": literal("bigint", users),
        "c": literal("text", comments),
    }
    inputs = InputSets(known=dict.fromkeys(unique))
    states: dict[int, RowState] = {}
    moved: set[int] = set()
    for r in await driver_rows(session, LOCK_AND_FIND, params):
        state = states[r[0]] = RowState(*r[:_STATE_WIDTH])
        seen, cids, ats, events, deleted = r[_STATE_WIDTH:]
        if seen is not None and seen != state.input_version:
            moved.add(state.user_id)
        elif cids is not None:
            for cid, at, event, gone in zip(cids, ats, events, deleted, strict=True):
                inputs.known[(state.user_id, cid)] = CommentInput(at, event, gone)
    if late := user_ids - states.keys():
        states.update(await lock_existing(session, late))
    if again := [key for key in unique if key[0] in moved or key[0] in late]:
        for stale in again:
            del inputs.known[stale]
        await inputs.load(session, again)
    return states, inputs
