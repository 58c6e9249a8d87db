"""What state a highlight is in: the one home of "fresh", "stale", "expired".

Clients (``GET /profiles/{id}/highlight``), the panel, the CLI and the gauges all ask
``state_of``; the sweep asks ``expiry_due`` which rows to mark. The set-based SQL twins
(``worker.storage.freshness``) are tested against these functions on the same rows.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class FreshnessState(StrEnum):
    FRESH = "fresh"
    STALE = "stale"
    EXPIRED = "expired"
    OVERRIDDEN = "overridden"
    MISSING = "missing"


# What "stale" counts everywhere (the stale share, the oldest stale age): a highlight a
# client is told is stale or expired. An overridden row serves its override and a missing
# one has no highlight, whatever their ``is_stale`` says.
STALE_STATES = (FreshnessState.STALE.value, FreshnessState.EXPIRED.value)


def expiry_due(is_stale: bool, stale_after: datetime | None, now: datetime) -> bool:
    """A fresh row whose ``stale_after`` has come: the sweep marks it stale (``expired``)."""
    return not is_stale and stale_after is not None and stale_after <= now


def stale_since(stale_since: datetime | None, stale_after: datetime | None) -> datetime | None:
    """Since when a row in a stale state (``STALE_STATES``) has been stale: its mark, or for a
    row no sweep has marked yet, the ``stale_after`` it went past."""
    return stale_since or stale_after


def state_of(
    *,
    manual_override: bool,
    has_content: bool,
    is_stale: bool,
    stale_reason: str | None,
    stale_after: datetime | None,
    now: datetime,
) -> FreshnessState:
    """A row past ``stale_after`` is expired whether or not the sweep has marked it yet,
    so a client, the panel and the dashboard agree between two sweeps."""
    if manual_override:
        return FreshnessState.OVERRIDDEN
    if not has_content:
        return FreshnessState.MISSING
    if (stale_reason == "expired" and is_stale) or expiry_due(is_stale, stale_after, now):
        return FreshnessState.EXPIRED
    return FreshnessState.STALE if is_stale else FreshnessState.FRESH
