"""End to end: real broker process, real PostgreSQL, a real `wb run` worker process.

Events are produced with aiokafka; assertions read the database and the output topics.
Each test uses its own user ids, so they share one worker without interfering.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import result
from tests.live import Kafka, WorkerProcess, eventually, http_get
from worker.models import ProcessedEventRow, SignalActivityRow
from worker.store import HighlightStore

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]

COMMENTS, REQUESTS, GENERATED = "signal.comments", "signal.requests", "profile.highlights.generated"
REGEN = "profile.highlights.regen-requests"
NOW = datetime.now(UTC).replace(microsecond=0)


def comment(
    eid: str, user: int | None, at: datetime, kind: str = "created", req: str = "req-x"
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": eid,
        "type": f"comment.{kind}",
        "comment_id": f"c-{eid}",
        "request_id": req,
        "occurred_at": at.isoformat(),
    }
    if user is not None:
        doc["user_id"] = user
    return doc


async def processed(
    sessions: async_sessionmaker[AsyncSession], stream: str, event_id: str
) -> str | None:
    async with sessions() as session:
        row = await session.get(ProcessedEventRow, (stream, event_id))
        return row.outcome if row else None


async def requests_for(kafka: Kafka, user: int) -> list[dict[str, Any]]:
    return [r for r in await kafka.read_json(REGEN) if r["user_id"] == user]


async def test_health_ready_and_metrics_endpoints(worker: WorkerProcess) -> None:
    assert http_get(f"{worker.url}/healthz") == (200, {"status": "ok"})
    status, body = http_get(f"{worker.url}/readyz")
    assert status == 200 and body == {
        "ready": True,
        "checks": {"database": True, "partitions_assigned": True},
    }
    status, text = http_get(f"{worker.url}/metrics")
    assert status == 200 and "wb_events_total" in str(text)


async def test_new_comment_marks_stale_and_publishes_one_request(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = 1001
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "snap-1")
    await kafka.send(COMMENTS, comment("e1001-a", user, NOW - timedelta(minutes=5)), key=str(user))
    await kafka.send(
        COMMENTS, comment("e1001-b", user, NOW - timedelta(minutes=4), "edited"), key=str(user)
    )
    reqs = await eventually(lambda: requests_for(kafka, user), what="regen request")
    await eventually(lambda: processed(live_sessions, "comments", "e1001-b"), what="second event")
    reqs = await requests_for(kafka, user)
    assert len(reqs) == 1
    req = reqs[0]
    assert req["reason"] == "new_comment" and req["generation"] == 1
    assert req["snapshot_hash"] == "snap-1" and req["trigger"] == "comment:e1001-a"
    row = await live_store.get(user)
    assert row is not None and row.is_stale and row.generation == 2
    assert row.stale_reason == "comment_edited" and row.regen_request_id == req["event_id"]


async def test_comment_already_included_changes_nothing(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = 1002
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(minutes=1)), "snap-1")
    await kafka.send(COMMENTS, comment("e1002", user, NOW - timedelta(minutes=2)), key=str(user))
    outcome = await eventually(lambda: processed(live_sessions, "comments", "e1002"), what="event")
    assert outcome == "already_included"
    row = await live_store.get(user)
    assert row is not None and not row.is_stale and row.generation == 0


async def test_result_round_trip_freshens_the_row(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
) -> None:
    user = 1003
    await kafka.send(COMMENTS, comment("e1003", user, NOW - timedelta(minutes=2)), key=str(user))
    [req] = await eventually(lambda: requests_for(kafka, user), what="missing request")
    assert req["reason"] == "missing" and req["snapshot_hash"] is None
    await kafka.send(
        GENERATED,
        {
            "event_id": "g1003",
            "user_id": user,
            "bio_text": "Fresh bio",
            "proof_points": ["a"],
            "quotes": ["b"],
            "source_group": "grp",
            "snapshot_hash": "snap-new",
            "llm_model": "m1",
            "generated_at": NOW.isoformat(),
            "regen_request_id": req["event_id"],
            "generation": req["generation"],
        },
        key=str(user),
    )

    async def fresh() -> bool:
        row = await live_store.get(user)
        return row is not None and row.bio_text == "Fresh bio" and not row.is_stale

    await eventually(fresh, what="fresh highlight")


async def test_override_lock_suppresses_requests_until_cleared(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = 1004
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "s")
    await live_store.set_manual_override(user, "Curated", actor="ops")
    await kafka.send(COMMENTS, comment("e1004", user, NOW - timedelta(minutes=1)), key=str(user))
    assert (
        await eventually(lambda: processed(live_sessions, "comments", "e1004")) == "override_locked"
    )
    row = await live_store.get(user)
    assert row is not None and row.is_stale and row.regen_request_id is None
    await live_store.clear_manual_override(user, actor="ops")
    [req] = await eventually(lambda: requests_for(kafka, user), what="request after unlock")
    assert req["reason"] == "new_comment"


async def test_unmapped_comment_is_parked_until_its_request_is_mapped(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = 1005
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "s")
    await kafka.send(COMMENTS, comment("e1005", None, NOW - timedelta(minutes=1), req="req-1005"))
    assert await eventually(lambda: processed(live_sessions, "comments", "e1005")) == "parked"
    assert (await live_store.get(user)).is_stale is False  # type: ignore[union-attr]
    await kafka.send(
        REQUESTS,
        {
            "event_id": "m1005",
            "request_id": "req-1005",
            "user_id": user,
            "occurred_at": (NOW - timedelta(hours=2)).isoformat(),
        },
    )
    [req] = await eventually(lambda: requests_for(kafka, user), what="request after mapping")
    assert req["trigger"] == "comment:e1005"


async def test_redelivered_events_change_nothing(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = 1006
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "s")
    event = comment("e1006", user, NOW - timedelta(minutes=1))
    for _ in range(3):
        await kafka.send(COMMENTS, event, key=str(user))
    await kafka.send(COMMENTS, comment("e1006-last", user, NOW - timedelta(hours=2)), key=str(user))
    await eventually(lambda: processed(live_sessions, "comments", "e1006-last"), what="marker")
    assert len(await requests_for(kafka, user)) == 1
    row = await live_store.get(user)
    assert row is not None and row.generation == 1
    async with live_sessions() as session:
        activity = await session.get(SignalActivityRow, user)
    assert activity is not None and activity.comment_count == 2


BAD_COMMENTS = {
    "not_json": b"{nope",
    "not_utf8": b"\xff\xfe\xfd",
    "not_object": b"[1, 2]",
    "duplicate_key": b'{"event_id": "a", "event_id": "b"}',
    "too_deep": b'{"a":' * 50 + b"1" + b"}" * 50,
    "too_large": b'{"event_id": "' + b"x" * 300_000 + b'"}',
    "invalid": b'{"event_id": "bad-type", "type": "comment.liked", "comment_id": "c",'
    b' "request_id": "r", "occurred_at": "2026-01-01T00:00:00Z"}',
    "bad_timestamp": b'{"event_id": "naive", "type": "comment.created", "comment_id": "c",'
    b' "request_id": "r", "user_id": 5, "occurred_at": "2026-01-01T00:00:00"}',
}


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_stream_goes_on(
    worker: WorkerProcess,
    kafka: Kafka,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    for raw in BAD_COMMENTS.values():
        await kafka.send(COMMENTS, raw)
    await kafka.send(COMMENTS, comment("e1007-after-bad", 1007, NOW - timedelta(minutes=1)))
    await eventually(
        lambda: processed(live_sessions, "comments", "e1007-after-bad"),
        what="good event after bad ones",
    )

    async def dead() -> list[Any]:
        records = await kafka.read_all(f"{COMMENTS}.dlq")
        return records if len(records) >= len(BAD_COMMENTS) else []

    records = await eventually(dead, what="dead letters")
    by_error = {dict(r.headers)["error"].decode(): r for r in records}
    assert set(by_error) == set(BAD_COMMENTS)
    for error, record in by_error.items():
        headers = dict(record.headers)
        assert record.value == BAD_COMMENTS[error]  # the original bytes, untouched
        assert headers["reason"] and headers["source_topic"] == COMMENTS.encode()
        assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) >= 0
    status, text = http_get(f"{worker.url}/metrics")
    assert 'wb_dead_letters_total{reason="not_json",stream="comments"} 1.0' in str(text)


async def test_sweep_expires_rows_past_stale_after(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
) -> None:
    user = 1008
    await live_store.upsert_auto(
        result(user, generated_at=NOW - timedelta(days=2), stale_after=NOW - timedelta(seconds=1)),
        "s",
    )
    [req] = await eventually(lambda: requests_for(kafka, user), what="expired request")
    assert req["reason"] == "expired" and req["trigger"] == "sweep"
    row = await live_store.get(user)
    assert row is not None and row.stale_reason == "expired"


async def test_requests_on_the_topic_match_the_outbox(
    worker: WorkerProcess,
    kafka: Kafka,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    from worker.models import OutboxRow

    async def all_published() -> list[OutboxRow]:
        async with live_sessions() as session:
            rows = (await session.scalars(select(OutboxRow))).all()
        return list(rows) if rows and all(r.published_at for r in rows) else []

    rows = await eventually(all_published, what="outbox drained")
    on_topic = {r["event_id"] for r in await kafka.read_json(REGEN)}
    assert {r.event_id for r in rows} <= on_topic
