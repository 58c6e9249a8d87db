"""Documents describing one profile, shared by the CLI and the HTTP views."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.values import Highlight, quote_comment_id, utcnow, withhold
from worker.services.scheduler import queue_state
from worker.services.serving import serve, snapshot_stats
from worker.services.store import HighlightStore
from worker.storage.models import DeletedCommentRow, HighlightRow, SignalActivityRow


async def load(
    store: HighlightStore, user_id: int
) -> tuple[Highlight | None, SignalActivityRow | None, frozenset[str]]:
    """The highlight, recorded activity, and which of its quotes' comments were deleted."""
    highlight = await store.get(user_id)
    async with store.sessions() as session:
        activity = await session.get(SignalActivityRow, user_id)
        deleted = await deleted_among(session, user_id, highlight)
    return highlight, activity, deleted


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
    highlight, activity, deleted = await load(store, user_id)
    return serve(user_id, highlight, activity, utcnow(), serve_stale_for, deleted)


async def profile_document(
    store: HighlightStore, user_id: int, serve_stale_for: timedelta = timedelta(0)
) -> dict[str, Any]:
    """Everything an operator wants about one user: stored row, served answer, activity,
    and its place in the regeneration queue under the store's policy."""
    highlight, activity, deleted = await load(store, user_id)
    stored = highlight.model_dump(mode="json") if highlight else None
    if stored is not None and deleted:  # the panel shows these: withheld there too
        shown = withhold(stored["quotes"], deleted)
        stored["withheld_quotes"] = len(stored["quotes"]) - len(shown)
        stored["quotes"] = shown
    now = utcnow()
    async with store.sessions() as session:
        row = await session.get(HighlightRow, user_id)
        queue = await queue_state(session, row, now, store.policy) if row else None
    return {
        "user_id": user_id,
        "highlight": stored,
        "served": serve(user_id, highlight, activity, now, serve_stale_for, deleted),
        "signal_activity": snapshot_stats(activity),
        "regen_queue": queue,
    }
