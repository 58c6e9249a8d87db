"""Stateful property test: random sequences of stale marks, results (in and out of order,
duplicated), overrides, sweeps and clock moves, applied to the real store on SQLite and
PostgreSQL, and to a pure model of the rules. After every step they must agree."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import select, text

from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import result
from worker.domain.errors import SnapshotConflict, SupersededResult, UnknownUser
from worker.domain.values import UpsertMeta
from worker.services import outbox
from worker.services.store import HighlightStore
from worker.services.sweep import Sweeper
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory
from worker.storage.models import Base, HighlightRow

USERS = st.integers(1, 4)
RETRY = timedelta(minutes=30)
BATCH_DEADLINE = timedelta(hours=24)  # a batch request is asked again after its respond_by
TTL = timedelta(hours=6)


@dataclass
class Row:
    generated_at: datetime | None = None
    snapshot: str | None = None
    stale_after: datetime | None = None
    is_stale: bool = False
    stale_reason: str | None = None
    stale_since: datetime | None = None
    generation: int = 0
    requested_at: datetime | None = None
    batch: bool = False  # the pending request's lane (an expiry's is the batch lane)
    override: bool = False


class Model:
    """The store's rules, written again as plainly as possible."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.requests = 0

    def _request(self, row: Row, now: datetime, batch: bool) -> None:
        row.requested_at, row.batch = now, batch
        self.requests += 1

    def mark(self, user: int, reason: str, now: datetime) -> None:
        row = self.rows[user]
        row.generation += 1
        if not row.is_stale:
            row.is_stale, row.stale_since = True, now
        row.stale_reason = reason
        if not row.override and row.requested_at is None:
            self._request(row, now, batch=False)

    def upsert(
        self, user: int, at: datetime, snap: str, gen: int | None, base: str | None, now: datetime
    ) -> str:
        row = self.rows.get(user)
        if row is not None and row.snapshot == snap and row.generated_at == at:
            return "duplicate"
        if (
            row is not None
            and row.generated_at is not None
            and (at, snap) <= (row.generated_at, row.snapshot or "")
        ):
            return "superseded"
        if base is not None and base != (row.snapshot if row else None):
            return "conflict"
        row = self.rows.setdefault(user, Row())
        row.generated_at, row.snapshot, row.stale_after = at, snap, at + TTL
        if gen is not None and gen < row.generation:
            return "still_stale"
        row.is_stale, row.stale_reason, row.stale_since, row.requested_at = False, None, None, None
        return "applied"

    def sweep(self, now: datetime) -> None:
        for row in (self.rows[u] for u in sorted(self.rows)):
            if not row.is_stale and row.stale_after is not None and row.stale_after <= now:
                row.generation += 1
                row.is_stale, row.stale_since, row.stale_reason = True, now, "expired"
                if not row.override and row.requested_at is None:
                    self._request(row, now, batch=True)
            elif (
                not row.override
                and row.requested_at is not None
                and row.requested_at <= now - (BATCH_DEADLINE if row.batch else RETRY)
            ):
                self._request(row, now, row.batch)  # a retry stays in its lane
            elif row.is_stale and not row.override and row.requested_at is None:
                self._request(row, now, batch=row.stale_reason == "expired")


class StoreMachine(RuleBasedStateMachine):
    database_url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(now=T0)
        self.engine = create_engine(self.database_url)
        self.run(self._reset())
        sessions = session_factory(self.engine)
        self.store = HighlightStore(sessions, ttl=TTL, clock=self.clock)
        self.sweeper = Sweeper(sessions, retry_after=RETRY, chunk_size=2, clock=self.clock)
        self.model = Model()
        self.results: list[tuple[int, datetime, str]] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _reset(self) -> None:
        async with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(text(f"DELETE FROM {table.name}"))

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()

    @rule(user=USERS, reason=st.sampled_from(["new_comment", "comment_deleted", "manual"]))
    def mark_stale(self, user: int, reason: str) -> None:
        if user not in self.model.rows:
            with pytest.raises(UnknownUser):
                self.run(self.store.mark_stale(user, reason))
            return
        self.run(self.store.mark_stale(user, reason))
        self.model.mark(user, reason, self.clock.now)

    @rule(
        user=USERS,
        minutes=st.integers(-60, 60),
        snap=st.sampled_from(["a", "b", "c"]),
        gen=st.sampled_from(["none", "current", "older", "newer"]),
        base=st.sampled_from(["none", "current", "other"]),
    )
    def result_arrives(self, user: int, minutes: int, snap: str, gen: str, base: str) -> None:
        row = self.model.rows.get(user)
        current = row.generation if row else 0
        generation = {"none": None, "current": current, "older": current - 1, "newer": current + 1}[
            gen
        ]
        if generation is not None and generation < 0:
            generation = None
        base_hash = {"none": None, "current": row.snapshot if row else None, "other": "zzz"}[base]
        at = self.clock.now + timedelta(minutes=minutes)
        self._apply_result(user, at, snap, generation, base_hash)
        self.results.append((user, at, snap))

    @rule(data=st.data())
    def old_result_again(self, data: st.DataObject) -> None:
        """Redelivery / out-of-order arrival of a result seen before."""
        if self.results:
            user, at, snap = data.draw(st.sampled_from(self.results))
            self._apply_result(user, at, snap, None, None)

    def _apply_result(
        self, user: int, at: datetime, snap: str, gen: int | None, base: str | None
    ) -> None:
        expected = self.model.upsert(user, at, snap, gen, base, self.clock.now)
        meta = UpsertMeta(generation=gen, base_snapshot_hash=base)
        try:
            self.run(self.store.upsert_auto(result(user, generated_at=at), snap, meta))
            outcome = "ok"
        except SupersededResult:
            outcome = "superseded"
        except SnapshotConflict:
            outcome = "conflict"
        assert outcome == (expected if expected in ("superseded", "conflict") else "ok")

    @rule(user=USERS)
    def lock_override(self, user: int) -> None:
        self.run(self.store.set_manual_override(user, f"text {user}", actor="prop"))
        self.model.rows.setdefault(user, Row()).override = True

    @rule(user=USERS)
    def clear_override(self, user: int) -> None:
        row = self.model.rows.get(user)
        if row is None:
            with pytest.raises(UnknownUser):
                self.run(self.store.clear_manual_override(user, actor="prop"))
            return
        self.run(self.store.clear_manual_override(user, actor="prop"))
        if row.override:
            row.override = False
            if row.is_stale and row.requested_at is None:
                self.model._request(row, self.clock.now, batch=row.stale_reason == "expired")

    @rule(minutes=st.integers(1, 400))
    def time_passes_and_sweep_runs(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))
        self.run(self.sweeper.run())
        self.model.sweep(self.clock.now)

    @invariant()
    def database_equals_model(self) -> None:
        async def load() -> tuple[dict[int, HighlightRow], int]:
            async with self.store.sessions() as session:
                rows = {r.user_id: r for r in (await session.scalars(select(HighlightRow))).all()}
                requests = await outbox.backlog(session)
            return rows, requests

        rows, requests = self.run(load())
        assert set(rows) == set(self.model.rows)
        for user, want in self.model.rows.items():
            got = rows[user]
            assert (got.generated_at, got.snapshot_hash, got.stale_after) == (
                want.generated_at,
                want.snapshot,
                want.stale_after,
            ), user
            assert (got.is_stale, got.stale_reason, got.stale_since, got.generation) == (
                want.is_stale,
                want.stale_reason,
                want.stale_since,
                want.generation,
            ), user
            assert (got.regen_requested_at, got.manual_override) == (
                want.requested_at,
                want.override,
            ), user
            assert got.regen_request_id is not None or got.regen_requested_at is None
        assert requests == self.model.requests


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_store_matches_model(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = create_engine(url)
    asyncio.run(migrate.upgrade(engine))
    asyncio.run(engine.dispose())
    StoreMachine.database_url = url
    runner = StoreMachine.TestCase
    runner.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    runner().runTest()
