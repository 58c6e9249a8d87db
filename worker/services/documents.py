"""What one profile shows: the served document (a client's) and the profile document
(an operator's: ``wb signal-profile show``, the panel's glaze page and its JSON API).

One module, so the HTTP view, the CLI and the panel cannot disagree about what is "fresh":
``serve`` is the decision table of the README's serving section, pure over the stored row
and the recorded activity; the profile document embeds its answer beside the stored row.

Each document is read in one snapshot (``worker.storage.database.snapshot``): the
highlight, the recorded activity, the deleted comments among its quotes, its place in the
queue and its audit entries are what one moment held, so a comment batch committing between
two reads cannot give a client a "fresh" highlight with a quote already withheld.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.freshness import STALE_STATES, FreshnessState, stale_since, state_of
from worker.domain.snapshot import wire
from worker.domain.values import Highlight, quote_comment_id, utcnow, withhold
from worker.services.audit import audit_trail
from worker.services.checks import check_user_id
from worker.services.scheduler import queue_state
from worker.services.store import HighlightStore
from worker.storage.database import snapshot
from worker.storage.models import DeletedCommentRow, HighlightRow, SignalActivityRow


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


async def profile_document(
    store: HighlightStore,
    user_id: int,
    serve_stale_for: timedelta = timedelta(0),
    *,
    audit: int = 0,
) -> dict[str, Any]:
    """Everything an operator wants about one user: stored row, served answer, activity,
    its place in the regeneration queue under the store's policy, how long its published
    request has waited, and (the panel: ``audit`` > 0) its latest audit entries."""
    check_user_id(user_id)
    now = utcnow()
    async with snapshot(store.sessions) as session:
        row, highlight, activity, deleted = await load(session, user_id)
        stored = highlight.model_dump(mode="json") if highlight else None
        if stored is not None:  # as requests name them (16 hex digits)
            for name in ("input_fingerprint", "covered_fingerprint"):
                stored[name] = None if stored[name] is None else wire(stored[name])
        if stored is not None and deleted:  # the panel shows these: withheld there too
            shown = withhold(stored["quotes"], deleted)
            stored["withheld_quotes"] = len(stored["quotes"]) - len(shown)
            stored["quotes"] = shown
        requested = highlight.regen_requested_at if highlight else None
        doc: dict[str, Any] = {
            "user_id": user_id,
            "highlight": stored,
            "served": serve(user_id, highlight, activity, now, serve_stale_for, deleted),
            "signal_activity": snapshot_stats(activity),
            "regen_queue": await queue_state(session, row, now, store.policy) if row else None,
            "pending_regeneration_age_s": round((now - requested).total_seconds(), 1)
            if requested
            else None,
        }
        if audit:
            doc["audit"] = await audit_trail(session, user_id, audit)
    return doc
