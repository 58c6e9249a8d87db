"""Documents describing one profile, shared by the CLI and the HTTP views."""

from __future__ import annotations

from typing import Any

from worker.domain import utcnow
from worker.models import SignalActivityRow
from worker.serving import serve, snapshot_stats
from worker.store import HighlightStore


async def profile_document(store: HighlightStore, user_id: int) -> dict[str, Any]:
    """Everything an operator wants about one user: stored row, served answer, activity."""
    highlight = await store.get(user_id)
    async with store.sessions() as session:
        activity = await session.get(SignalActivityRow, user_id)
    now = utcnow()
    return {
        "user_id": user_id,
        "highlight": highlight.model_dump(mode="json") if highlight else None,
        "served": serve(user_id, highlight, activity, now),
        "signal_activity": snapshot_stats(activity),
    }
