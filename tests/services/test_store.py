"""Store flows, run on SQLite and PostgreSQL (``migrated_engine`` is parametrized)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import later, queued_messages, queued_requests, result
from worker.domain.errors import InvalidInput, SnapshotConflict, SupersededResult, UnknownUser
from worker.domain.values import StaleOutcome, StaleReason, UpsertMeta, UpsertOutcome
from worker.services.store import HighlightStore
from worker.storage.models import AuditRow


async def test_get_unknown_user_is_none(store: HighlightStore) -> None:
    assert await store.get(42) is None


async def test_insert_then_read_back(store: HighlightStore) -> None:
    stored = await store.upsert_auto(result(7), "snap-a")
    assert stored.user_id == 7
    again = await store.get(7)
    assert again == stored
    assert again is not None
    assert again.bio_text == "Helps everyone ship."
    assert again.proof_points == ["Reviewed 40 PRs"]
    assert again.generated_at == T0
    assert again.generated_at.tzinfo is not None
    assert again.stale_after == T0 + timedelta(days=7)
    assert not again.is_stale and again.generation == 0


async def test_newer_result_replaces_older(store: HighlightStore) -> None:
    await store.upsert_auto(result(1), "snap-a")
    updated = await store.upsert_auto(result(1, generated_at=later(5), bio="v2"), "snap-b")
    assert updated.bio_text == "v2"
    assert updated.snapshot_hash == "snap-b"


async def test_older_result_is_superseded_and_writes_nothing(store: HighlightStore) -> None:
    await store.upsert_auto(result(1, generated_at=later(5), bio="new"), "snap-b")
    with pytest.raises(SupersededResult):
        await store.upsert_auto(result(1, bio="old"), "snap-a")
    current = await store.get(1)
    assert current is not None and current.bio_text == "new"


async def test_same_result_twice_changes_nothing(store: HighlightStore, clock: FakeClock) -> None:
    first, outcome1 = await store.upsert_auto_with_outcome(result(1), "snap-a")
    clock.advance(timedelta(minutes=1))
    second, outcome2 = await store.upsert_auto_with_outcome(result(1), "snap-a")
    assert (outcome1, outcome2) == (UpsertOutcome.APPLIED, UpsertOutcome.DUPLICATE)
    assert second == first


async def test_cas_conflict_when_snapshot_moved(store: HighlightStore) -> None:
    await store.upsert_auto(result(1), "snap-a")
    await store.upsert_auto(
        result(1, generated_at=later(1)), "snap-b", UpsertMeta(base_snapshot_hash="snap-a")
    )
    with pytest.raises(SnapshotConflict) as err:
        await store.upsert_auto(
            result(1, generated_at=later(2), bio="lost"),
            "snap-c",
            UpsertMeta(base_snapshot_hash="snap-a"),
        )
    assert err.value.actual == "snap-b"
    current = await store.get(1)
    assert current is not None and current.snapshot_hash == "snap-b"


async def test_mark_stale_keeps_first_stale_since_and_bumps_generation(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    first, outcome1 = await store.mark_stale(1, StaleReason.NEW_COMMENT)
    clock.advance(timedelta(minutes=3))
    second, outcome2 = await store.mark_stale(1, "comment_edited")
    assert (outcome1, outcome2) == (StaleOutcome.REQUESTED, StaleOutcome.COALESCED)
    assert second.stale_since == first.stale_since == T0
    assert second.stale_reason == "comment_edited"
    assert (first.generation, second.generation) == (1, 2)
    assert second.regen_request_id == first.regen_request_id
    messages = await queued_messages(sessions)
    rows = [m.payload() for m in messages]
    assert [r["reason"] for r in rows] == ["new_comment"]
    assert rows[0]["event_id"] == first.regen_request_id
    assert messages[0].key == "1"
    assert rows[0]["generation"] == 1 and rows[0]["snapshot_hash"] == "snap-a"


async def test_result_for_current_generation_clears_stale(store: HighlightStore) -> None:
    await store.upsert_auto(result(1), "snap-a")
    stale, _ = await store.mark_stale(1, StaleReason.NEW_COMMENT)
    fresh, outcome = await store.upsert_auto_with_outcome(
        result(1, generated_at=later(1)),
        "snap-b",
        UpsertMeta(generation=stale.generation, base_snapshot_hash="snap-a"),
    )
    assert outcome is UpsertOutcome.APPLIED
    assert not fresh.is_stale and fresh.regen_request_id is None and fresh.stale_reason is None


async def test_result_for_older_generation_is_stored_but_row_stays_stale(
    store: HighlightStore,
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    await store.mark_stale(1, StaleReason.NEW_COMMENT)
    pending, _ = await store.mark_stale(1, StaleReason.NEW_COMMENT)
    stored, outcome = await store.upsert_auto_with_outcome(
        result(1, generated_at=later(1), bio="partial"), "snap-b", UpsertMeta(generation=1)
    )
    assert outcome is UpsertOutcome.APPLIED_STILL_STALE
    assert stored.bio_text == "partial"
    assert stored.is_stale and stored.regen_request_id == pending.regen_request_id


async def test_mark_stale_unknown_user(store: HighlightStore) -> None:
    with pytest.raises(UnknownUser):
        await store.mark_stale(99, StaleReason.MANUAL)


async def test_override_locks_and_survives_auto_updates(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    locked = await store.set_manual_override(1, "  Curated bio  ", actor="alice")
    assert locked.manual_override and locked.override_text == "Curated bio"
    updated = await store.upsert_auto(result(1, generated_at=later(1), bio="auto v2"), "snap-b")
    assert updated.manual_override and updated.override_text == "Curated bio"
    assert updated.bio_text == "auto v2"
    stale, outcome = await store.mark_stale(1, StaleReason.NEW_COMMENT)
    assert outcome is StaleOutcome.OVERRIDE_LOCKED
    assert stale.is_stale and stale.regen_request_id is None
    assert await queued_requests(sessions) == []
    cleared = await store.clear_manual_override(1, actor="bob")
    assert not cleared.manual_override and cleared.override_text is None
    assert cleared.regen_request_id is not None
    rows = await queued_requests(sessions)
    assert [(r["event_id"], r["reason"]) for r in rows] == [
        (cleared.regen_request_id, "new_comment")
    ]


async def test_override_for_user_without_highlight(store: HighlightStore) -> None:
    locked = await store.set_manual_override(5, "Hand written", actor="alice")
    assert locked.manual_override and not locked.has_content


async def test_audit_rows_record_diffs(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    await store.set_manual_override(1, "Curated", actor="alice", note="press request")
    await store.set_manual_override(1, "Curated", actor="alice")  # no change, no row
    await store.clear_manual_override(1, actor="bob")
    async with sessions() as session:
        rows = (await session.scalars(select(AuditRow).order_by(AuditRow.id))).all()
    assert [(r.actor, r.action) for r in rows] == [
        ("alice", "set_override"),
        ("bob", "clear_override"),
    ]
    assert rows[0].reason == "press request"
    assert rows[0].diff == {
        "manual_override": {"old": False, "new": True},
        "override_text": {"old": None, "new": "Curated"},
    }
    assert rows[1].diff["manual_override"] == {"old": True, "new": False}


async def test_regenerate_replaces_pending_request(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await store.upsert_auto(result(1), "snap-a")
    pending, _ = await store.mark_stale(1, StaleReason.NEW_COMMENT)
    manual = await store.regenerate(1, actor="alice")
    assert manual.regen_request_id != pending.regen_request_id
    assert manual.generation == pending.generation + 1
    rows = await queued_requests(sessions)
    assert [r["reason"] for r in rows] == ["new_comment", "manual"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.set_manual_override(1, "   ", actor="a"), "must not be empty"),
        (lambda s: s.set_manual_override(1, "x" * 5001, actor="a"), "longer than"),
        (lambda s: s.set_manual_override(1, "a\x00b", actor="a"), "without NUL"),
        (lambda s: s.set_manual_override(1, "ok", actor=""), "actor"),
        # invalid UTF-8 from argv (surrogate-escaped): PostgreSQL's JSON audit diff refused it
        (lambda s: s.set_manual_override(1, "a\udcffb", actor="a"), "UTF-8"),
        (lambda s: s.regenerate(1, actor="\udcff"), "actor must be UTF-8"),
        (lambda s: s.clear_manual_override(404, actor="a"), "no highlight"),
        (lambda s: s.mark_stale(1, "bogus"), "unknown stale reason"),
        # a request reason, never a row's stale reason (the two enums stay apart for this)
        (lambda s: s.mark_stale(1, "retry"), "unknown stale reason"),
        (lambda s: s.get(-1), "positive"),
        (lambda s: s.upsert_auto(result(1, generated_at=datetime(2026, 1, 1)), "s"), "timezone"),
        (lambda s: s.upsert_auto(result(1, generated_at=T0 + timedelta(days=3)), "s"), "future"),
        (
            lambda s: s.upsert_auto(result(1, generated_at=datetime(1969, 1, 1, tzinfo=UTC)), "s"),
            "1970",
        ),
        (lambda s: s.upsert_auto(result(1), ""), "snapshot_hash"),
        (lambda s: s.upsert_auto(result(1, stale_after=T0 - timedelta(1)), "s"), "stale_after"),
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(
    store: HighlightStore,
    sessions: async_sessionmaker[AsyncSession],
    call,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises((InvalidInput, UnknownUser), match=message):
        await call(store)
    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(AuditRow))
    assert count == 0
    assert await store.get(1) is None
