"""End to end: real broker process, real PostgreSQL, a real `wb run` worker process.

Events are produced with aiokafka; assertions read the database and the output topics.
Each test uses its own user ids, so they share one worker without interfering.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.factories import comment_doc, result
from tests.helpers.live import Kafka, WorkerProcess, eventually, http_get
from worker.services import outbox
from worker.services.store import HighlightStore
from worker.storage.models import HighlightRow, ProcessedEventRow, SignalActivityRow

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]

COMMENTS, REQUESTS, GENERATED = "signal.comments", "signal.requests", "profile.highlights.generated"
REGEN = "profile.highlights.regen-requests"
NOW = datetime.now(UTC).replace(microsecond=0)


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


async def test_a_started_worker_leaves_no_table_directory_where_it_runs(
    worker: WorkerProcess,
) -> None:
    # The worker runs in the test's working directory (it inherits it); Faust's first
    # start used to create `<app id>-data/v1/tables` there.
    assert not (Path.cwd() / f"{worker.app_id}-data").exists()


async def test_new_comment_marks_stale_and_publishes_one_request(
    worker: WorkerProcess,
    kafka: Kafka,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = 1001
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "snap-1")
    await kafka.send(
        COMMENTS, comment_doc("e1001-a", user, NOW - timedelta(minutes=5)), key=str(user)
    )
    await kafka.send(
        COMMENTS, comment_doc("e1001-b", user, NOW - timedelta(minutes=4), "edited"), key=str(user)
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
    await kafka.send(
        COMMENTS, comment_doc("e1002", user, NOW - timedelta(minutes=2)), key=str(user)
    )
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
    await kafka.send(
        COMMENTS, comment_doc("e1003", user, NOW - timedelta(minutes=2)), key=str(user)
    )
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
    await kafka.send(
        COMMENTS, comment_doc("e1004", user, NOW - timedelta(minutes=1)), key=str(user)
    )
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
    await kafka.send(
        COMMENTS, comment_doc("e1005", None, NOW - timedelta(minutes=1), req="req-1005")
    )
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
    event = comment_doc("e1006", user, NOW - timedelta(minutes=1))
    for _ in range(3):
        await kafka.send(COMMENTS, event, key=str(user))
    await kafka.send(
        COMMENTS, comment_doc("e1006-last", user, NOW - timedelta(hours=2)), key=str(user)
    )
    await eventually(lambda: processed(live_sessions, "comments", "e1006-last"), what="marker")
    assert len(await requests_for(kafka, user)) == 1
    row = await live_store.get(user)
    assert row is not None and row.generation == 1
    async with live_sessions() as session:
        activity = await session.get(SignalActivityRow, user)
    assert activity is not None and activity.comment_count == 2


def _bad(**change: Any) -> bytes:
    doc = {
        "event_id": "bad",
        "type": "comment.created",
        "comment_id": "c",
        "request_id": "r",
        "user_id": 5,
        "occurred_at": "2026-01-01T00:00:00Z",
        **change,
    }
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


# The hostile corpus: (original bytes, the error header the dead letter must carry).
BAD_COMMENTS: list[tuple[bytes, str]] = [
    (b"{nope", "not_json"),
    (b"\xff\xfe\xfd", "not_utf8"),
    (b"[1, 2]", "not_object"),
    (b'{"event_id": "a", "event_id": "b"}', "duplicate_key"),
    (b'{"a":' * 50 + b"1" + b"}" * 50, "too_deep"),
    (b'{"event_id": "' + b"x" * 1_000_000 + b'"}', "too_large"),
    (_bad(type="comment.liked"), "invalid"),
    (_bad(user_id="five"), "invalid"),
    (_bad(user_id=-4), "invalid"),
    (_bad(user_id=2**64), "invalid"),
    (_bad(event_id=...), "invalid"),
    (_bad(comment_id=None), "invalid"),
    (_bad(occurred_at="2026-01-01T00:00:00"), "bad_timestamp"),
    (_bad(occurred_at="2999-01-01T00:00:00Z"), "bad_timestamp"),
    (_bad(occurred_at="1969-07-20T20:17:00Z"), "bad_timestamp"),
]


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_stream_goes_on(
    worker: WorkerProcess,
    kafka: Kafka,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    for raw, _ in BAD_COMMENTS:
        await kafka.send(COMMENTS, raw)
    await kafka.send(COMMENTS, comment_doc("e1007-after-bad", 1007, NOW - timedelta(minutes=1)))
    await eventually(
        lambda: processed(live_sessions, "comments", "e1007-after-bad"),
        what="good event after bad ones",
    )

    async def dead() -> list[Any]:
        records = await kafka.read_all(f"{COMMENTS}.dlq")
        return records if len(records) >= len(BAD_COMMENTS) else []

    records = await eventually(dead, what="dead letters")
    by_value = {bytes(r.value): r for r in records}
    for raw, error in BAD_COMMENTS:
        record = by_value.get(raw)
        assert record is not None, f"not dead-lettered: {raw[:60]!r}"
        headers = dict(record.headers)
        assert headers["error"].decode() == error, raw[:60]
        assert headers["reason"]
        assert headers["source_topic"] == COMMENTS.encode()
        assert int(headers["source_offset"]) >= 0
        assert int(headers["source_partition"]) >= 0
    _, text = http_get(f"{worker.url}/metrics")
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in str(text).splitlines()
        if line.startswith("wb_dead_letters_total{") and 'stream="comments"' in line
    )
    assert counted == len(BAD_COMMENTS)


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


async def test_every_pending_request_reaches_the_topic_and_leaves_the_outbox(
    worker: WorkerProcess,
    kafka: Kafka,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def drained() -> set[str]:
        async with live_sessions() as session:
            if await outbox.backlog(session):
                return set()
            pending = await session.scalars(
                select(HighlightRow.regen_request_id).where(
                    HighlightRow.regen_request_id.is_not(None)
                )
            )
            return {str(request_id) for request_id in pending}

    pending = await eventually(drained, what="outbox drained with requests pending")
    on_topic = {r["event_id"] for r in await kafka.read_json(REGEN)}
    assert pending <= on_topic


async def test_dlq_replay_sends_dead_letters_back_once(
    worker: WorkerProcess,
    kafka: Kafka,
    live_db_url: str,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    import asyncio

    from tests.helpers.cli import wb

    fixed = json.dumps(comment_doc("e1009-replayed", 1009, NOW - timedelta(minutes=1))).encode()
    headers = [
        ("error", b"internal_error"),
        ("reason", b"bug 123"),
        ("source_topic", COMMENTS.encode()),
        ("source_partition", b"0"),
        ("source_offset", b"5"),
    ]
    await kafka.producer.send_and_wait(f"{COMMENTS}.dlq", fixed, headers=headers)
    env = {
        "WB_KAFKA_BROKER": kafka.bootstrap,
        "WB_DATABASE_URL": live_db_url,
        "WB_APP_ID": worker.app_id,
    }
    dry = await asyncio.to_thread(
        wb, "dlq", "replay", COMMENTS, "--error", "internal_error", "--dry-run", env=env
    )
    assert dry.returncode == 0, dry.stderr
    assert "1 replayed (internal_error=1)" in dry.stdout
    done = await asyncio.to_thread(
        wb, "dlq", "replay", COMMENTS, "--error", "internal_error", env=env
    )
    assert done.returncode == 0, done.stderr
    assert "1 replayed" in done.stdout
    outcome = await eventually(lambda: processed(live_sessions, "comments", "e1009-replayed"))
    assert outcome == "missing_requested"
    again = await asyncio.to_thread(wb, "dlq", "replay", COMMENTS, env=env)
    assert "0 replayed" in again.stdout


async def test_served_highlight_endpoint(worker: WorkerProcess, live_store: HighlightStore) -> None:
    await live_store.upsert_auto(result(1010, generated_at=NOW - timedelta(minutes=1)), "s")
    status, doc = http_get(f"{worker.url}/profiles/1010/highlight")
    assert status == 200
    assert isinstance(doc, dict)
    assert (doc["status"], doc["display"], doc["text"]) == (
        "fresh",
        "highlight",
        "Helps everyone ship.",
    )
    status, doc = http_get(f"{worker.url}/profiles/99999999/highlight")
    assert status == 200
    assert isinstance(doc, dict)
    assert doc["status"] == "missing"
    for bad in ("abc", "-1", "0", "1e3", "99999999999999999999"):
        status, doc = http_get(f"{worker.url}/profiles/{bad}/highlight")
        assert status == 400, bad
        assert isinstance(doc, dict)
        assert doc["error"] == "bad_user_id"


async def test_readme_walkthrough_with_wb_topic(worker: WorkerProcess, kafka: Kafka) -> None:
    """`wb topic produce` a comment typed as in the README, `wb topic tail` the request."""
    import asyncio

    from tests.helpers.cli import wb

    env = {"WB_KAFKA_BROKER": kafka.bootstrap}
    line = json.dumps(comment_doc("readme-1", 4242, NOW - timedelta(minutes=1)))
    sent = await asyncio.to_thread(
        wb, "topic", "produce", COMMENTS, "--key", "4242", env=env, stdin=line + "\n"
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr == f"1 messages sent to {COMMENTS}\n"

    async def tailed() -> list[dict[str, Any]]:
        out = await asyncio.to_thread(
            wb, "topic", "tail", REGEN, "--from-beginning", "--exit", env=env
        )
        return [
            json.loads(row.split(" ", 2)[2])
            for row in out.stdout.splitlines()
            if " key=4242 " in row
        ]

    [request] = await eventually(tailed, what="regen request via wb topic tail")
    assert request["reason"] == "missing"
    assert request["trigger"] == "comment:readme-1"


async def test_metric_labels_come_from_closed_sets(worker: WorkerProcess) -> None:
    """Runs last in this module, after every kind of event went through the worker."""
    from prometheus_client.parser import text_string_to_metric_families

    from worker.runtime.metrics import LABEL_VALUES

    async def gauges_refreshed() -> str:
        text = str(http_get(f"{worker.url}/metrics")[1])
        return text if 'wb_highlights{state="fresh"}' in text else ""

    text = await eventually(gauges_refreshed, what="gauges refreshed")
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("wb_"):
            continue
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label != "le":
                    seen.setdefault(label, set()).add(value)
    assert set(seen) <= set(LABEL_VALUES)
    for label, values in seen.items():
        assert values <= LABEL_VALUES[label], (label, values - LABEL_VALUES[label])
    assert {"comments", "generated"} <= seen["stream"]
    assert "dead_lettered" in seen["outcome"]
