"""Real sessions racing on one user, on PostgreSQL (row locks are what is under test)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest

from tests.helpers.database import truncate_all
from tests.helpers.factories import later, result
from worker.domain.errors import SnapshotConflict, SupersededResult
from worker.domain.values import StaleReason, UpsertMeta
from worker.services.store import HighlightStore
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[HighlightStore]:
    """A store on the session's PostgreSQL database, emptied, with a pool as large as the
    number of racers so that every racer holds a connection of its own."""
    engine = create_engine(pg_url, pool_size=12)
    await migrate.upgrade(engine)
    await truncate_all(engine)
    yield HighlightStore(session_factory(engine))
    await engine.dispose()


async def test_exactly_one_cas_winner(pg_store: HighlightStore) -> None:
    await pg_store.upsert_auto(result(1), "base")

    async def racer(i: int) -> str:
        try:
            await pg_store.upsert_auto(
                result(1, generated_at=later(1 + i), bio=f"racer {i}"),
                f"snap-{i}",
                UpsertMeta(base_snapshot_hash="base"),
            )
            return "won"
        except SnapshotConflict:
            return "conflict"
        except SupersededResult:
            return "superseded"

    outcomes = await asyncio.gather(*(racer(i) for i in range(12)))
    assert outcomes.count("won") == 1
    winner = outcomes.index("won")
    row = await pg_store.get(1)
    assert row is not None and row.snapshot_hash == f"snap-{winner}"


async def test_marks_results_and_overrides_race_without_losing_invariants(
    pg_store: HighlightStore,
) -> None:
    await pg_store.upsert_auto(result(1), "base")
    await pg_store.set_manual_override(1, "Curated", actor="alice")
    rng = random.Random(7)
    observed: list[int] = []

    async def stale_marker() -> None:
        for _ in range(20):
            highlight, _ = await pg_store.mark_stale(1, StaleReason.NEW_COMMENT)
            observed.append(highlight.generation)

    async def result_writer(offset: int) -> None:
        for i in range(10):
            with contextlib.suppress(SupersededResult):
                await pg_store.upsert_auto(
                    result(1, generated_at=later(offset * 100 + i)),
                    f"w{offset}-{i}",
                    UpsertMeta(generation=rng.randint(0, 20)),
                )

    await asyncio.gather(stale_marker(), stale_marker(), result_writer(1), result_writer(2))
    final = await pg_store.get(1)
    assert final is not None
    assert final.manual_override and final.override_text == "Curated"
    assert final.generation == 40
    assert sorted(observed) == list(range(1, 41))  # every mark saw a distinct generation
    assert final.regen_request_id is None  # override lock: nothing was ever requested
