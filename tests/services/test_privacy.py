"""Quotes attributed to a deleted comment are withheld at once, on every database path:
before any regeneration and while a stale highlight is still displayed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.factories import C, G, comment_doc, generated, raw
from worker.services.documents import profile_document, served_document
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore

QUOTES = [
    "Always explains the why.",
    {"text": "Fixed my build at 2am.", "comment_id": "c-gone"},
    {"text": "Reviews within the hour.", "comment_id": "c-kept"},
]
GRACE = timedelta(hours=1)


async def test_a_deleted_comments_quote_is_withheld_at_once(
    sessions: async_sessionmaker[AsyncSession], store: HighlightStore
) -> None:
    pipeline = Pipeline(sessions)  # served documents are judged by the real clock
    now = datetime.now(UTC)
    await pipeline.process(G, [generated("g1", 1, now - timedelta(hours=1), "s1", quotes=QUOTES)])
    before = await served_document(store, 1, GRACE)
    assert before["quotes"] == QUOTES and before["status"] == "fresh"
    deletion = {**comment_doc("del-1", 1, now, kind="deleted"), "comment_id": "c-gone"}
    await pipeline.process(C, [raw(deletion)])
    served = await served_document(store, 1, GRACE)
    assert served["status"] == "stale" and served["display"] == "highlight"  # still shown
    assert served["quotes"] == [QUOTES[0], QUOTES[2]]  # ... without the deleted one's quote
    hidden = await served_document(store, 1)  # not displayed at all without the grace
    assert hidden["display"] == "snapshot_stats" and "quotes" not in hidden
    operator = await profile_document(store, 1, GRACE)
    assert operator["highlight"]["quotes"] == [QUOTES[0], QUOTES[2]]
    assert operator["highlight"]["withheld_quotes"] == 1
    await pipeline.process(C, [raw({**deletion, "event_id": "del-2"})])  # deleted twice: fine
    assert (await served_document(store, 1, GRACE))["quotes"] == served["quotes"]


async def test_an_attributed_quote_with_an_integer_comment_id_round_trips(
    sessions: async_sessionmaker[AsyncSession], store: HighlightStore
) -> None:
    pipeline = Pipeline(sessions)
    now = datetime.now(UTC)
    quotes = [{"text": "Kind.", "comment_id": 981}]
    await pipeline.process(G, [generated("g2", 2, now - timedelta(hours=1), "s2", quotes=quotes)])
    assert (await served_document(store, 2))["quotes"] == [{"text": "Kind.", "comment_id": "981"}]
    deletion = {**comment_doc("del-3", 2, now, kind="deleted"), "comment_id": 981}
    await pipeline.process(C, [raw(deletion)])
    assert (await served_document(store, 2, GRACE))["quotes"] == []
