"""What a client is shown for a user: the decision table of the README's serving section.

Pure functions over the stored row and recorded activity, so the HTTP view, the CLI and
the admin panel can't disagree about what is "fresh".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from worker.domain.freshness import STALE_STATES, FreshnessState, stale_since, state_of
from worker.domain.values import Highlight, withhold
from worker.storage.models import SignalActivityRow


def status_of(h: Highlight | None, now: datetime) -> str:
    if h is None:
        return FreshnessState.MISSING.value
    return state_of(
        manual_override=h.manual_override,
        has_content=h.has_content,
        is_stale=h.is_stale,
        stale_reason=h.stale_reason,
        stale_after=h.stale_after,
        now=now,
    ).value


def snapshot_stats(activity: SignalActivityRow | None) -> dict[str, Any]:
    return {
        "comment_count": activity.comment_count if activity else 0,
        "latest_comment_at": activity.last_comment_at.isoformat()
        if activity and activity.last_comment_at
        else None,
    }


def serve(
    user_id: int,
    h: Highlight | None,
    activity: SignalActivityRow | None,
    now: datetime,
    serve_stale_for: timedelta = timedelta(0),
    deleted_comments: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The client document: status, what to display, and the fallback stats when needed.
    Quotes attributed to a comment in ``deleted_comments`` are withheld."""
    status = status_of(h, now)
    doc: dict[str, Any] = {"user_id": user_id, "status": status}
    since = stale_since(h.stale_since, h.stale_after) if h is not None else None
    within_grace = (
        status in STALE_STATES
        and since is not None
        and now - since <= serve_stale_for
        and serve_stale_for > timedelta(0)
    )
    show_highlight = status in ("fresh", "overridden") or within_grace
    doc["display"] = "highlight" if show_highlight else "snapshot_stats"
    if h is not None and show_highlight:
        if status == "overridden":
            doc.update(text=h.override_text, proof_points=[], quotes=[])
        else:
            quotes = withhold(h.quotes, deleted_comments)
            doc.update(text=h.bio_text, proof_points=h.proof_points, quotes=quotes)
    reference = h.generated_at if h is not None else None
    # Never negative: ``generated_at`` is another machine's clock (bounded on receipt by
    # ``domain.clock_skew``, but a row may predate that, or the reader's clock be behind).
    age = max(0.0, (now - reference).total_seconds()) if reference else None
    doc["age_s"] = round(age, 3) if age is not None else None
    doc["stale_reason"] = h.stale_reason if h is not None else None
    doc["generation"] = h.generation if h is not None else None
    if status in ("missing", "stale", "expired"):
        doc["snapshot_stats"] = snapshot_stats(activity)
    return doc
