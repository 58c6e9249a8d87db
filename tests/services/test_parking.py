"""Parked comments are not kept forever: past the retention they leave as dead letters
(``unmapped``) under their original key, oldest first, and a replay of one is applied. On
SQLite and PostgreSQL, where comments are parked by the set-based path and the ORM path."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import C, R, comment_doc, later, raw
from worker.domain.batch import DeadLetter, RawMessage
from worker.domain.decoder import RejectReason, decode
from worker.services import parking
from worker.services.parking import Parked
from worker.services.pipeline import Pipeline
from worker.storage.models import ParkedCommentRow

RETENTION = timedelta(days=7)
COMMENTS = "signal.comments"
S = timedelta(seconds=1)


@pytest.fixture(params=[True, False], ids=["set-based", "orm"])
def pipeline(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, request: pytest.FixtureRequest
) -> Pipeline:
    return Pipeline(sessions, clock=clock, set_based=request.param)


def unmapped(eid: str, offset: int, req: str = "req-9") -> RawMessage:
    """A comment that names only its request, as it came from partition 3."""
    value = json.dumps(comment_doc(eid, None, later(1), req=req)).encode()
    return RawMessage(value, COMMENTS, 3, offset, f"key-{eid}".encode())


async def expire(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, limit: int = 100
) -> list[DeadLetter]:
    async with sessions.begin() as session:
        return await parking.take_expired(session, clock.now - RETENTION, limit, COMMENTS)


async def held(sessions: async_sessionmaker[AsyncSession]) -> Parked:
    async with sessions() as session:
        return await parking.parked(session)


async def test_a_comment_parked_past_the_retention_becomes_an_unmapped_dead_letter(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    source = unmapped("e1", 41)
    assert (await pipeline.process(C, [source])).outcomes == {("comments", "parked"): 1}
    clock.advance(RETENTION)
    assert await expire(sessions, clock) == []  # parked exactly a retention ago: kept
    assert await held(sessions) == Parked(1, T0)
    clock.advance(S)
    [letter] = await expire(sessions, clock)
    assert letter.reason is RejectReason.UNMAPPED
    assert "req-9" in letter.detail
    assert letter.message[1:] == (COMMENTS, 3, 41, b"key-e1")
    assert decode(C, letter.message.value, clock.now) == decode(C, source.value, T0)
    assert await held(sessions) == Parked(0, None)
    assert await expire(sessions, clock) == []  # taken once


async def test_a_dead_lettered_comment_replayed_after_its_mapping_is_applied(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """The expiry unclaims the comment's event id, as every dead letter's: the replay is
    applied, not dropped as a duplicate."""
    await pipeline.process(C, [unmapped("e1", 41)])
    clock.advance(RETENTION + S)
    [letter] = await expire(sessions, clock)
    mapping = {"event_id": "m1", "request_id": "req-9", "user_id": 4}
    mapped = await pipeline.process(R, [raw({**mapping, "occurred_at": clock.now.isoformat()})])
    assert mapped.outcomes == {("requests", "mapped"): 1}  # nothing parked to release
    replayed = await pipeline.process(C, [letter.message])
    assert replayed.outcomes == {("comments", "missing_requested"): 1}


async def test_the_oldest_expired_go_first_a_chunk_at_a_time_the_younger_stay(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    for minute, eid in enumerate(("e1", "e2", "e3")):
        clock.now = T0 + timedelta(minutes=minute)
        await pipeline.process(C, [unmapped(eid, minute, req=f"req-{eid}")])
    clock.now = T0 + RETENTION + timedelta(seconds=90)
    taken = [await expire(sessions, clock, limit=1) for _ in range(3)]
    assert [[d.message.key for d in chunk] for chunk in taken] == [[b"key-e1"], [b"key-e2"], []]
    assert await held(sessions) == Parked(1, T0 + timedelta(minutes=2))


async def test_a_row_parked_before_its_source_was_kept_goes_to_the_comments_topic(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """Rows parked before revision 0010 have no source: no key, position -1."""
    source = unmapped("e1", 41)
    await pipeline.process(C, [source])
    async with sessions.begin() as session:
        await session.execute(
            update(ParkedCommentRow).values(
                source_topic=None, source_partition=None, source_offset=None, source_key=None
            )
        )
    clock.advance(RETENTION + S)
    [letter] = await expire(sessions, clock)
    assert letter.message[1:] == (COMMENTS, -1, -1, None)
    assert decode(C, letter.message.value, clock.now) == decode(C, source.value, T0)
