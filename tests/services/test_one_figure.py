"""One figure, one definition: the deploy gate (``freshness-report``), the gauges, the panel
and the client endpoint count states by the one freshness rule, on rows in every state,
including a row past ``stale_after`` that no sweep has marked yet (expired, not fresh) and
a locked row marked stale underneath (overridden, not stale). Both databases: on each the
figures come from the rule's SQL twin (``worker.storage.freshness``)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.factories import result
from worker.domain.freshness import STALE_STATES, FreshnessState, stale_since
from worker.domain.scheduling import IMMEDIATE
from worker.domain.values import utcnow
from worker.runtime.metrics import Metrics
from worker.services import report
from worker.services.documents import served_document
from worker.services.overview import OverviewService
from worker.services.profile_list import ProfileFilter, ProfileListService, ProfileQuery
from worker.services.store import HighlightStore
from worker.services.sweep import Sweeper
from worker.storage.models import HighlightRow

H = timedelta(hours=1)


async def _rows_in_every_state(sessions: async_sessionmaker[AsyncSession]) -> dict[int, str]:
    """Users by what each is meant to be (the real clock: clients are judged by it)."""
    store = HighlightStore(sessions)
    now = utcnow()
    old = {"generated_at": now - 24 * H}

    async def generated(user: int, **fields: Any) -> None:
        await store.upsert_auto(result(user, **{"generated_at": now - H, **fields}), f"s{user}")

    await generated(1)  # fresh
    await generated(2)
    await store.mark_stale(2, "new_comment")  # stale
    await generated(3, **old, stale_after=now - 2 * H)
    await Sweeper(sessions, retry_after=H).run()  # expired, and swept
    await generated(4, **old, stale_after=now - 3 * H)  # expired, no sweep yet: the stalest
    await generated(5)
    await store.set_manual_override(5, "Locked.", actor="ops")  # overridden
    await generated(6, **old, stale_after=now + H)
    await store.set_manual_override(6, "Locked.", actor="ops")
    await store.mark_stale(6, "new_comment")  # overridden, stale underneath
    await generated(7, **old, stale_after=now - 2 * H)
    await store.mark_stale(7, "new_comment")  # stale (a comment's), past stale_after too
    await store.regenerate(8, actor="ops")  # missing: asked for, no highlight yet
    await store.set_manual_override(9, "Locked.", actor="ops")  # overridden, no highlight
    return {
        1: "fresh",
        2: "stale",
        3: "expired",
        4: "expired",
        5: "overridden",
        6: "overridden",
        7: "stale",
        8: "missing",
        9: "overridden",
    }


async def test_the_gate_the_gauges_the_panel_and_clients_count_the_same(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    meant = await _rows_in_every_state(sessions)
    now = utcnow()

    # Clients: what GET /profiles/{id}/highlight says of each user.
    store = HighlightStore(sessions)
    client = {u: (await served_document(store, u))["status"] for u in meant}
    assert client == meant
    counts = {s.value: 0 for s in FreshnessState} | dict(Counter(client.values()))
    stale = sum(counts[s] for s in STALE_STATES)
    async with sessions() as session:
        rows = (await session.scalars(select(HighlightRow))).all()
    oldest = min(
        since
        for r in rows
        if client[r.user_id] in STALE_STATES
        and (since := stale_since(r.stale_since, r.stale_after)) is not None
    )
    assert oldest == next(r.stale_after for r in rows if r.user_id == 4)  # not swept yet

    # The deploy gate.
    gate = await report.read(sessions, now)  # what the CLI reads
    assert gate["states"] == counts
    assert (gate["total"], gate["stale"]) == (len(meant), stale) == (9, 4)
    assert (gate["overridden"], gate["missing"]) == (counts["overridden"], counts["missing"])
    assert gate["stale_share"] == round(stale / len(meant), 4)
    assert gate["oldest_stale_age_s"] == round((now - oldest).total_seconds(), 1)

    # The gauges.
    metrics = Metrics()
    async with sessions() as session:
        await metrics.refresh_gauges(session, now, IMMEDIATE)
    gauged = {s: metrics.registry.get_sample_value("wb_highlights", {"state": s}) for s in counts}
    assert gauged == counts
    age = metrics.registry.get_sample_value("wb_oldest_stale_age_seconds")
    assert age == (now - oldest).total_seconds()

    # The panel: the overview's figures, its oldest stale list, the profile list's filters.
    overview = await OverviewService(sessions).overview(now)
    assert overview.figures.counts == counts
    assert (overview.figures.stale, overview.figures.oldest_stale_at) == (stale, oldest)
    assert overview.as_dict()["stale_share"] == gate["stale_share"]
    listed = overview.oldest_stale
    assert [(p.user_id, p.stale_since) for p in listed][:1] == [(4, oldest)]
    assert sorted(p.user_id for p in listed) == sorted(
        u for u, s in meant.items() if s in STALE_STATES
    )
    profiles = ProfileListService(sessions, clock=lambda: now)
    for state in FreshnessState:
        page = await profiles.page(ProfileQuery(ProfileFilter(state=state)))
        assert {r["user_id"] for r in page.rows} == {u for u, s in client.items() if s == state}
