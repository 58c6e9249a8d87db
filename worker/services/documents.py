"""Documents describing one profile, shared by the CLI and the HTTP views."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from worker.domain.values import Highlight, utcnow
from worker.services.serving import serve, snapshot_stats
from worker.services.store import HighlightStore
from worker.storage.models import SignalActivityRow


async def load(
    store: HighlightStore, user_id: int
) -> tuple[Highlight | None, SignalActivityRow | None]:
    highlight = await store.get(user_id)
    async with store.sessions() as session:
        activity = await session.get(SignalActivityRow, user_id)
    return highlight, activity


async def served_document(
    store: HighlightStore, user_id: int, serve_stale_for: timedelta = timedelta(0)
) -> dict[str, Any]:
    """What a client is shown (``GET /profiles/{id}/highlight``)."""
    highlight, activity = await load(store, user_id)
    return serve(user_id, highlight, activity, utcnow(), serve_stale_for)


async def profile_document(
    store: HighlightStore, user_id: int, serve_stale_for: timedelta = timedelta(0)
) -> dict[str, Any]:
    """Everything an operator wants about one user: stored row, served answer, activity."""
    highlight, activity = await load(store, user_id)
    return {
        "user_id": user_id,
        "highlight": highlight.model_dump(mode="json") if highlight else None,
        "served": serve(user_id, highlight, activity, utcnow(), serve_stale_for),
        "signal_activity": snapshot_stats(activity),
    }
