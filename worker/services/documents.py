"""Documents describing one profile, shared by the CLI and the HTTP views.

Each is read in one snapshot (``worker.storage.database.snapshot``): the highlight, the
recorded activity, the deleted comments among its quotes and its place in the queue are
what one moment held, so a comment batch committing between two reads cannot give a
client a "fresh" highlight with a quote already withheld.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.snapshot import wire
from worker.domain.values import Highlight, quote_comment_id, utcnow, withhold
from worker.services.scheduler import queue_state
from worker.services.serving import serve, snapshot_stats
from worker.services.store import HighlightStore, check_user_id
from worker.storage.database import snapshot
from worker.storage.models import DeletedCommentRow, HighlightRow, SignalActivityRow


async def load(
    session: AsyncSession, user_id: int
) -> tuple[HighlightRow | None, Highlight | None, SignalActivityRow | None, frozenset[str]]:
    """The stored row, its highlight, recorded activity, and which of its quotes' comments
    were deleted, read in ``session``'s transaction (one snapshot: ``snapshot``)."""
    row = await session.get(HighlightRow, user_id)
    highlight = Highlight.from_row(row) if row is not None else None
    activity = await session.get(SignalActivityRow, user_id)
    deleted = await deleted_among(session, user_id, highlight)
    return row, highlight, activity, deleted


async def deleted_among(
    session: AsyncSession, user_id: int, highlight: Highlight | None
) -> frozenset[str]:
    """The deleted comments among those ``highlight``'s quotes are attributed to."""
    cited = {c for q in (highlight.quotes if highlight else []) if (c := quote_comment_id(q))}
    if not cited:
        return frozenset()
    D = DeletedCommentRow
    found = await session.scalars(
        select(D.comment_id).where(D.user_id == user_id, D.comment_id.in_(sorted(cited)))
    )
    return frozenset(found.all())


async def served_document(
    store: HighlightStore, user_id: int, serve_stale_for: timedelta = timedelta(0)
) -> dict[str, Any]:
    """What a client is shown (``GET /profiles/{id}/highlight``)."""
    check_user_id(user_id)
    async with snapshot(store.sessions) as session:
        _, highlight, activity, deleted = await load(session, user_id)
    return serve(user_id, highlight, activity, utcnow(), serve_stale_for, deleted)


async def profile_document_in(
    session: AsyncSession,
    store: HighlightStore,
    user_id: int,
    now: datetime,
    serve_stale_for: timedelta = timedelta(0),
) -> dict[str, Any]:
    """``profile_document`` read in ``session``'s snapshot (the panel adds to it there)."""
    row, highlight, activity, deleted = await load(session, user_id)
    stored = highlight.model_dump(mode="json") if highlight else None
    if stored is not None:  # as requests name them (16 hex digits)
        for name in ("input_fingerprint", "covered_fingerprint"):
            stored[name] = None if stored[name] is None else wire(stored[name])
    if stored is not None and deleted:  # the panel shows these: withheld there too
        shown = withhold(stored["quotes"], deleted)
        stored["withheld_quotes"] = len(stored["quotes"]) - len(shown)
        stored["quotes"] = shown
    queue = await queue_state(session, row, now, store.policy) if row else None
    return {
        "user_id": user_id,
        "highlight": stored,
        "served": serve(user_id, highlight, activity, now, serve_stale_for, deleted),
        "signal_activity": snapshot_stats(activity),
        "regen_queue": queue,
    }


async def profile_document(
    store: HighlightStore, user_id: int, serve_stale_for: timedelta = timedelta(0)
) -> dict[str, Any]:
    """Everything an operator wants about one user: stored row, served answer, activity,
    and its place in the regeneration queue under the store's policy."""
    check_user_id(user_id)
    async with snapshot(store.sessions) as session:
        return await profile_document_in(session, store, user_id, utcnow(), serve_stale_for)
