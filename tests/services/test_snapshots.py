"""Every document a client or the panel gets is read in one snapshot: a commit between two
of its reads changes none of it (both databases).

The test commits a change between two reads of a document, deterministically: the
document's sessions count their reads, and before the one the test names they commit the
change, unless the database lets nothing commit then (SQLite while the document's
transaction holds it: then nothing can come between the reads, which is the point too).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.helpers.clock import FakeClock
from tests.helpers.factories import C, comment_doc, raw, result
from worker.services import report
from worker.services.documents import profile_document, served_document
from worker.services.overview import OverviewService
from worker.services.pipeline import Pipeline
from worker.services.profile_list import ProfileListService, ProfileQuery
from worker.services.store import HighlightStore
from worker.storage.database import is_postgresql, snapshot

QUOTES = [
    "Always explains the why.",
    {"text": "Fixed my build at 2am.", "comment_id": "c-gone"},
]
GRACE = timedelta(hours=1)  # a stale highlight is still displayed: its quotes are shown


@dataclass
class Between:
    """Commits ``change`` before the read numbered ``before`` (1 is the first) of whatever
    sessions the interleaved factory makes, once."""

    change: Callable[[], Awaitable[object]]
    before: int
    reads: int = 0
    committed: bool = False
    blocked: bool = False  # SQLite: the document's transaction held the database

    async def read(self, session: AsyncSession) -> None:
        self.reads += 1
        if self.reads != self.before:
            return
        if not is_postgresql(session) and _sqlite_locked(session):
            self.blocked = True
            return
        await self.change()
        self.committed = True

    async def finish(self) -> None:
        """Commit the change now if the database held it off (SQLite)."""
        if self.blocked:
            await self.change()


def _sqlite_locked(session: AsyncSession) -> bool:
    """Whether a writer would have to wait now (without waiting: a busy timeout of 0)."""
    path = session.get_bind().engine.url.database
    assert path
    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return True
    else:
        con.execute("ROLLBACK")
        return False
    finally:
        con.close()


class Interleaved(AsyncSession):
    """Counts its reads on the factory's ``Between`` (``scalars`` goes through ``execute``)."""

    async def _read(self) -> None:
        between: Between = self.info["between"]
        await between.read(self)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await self._read()
        return await super().execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        await self._read()
        return await super().scalar(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        await self._read()
        return await super().get(*args, **kwargs)


def interleaved(engine: AsyncEngine, between: Between) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        engine, class_=Interleaved, expire_on_commit=False, info={"between": between}
    )


def committed_or_held(between: Between) -> None:
    """The change came between the reads (PostgreSQL: reads never block a writer), or could
    not (SQLite holds the database for the document's transaction)."""
    assert between.committed != between.blocked


Reader = Callable[[async_sessionmaker[AsyncSession], int], Awaitable[dict[str, Any]]]
READERS: list[Reader] = [
    lambda s, user: served_document(HighlightStore(s), user, GRACE),  # a client
    lambda s, user: profile_document(HighlightStore(s), user, GRACE),  # wb signal-profile show
    lambda s, user: profile_document(HighlightStore(s), user, GRACE, audit=20),  # the panel
]


@pytest.mark.parametrize("read", READERS, ids=["client", "cli", "panel"])
async def test_a_deletion_between_the_reads_is_in_none_or_all_of_the_answer(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], read: Reader
) -> None:
    """The fresh-clone failure: a comment batch deleting a quote's comment committed
    between the highlight's read and the deleted comments', and a client was told
    "fresh" with the quote already withheld."""
    pipeline = Pipeline(sessions)  # served documents are judged by the real clock
    now = datetime.now(UTC)
    await HighlightStore(sessions).upsert_auto(
        result(1, generated_at=now - timedelta(hours=1), quotes=QUOTES), "s1"
    )
    deletion = {**comment_doc("del-1", 1, now, kind="deleted"), "comment_id": "c-gone"}
    between = Between(lambda: pipeline.process(C, [raw(deletion)]), before=2)
    doc = await read(interleaved(engine, between), 1)
    committed_or_held(between)
    if "served" in doc:  # the operator's documents: the stored row and the served answer
        assert doc["highlight"]["quotes"] == doc["served"]["quotes"]
        doc = doc["served"]
    assert (doc["status"], doc["quotes"]) == ("fresh", QUOTES)  # all of the moment before
    await between.finish()
    served = await served_document(HighlightStore(sessions), 1, GRACE)
    assert (served["status"], served["quotes"]) == ("stale", QUOTES[:1])  # all of the after


async def test_the_overview_is_of_one_moment(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    store: HighlightStore,
    clock: FakeClock,
) -> None:
    """A stale mark between the counts and the rest: the counts said no row was stale while
    the pending requests and the oldest stale list already had it."""
    for user in (1, 2, 3):
        await store.upsert_auto(result(user, generated_at=clock.now - timedelta(hours=1)), "s")
    clock.advance(timedelta(minutes=5))
    before = await OverviewService(sessions).overview(clock.now)
    between = Between(lambda: store.mark_stale(2, "manual"), 2)
    shown = await OverviewService(interleaved(engine, between)).overview(clock.now)
    committed_or_held(between)
    assert shown.figures == before.figures
    assert shown.oldest_stale == before.oldest_stale == []
    await between.finish()
    assert (await OverviewService(sessions).overview(clock.now)).figures.stale == 1


async def test_the_freshness_report_is_of_one_moment(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    store: HighlightStore,
    clock: FakeClock,
) -> None:
    for user in (1, 2, 3):
        await store.upsert_auto(result(user, generated_at=clock.now - timedelta(hours=1)), "s")
    before = await report.read(sessions, clock.now)
    between = Between(lambda: store.mark_stale(2, "manual"), 2)
    shown = await report.read(interleaved(engine, between), clock.now)
    committed_or_held(between)
    assert shown == before
    await between.finish()
    assert (await report.read(sessions, clock.now))["pending_regenerations"] == 1


async def test_a_profile_list_page_is_of_one_moment(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    store: HighlightStore,
    clock: FakeClock,
) -> None:
    """A row marked stale between the page's two runs (stale rows, then the others) was in
    neither: the stale run had been read before it, the other run after."""
    for user in (1, 2, 3):
        await store.upsert_auto(result(user, generated_at=clock.now - timedelta(hours=1)), "s")
    between = Between(lambda: store.mark_stale(2, "manual"), 2)
    profiles = ProfileListService(interleaved(engine, between), clock=clock)
    page = await profiles.page(ProfileQuery())
    committed_or_held(between)
    assert [(r["user_id"], r["state"]) for r in page.rows] == [
        (1, "fresh"),
        (2, "fresh"),
        (3, "fresh"),
    ]


async def test_a_snapshot_is_repeatable_read_and_read_only_on_postgresql(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with snapshot(sessions) as session:
        if not is_postgresql(session):
            return  # SQLite: one transaction is one snapshot
        isolation = await session.scalar(text("SHOW transaction_isolation"))
        read_only = await session.scalar(text("SHOW transaction_read_only"))
        assert (isolation, read_only) == ("repeatable read", "on")
    async with sessions() as session:  # the pooled connection is back to the default
        isolation = await session.scalar(text("SHOW transaction_isolation"))
        read_only = await session.scalar(text("SHOW transaction_read_only"))
        assert (isolation, read_only) == ("read committed", "off")
