"""Property: whatever order one user's comment events arrive in, in whatever batches, and
however often each is redelivered (within the dedup window, or after it forgot them), the
stored fingerprint is the fingerprint of the final live set, computed from scratch
(``worker.domain.snapshot``), on SQLite and on PostgreSQL's set-based path."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from tests.helpers.database import truncate_all
from tests.helpers.factories import C, comment, later
from worker.domain.snapshot import element, signed
from worker.services.pipeline import Pipeline
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory
from worker.storage.models import HighlightRow, ProcessedEventRow

KINDS = ("created", "edited", "deleted")


@dataclass(frozen=True)
class Event:
    number: int
    comment: int
    kind: str
    minute: int


EVENTS = st.lists(
    st.builds(
        Event,
        number=st.just(0),
        comment=st.integers(1, 4),
        kind=st.sampled_from(KINDS),
        minute=st.integers(0, 5),  # few minutes: equal timestamps, tied by event id
    ),
    min_size=1,
    max_size=14,
).map(lambda events: [Event(i, e.comment, e.kind, e.minute) for i, e in enumerate(events)])


def final_fingerprint(events: list[Event], prefix: str) -> int:
    """From scratch: comments never deleted, each at its latest created/edited event."""
    deleted = {e.comment for e in events if e.kind == "deleted"}
    latest: dict[int, tuple[datetime, str]] = {}
    for e in events:
        if e.kind != "deleted" and e.comment not in deleted:
            version = (later(e.minute), f"{prefix}e{e.number}")
            latest[e.comment] = max(latest.get(e.comment, version), version)
    total = sum(element(f"k{c}", eid) for c, (_, eid) in latest.items())
    return signed(total)


_users = itertools.count(1)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_any_interleaving_and_redelivery_gives_the_final_sets_fingerprint(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    with asyncio.Runner() as runner:
        engine = create_engine(url)
        runner.run(migrate.upgrade(engine))
        runner.run(truncate_all(engine))  # the session's database: other tests' users too
        sessions = session_factory(engine)
        pipeline = Pipeline(sessions)

        async def apply(user: int, batches: list[list[Event]], forget_after: int) -> int:
            prefix = f"u{user}-"
            for i, batch in enumerate(batches):
                if i == forget_after:  # the dedup window passed: redeliveries get through
                    async with sessions.begin() as session:
                        await session.execute(delete(ProcessedEventRow))
                messages = [
                    comment(
                        f"{prefix}e{e.number}", user, later(e.minute), e.kind, cid=f"k{e.comment}"
                    )
                    for e in batch
                ]
                await pipeline.process(C, messages)
            async with sessions() as session:
                row = await session.get(HighlightRow, user)
                assert row is not None
                return row.input_fingerprint

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data(), events=EVENTS)
        def check(data: st.DataObject, events: list[Event]) -> None:
            delivered = data.draw(
                st.permutations(events + data.draw(st.lists(st.sampled_from(events), max_size=6)))
            )
            cuts = sorted(
                data.draw(st.sets(st.integers(1, max(1, len(delivered) - 1)), max_size=4))
            )
            bounds = [0, *cuts, len(delivered)]
            batches = [list(delivered[a:b]) for a, b in itertools.pairwise(bounds) if a < b]
            forget_after = data.draw(st.integers(0, len(batches)))
            user = next(_users)
            got = runner.run(apply(user, batches, forget_after))
            assert got == final_fingerprint(events, f"u{user}-")

        try:
            check()
        finally:
            runner.run(engine.dispose())
