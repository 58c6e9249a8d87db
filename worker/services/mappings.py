"""Request mappings (``signal.requests``), set-based on PostgreSQL: the parked comments of
a batch's requests released exactly once, in a fixed number of statements whatever the
batch's size.

After the claim: lock the batch's request ids (the advisory locks ``lock_request`` takes,
all at once, in one order), so that a comment parked concurrently is either committed
before our next statement reads (and we release it) or parks after our commit (and then
finds the mapping); save the mappings and delete-returning their parked comments in one
statement; then the released comments go the comment batch's way
(``comments.apply_resolved``: create and lock rows, then write everything together). A
request mapped twice in one batch with different users keeps the ORM path's meaning: its
parked comments go to the user its first mapping event gives, the later events are saved
after (one more statement, only in such a batch). SQLite keeps the ORM path
(``pipeline``); both call the same rules (``signal_records``'s newer-mapping rule is the
SQL twin of ``save_mapping``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.batch import BatchResult
from worker.domain.messages import CommentEvent, InputStream, RequestEvent
from worker.domain.scheduling import RegenPolicy
from worker.services import signal_records as signal
from worker.services.comments import apply_resolved
from worker.storage import dedup
from worker.storage.pgarray import literal


async def apply_mapping_batch(
    session: AsyncSession,
    events: list[RequestEvent],
    now: datetime,
    result: BatchResult,
    policy: RegenPolicy,
) -> dict[str, list[str]]:
    """Apply already-claimed mappings in order; returns comment outcomes of the released
    comments (the mappings' own outcome is ``mapped``; their stale marks follow
    ``policy``)."""
    if not events:
        return {}
    first: dict[str, RequestEvent] = {}
    later: list[RequestEvent] = []
    for event in events:
        if event.request_id in first:
            later.append(event)
        else:
            first[event.request_id] = event
    await session.execute(signal.LOCK_REQUESTS, {"ids": literal("text", list(first))})
    found = await session.execute(
        signal.MAP_AND_UNPARK, signal.mapping_params(list(first.values()), now)
    )
    order = {request_id: i for i, request_id in enumerate(first)}
    released = sorted(found.all(), key=lambda r: (order[r[0]], r[3], r[4]))
    if later:  # rare: the request mapped again in this batch (newest wins, ties: first)
        await session.execute(signal.UPSERT_MAPPINGS, signal.mapping_params(_fold(later), now))
    targets: list[tuple[CommentEvent, int]] = [
        (signal.parked_event(payload), user_id) for _, user_id, payload, _, _ in released
    ]
    mapped = {"mapped": [e.event_id for e in events]}
    outcomes = await apply_resolved(
        session,
        targets,
        now,
        result,
        {},
        lambda _: dedup.outcomes_write(InputStream.REQUESTS, mapped),
        policy,
    )
    comments = InputStream.COMMENTS.value
    for outcome, ids in outcomes.items():
        result.outcomes[(comments, outcome)] += len(ids)
    if targets:
        result.outcomes[(comments, "unparked")] += len(targets)
    result.outcomes[(InputStream.REQUESTS.value, "mapped")] += len(events)
    return outcomes


def _fold(events: list[RequestEvent]) -> list[RequestEvent]:
    """One event per request: the first of its newest (what applying them in order with
    the newer-mapping rule leaves)."""
    newest: dict[str, RequestEvent] = {}
    for event in events:
        kept = newest.get(event.request_id)
        if kept is None or event.occurred_at > kept.occurred_at:
            newest[event.request_id] = event
    return list(newest.values())
