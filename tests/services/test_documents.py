"""The serving decision table (README: what clients read)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers.clock import T0
from tests.helpers.factories import result
from worker.services.documents import serve
from worker.services.store import HighlightStore

LATER = T0 + timedelta(hours=1)


async def test_missing_user_shows_snapshot_stats() -> None:
    doc = serve(5, None, None, LATER)
    assert doc == {
        "user_id": 5,
        "status": "missing",
        "display": "snapshot_stats",
        "age_s": None,
        "stale_reason": None,
        "generation": None,
        "snapshot_stats": {"comment_count": 0, "latest_comment_at": None},
    }


async def test_fresh_shows_the_highlight(store: HighlightStore) -> None:
    h = await store.upsert_auto(result(1), "s")
    doc = serve(1, h, None, LATER)
    assert doc["status"] == "fresh"
    assert doc["display"] == "highlight"
    assert doc["text"] == h.bio_text
    assert doc["proof_points"] == h.proof_points
    assert doc["age_s"] == 3600.0
    assert "snapshot_stats" not in doc


async def test_override_is_always_displayed(store: HighlightStore) -> None:
    await store.upsert_auto(result(1), "s")
    await store.mark_stale(1, "new_comment")
    h = await store.set_manual_override(1, "Curated", actor="ops")
    doc = serve(1, h, None, LATER)
    assert (doc["status"], doc["display"], doc["text"]) == ("overridden", "highlight", "Curated")
    assert doc["quotes"] == []


@pytest.mark.parametrize(
    ("grace", "display"),
    [
        (timedelta(0), "snapshot_stats"),
        (timedelta(minutes=30), "snapshot_stats"),
        (timedelta(hours=2), "highlight"),
    ],
)
async def test_stale_falls_back_to_stats_unless_within_grace(
    store: HighlightStore, grace: timedelta, display: str
) -> None:
    await store.upsert_auto(result(1), "s")
    h, _ = await store.mark_stale(1, "new_comment")  # stale since T0
    doc = serve(1, h, None, LATER, serve_stale_for=grace)
    assert doc["status"] == "stale"
    assert doc["display"] == display
    assert doc["stale_reason"] == "new_comment"
    assert "snapshot_stats" in doc
    assert ("text" in doc) is (display == "highlight")


async def test_past_stale_after_is_expired_even_before_the_sweep(store: HighlightStore) -> None:
    h = await store.upsert_auto(result(1, stale_after=T0 + timedelta(minutes=5)), "s")
    doc = serve(1, h, None, LATER)
    assert doc["status"] == "expired"
    assert doc["display"] == "snapshot_stats"
