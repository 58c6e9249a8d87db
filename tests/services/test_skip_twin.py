"""One rule, two homes held together: the rows the scheduler's skip query finds
(``scheduler.skippable``, SQL, indexed) are exactly the due rows ``skip_if_unchanged``
(Python, ``worker.domain.snapshot.unchanged``) would skip, on SQLite and PostgreSQL, over
every combination of coverage, content, expiry and queue state, boundaries included."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0
from worker.domain.scheduling import RegenPolicy
from worker.services import scheduler
from worker.services.staleness import skip_if_unchanged
from worker.storage.models import HighlightRow

NOW = T0
POLICY = RegenPolicy(settle=timedelta(seconds=30), max_wait=timedelta(minutes=5))
S = timedelta(seconds=1)
# (priority, first change, last change) of a queued request; None: nothing queued.
QUEUES: list[tuple[int, datetime, datetime] | None] = [
    None,
    (2, NOW - 60 * S, NOW - 10 * S),  # still settling
    (2, NOW - 60 * S, NOW - 30 * S),  # settled this instant
    (2, NOW - 300 * S, NOW - S),  # waited max_wait this instant
    (4, NOW, NOW),  # does not settle: due at its first change
    (4, NOW + S, NOW + S),  # not yet
]
COVERED = ("unknown", "same", "other")
CONTENT = (True, False)
EXPIRY = (None, NOW - S, NOW, NOW + S)


def _row(
    user: int,
    queue: tuple[int, datetime, datetime] | None,
    covered: str,
    content: bool,
    stale_after: datetime | None,
) -> HighlightRow:
    fingerprint = user * 7919 - 2**40
    row = HighlightRow(
        user_id=user,
        created_at=NOW - timedelta(days=2),
        updated_at=NOW - timedelta(days=1),
        generated_at=NOW - timedelta(days=1) if content else None,
        stale_after=stale_after,
        is_stale=queue is not None,
        input_version=3,
        input_fingerprint=fingerprint,
        covered_fingerprint={"unknown": None, "same": fingerprint, "other": fingerprint + 1}[
            covered
        ],
    )
    if queue is not None:
        row.regen_priority, row.regen_first_change_at, row.regen_last_change_at = queue
        row.regen_queued_at = queue[1]
        row.regen_queued_reason = "new_comment"
    return row


async def test_the_skip_query_finds_exactly_the_rows_the_python_rule_skips(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    grid = itertools.product(QUEUES, COVERED, CONTENT, EXPIRY)
    async with sessions.begin() as session:
        session.add_all(_row(user, *combo) for user, combo in enumerate(grid, start=1))
    async with sessions() as session:
        found = {row.user_id for row in (await session.scalars(scheduler.skippable(NOW, POLICY)))}
        rows = (await session.scalars(select(HighlightRow))).all()
        due = [r for r in rows if r.regen_queued_at and scheduler.queued_due_at(r, POLICY) <= NOW]
        judged = {row.user_id for row in due if skip_if_unchanged(row, NOW)}
        await session.rollback()
    # Each due queue state (three) with a covered, present, unexpired highlight (two expiries).
    assert len(judged) == 3 * 2
    assert found == judged
