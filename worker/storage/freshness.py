"""The freshness rules of ``worker.domain.freshness`` as SQL, for set-based statements.

Twins of ``expiry_due``, ``state_of`` (and ``state_filter``: the rows in one state) and
``stale_since``; a test runs both over the same rows on SQLite and PostgreSQL.
``EXPIRY_DUE_SQL`` is the same condition as text, for the sweep's hand-written PostgreSQL
statement (``:now``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, false, func, literal, or_, true
from sqlalchemy.sql import ColumnElement

from worker.domain.freshness import FreshnessState
from worker.storage.models import HighlightRow as H

EXPIRY_DUE_SQL = "NOT is_stale AND stale_after IS NOT NULL AND stale_after <= :now"


def expiry_due_clause(now: datetime) -> ColumnElement[bool]:
    return and_(H.is_stale == false(), H.stale_after.is_not(None), H.stale_after <= now)


def state_column(now: datetime) -> ColumnElement[str]:
    expired = or_(and_(H.is_stale == true(), H.stale_reason == "expired"), expiry_due_clause(now))
    return case(
        (H.manual_override == true(), literal(FreshnessState.OVERRIDDEN.value)),
        (H.generated_at.is_(None), literal(FreshnessState.MISSING.value)),
        (expired, literal(FreshnessState.EXPIRED.value)),
        (H.is_stale == true(), literal(FreshnessState.STALE.value)),
        else_=literal(FreshnessState.FRESH.value),
    )


def stale_since_column() -> ColumnElement[datetime]:
    return func.coalesce(H.stale_since, H.stale_after)


def _implied(state: FreshnessState, now: datetime) -> ColumnElement[bool]:
    """A condition every row in ``state`` meets, on indexed columns where there are any:
    what lets a filter by state use an index (``state_column`` alone is a CASE)."""
    if state is FreshnessState.OVERRIDDEN:
        return H.manual_override == true()
    if state is FreshnessState.MISSING:
        return H.generated_at.is_(None)
    if state is FreshnessState.EXPIRED:
        return or_(H.is_stale == true(), and_(H.stale_after.is_not(None), H.stale_after <= now))
    return H.is_stale == (true() if state is FreshnessState.STALE else false())


def state_filter(state: FreshnessState, now: datetime) -> ColumnElement[bool]:
    """Rows in ``state`` at ``now``: ``state_column`` decides (the one rule), the implied
    condition only narrows what the database reads."""
    return and_(_implied(state, now), state_column(now) == state.value)
