"""The profile list (filters, orders, keyset pages) and bulk regenerate (both databases)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import FakeClock
from tests.helpers.factories import queued_requests, result
from worker.domain.errors import InvalidInput
from worker.domain.freshness import FreshnessState
from worker.domain.values import StaleReason
from worker.services.profile_list import (
    Cursor,
    ProfileFilter,
    ProfileListService,
    ProfileQuery,
    SelectionChanged,
    Sort,
)
from worker.services.store import HighlightStore
from worker.storage.models import AuditRow


async def _population(store: HighlightStore, clock: FakeClock) -> None:
    """Users 1-12: models a/b, groups g0-g2; 3, 6, 9 stale (at different times); 12 locked."""
    for user in range(1, 13):
        await store.upsert_auto(
            result(
                user,
                generated_at=clock.now - timedelta(hours=1),
                llm_model="model-a" if user % 2 else "model-b",
                source_group=f"g{user % 3}",
            ),
            f"s{user}",
        )
        clock.advance(timedelta(seconds=10))
    for user in (9, 3, 6):
        await store.mark_stale(user, "new_comment" if user != 6 else "comment_deleted")
        clock.advance(timedelta(minutes=1))
    await store.set_manual_override(12, "locked", actor="ops")
    await store.regenerate(13, actor="ops")  # a row with no content: missing


@pytest.fixture
def service(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> ProfileListService:
    return ProfileListService(sessions, bulk_rate=1000, clock=lambda: clock.now)


async def _all(service: ProfileListService, query: ProfileQuery) -> list[int]:
    """Every page's user ids, following the cursors."""
    seen: list[int] = []
    while True:
        page = await service.page(query)
        seen += [r["user_id"] for r in page.rows]
        if page.next_cursor is None:
            return seen
        sort = query.sort
        query = ProfileQuery(query.filter, sort, Cursor.parse(page.next_cursor, sort), query.limit)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, set(range(1, 14))),
        ({"state": "stale"}, {3, 6, 9}),
        ({"state": "fresh"}, {1, 2, 4, 5, 7, 8, 10, 11}),
        ({"state": "overridden"}, {12}),
        ({"state": "missing"}, {13}),
        ({"reason": "comment_deleted"}, {6}),
        ({"override": "locked"}, {12}),
        ({"override": "unlocked", "model": "model-b"}, {2, 4, 6, 8, 10}),
        ({"source_group": "g0", "state": "stale"}, {3, 6, 9}),
        ({"source_group": "g1", "model": "model-a"}, {1, 7}),
    ],
)
async def test_filters_narrow_the_list(
    store: HighlightStore,
    clock: FakeClock,
    service: ProfileListService,
    params: dict[str, str],
    expected: set[int],
) -> None:
    await _population(store, clock)
    for sort in Sort:
        query = ProfileQuery.parse({**params, "sort": sort.value})
        ids = await _all(service, ProfileQuery(query.filter, sort, limit=2))
        assert len(ids) == len(set(ids))
        assert set(ids) == expected, sort


async def test_keyset_pages_follow_each_order_without_gaps_or_repeats(
    store: HighlightStore, clock: FakeClock, service: ProfileListService
) -> None:
    await _population(store, clock)
    by_staleness = await _all(service, ProfileQuery(sort=Sort.STALENESS, limit=4))
    # stale rows oldest mark first (9, 3, 6 were marked in that order, 13 last), then the rest
    assert by_staleness == [9, 3, 6, 13, 1, 2, 4, 5, 7, 8, 10, 11, 12]
    by_change = await _all(service, ProfileQuery(sort=Sort.CHANGE, limit=3))
    assert by_change[:5] == [13, 12, 6, 3, 9]
    assert sorted(by_change) == list(range(1, 14))
    page = await service.page(ProfileQuery(sort=Sort.STALENESS, limit=13))
    assert page.next_cursor is None
    assert page.rows[0]["state"] == "stale"


@pytest.mark.parametrize(
    "params",
    [
        {"state": "sleepy"},
        {"reason": "because"},
        {"override": "maybe"},
        {"sort": "random"},
        {"model": "m" * 201},
        {"after": "x"},
        {"after": "c~not-a-time~1"},
        {"after": "s~2026-01-01T00:00:00+00:00~1", "sort": "change"},
        {"after": "n~~-1"},
        {"after": "c~2026-01-01T00:00:00~1", "sort": "change"},
        {"after": "c~2026-01-01T00:00:00+00:00~99999999999999999999", "sort": "change"},
        {"after": "c~2026-01-01T00:00:00+00:00~٣", "sort": "change"},  # an Arabic 3
        # valid times with no UTC form (the drivers overflowed converting them: a 500)
        {"after": "c~9999-12-31T23:59:59-14:00~1", "sort": "change"},
        {"after": "s~9999-12-31T23:59:59-01:00~1"},
        {"after": "c~0001-01-01T00:00:00+01:00~1", "sort": "change"},
    ],
)
def test_unknown_filter_values_and_forged_cursors_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        ProfileQuery.parse(params)


@pytest.mark.parametrize(
    ("after", "sort"),
    [
        ("c~9999-12-31T23:59:59.999999+00:00~1", Sort.CHANGE),
        ("c~9999-12-31T09:59:59-14:00~9223372036854775807", Sort.CHANGE),
        ("s~0001-01-01T00:00:00-01:00~0", Sort.STALENESS),
        ("s~0001-01-02T00:00:00+23:59~1", Sort.STALENESS),
    ],
)
async def test_cursors_at_the_edges_of_time_page_on_both_databases(
    store: HighlightStore, clock: FakeClock, service: ProfileListService, after: str, sort: Sort
) -> None:
    """What the boundary lets through, the database takes: the edges of the range page."""
    await _population(store, clock)
    page = await service.page(ProfileQuery.parse({"after": after, "sort": sort.value}))
    ids = [r["user_id"] for r in page.rows]
    late = after.startswith("c~")  # every row changed before year 9999 / stale after year 1
    assert ids == (
        [13, 12, 6, 3, 9, 11, 10, 8, 7, 5, 4, 2, 1]
        if late
        else [9, 3, 6, 13, 1, 2, 4, 5, 7, 8, 10, 11, 12]
    )


def test_a_filter_reads_back_from_its_parameters() -> None:
    f = ProfileFilter(FreshnessState.STALE, StaleReason.MANUAL, True, "m", "g")
    assert ProfileFilter.parse(f.params()) == f
    assert ProfileFilter.parse({}) == ProfileFilter()


async def test_bulk_regenerate_marks_the_confirmed_selection_audited_per_user(
    store: HighlightStore,
    clock: FakeClock,
    service: ProfileListService,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _population(store, clock)
    selection = ProfileFilter.parse({"model": "model-a", "state": "fresh"})
    assert await service.count(selection) == 4  # 1, 5, 7, 11 (3 and 9 are stale)
    with pytest.raises(SelectionChanged) as changed:
        await service.start_bulk(selection, "erin", expected=5)
    assert changed.value.count == 4
    before = len(await queued_requests(sessions))
    job = await service.start_bulk(selection, "erin", expected=4, note="prompt v2")
    await service.wait()
    assert (job.result.marked, job.result.requested, job.error) == (4, 4, None)
    assert job.finished_at is not None
    assert service.jobs == [job]
    async with sessions() as session:
        audit = (
            await session.scalars(select(AuditRow).where(AuditRow.action == "bulk_regenerate"))
        ).all()
    assert sorted(a.user_id for a in audit) == [1, 5, 7, 11]
    assert {(a.actor, a.reason) for a in audit} == {("erin", "prompt v2")}
    assert len(await queued_requests(sessions)) == before + 4
    assert await service.count(selection) == 0
