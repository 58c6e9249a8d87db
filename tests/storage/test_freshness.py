"""The SQL twins of the freshness rule agree with it on the same rows, on both databases."""

from __future__ import annotations

import itertools
from datetime import timedelta

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0
from worker.domain.freshness import FreshnessState, expiry_due, state_of
from worker.storage.column_types import UTCDateTime
from worker.storage.freshness import (
    EXPIRY_DUE_SQL,
    expiry_due_clause,
    state_column,
    state_filter,
)
from worker.storage.models import HighlightRow

TIMES = [None, T0 - timedelta(days=1), T0, T0 + timedelta(seconds=1)]


def every_combination() -> list[HighlightRow]:
    rows = []
    combos = itertools.product(
        [False, True],
        [None, T0 - timedelta(days=2)],
        [False, True],
        [None, "expired", "new_comment"],
        TIMES,
    )
    for uid, (override, generated_at, stale, reason, after) in enumerate(combos, start=1):
        rows.append(
            HighlightRow(
                user_id=uid,
                manual_override=override,
                generated_at=generated_at,
                is_stale=stale,
                stale_reason=reason,
                stale_after=after,
                created_at=T0,
                updated_at=T0,
            )
        )
    return rows


async def test_sql_twins_agree_with_the_rule_on_every_combination(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    rows = every_combination()
    expected_state = {
        r.user_id: state_of(
            manual_override=r.manual_override,
            has_content=r.generated_at is not None,
            is_stale=r.is_stale,
            stale_reason=r.stale_reason,
            stale_after=r.stale_after,
            now=T0,
        ).value
        for r in rows
    }
    expected_due = {r.user_id for r in rows if expiry_due(r.is_stale, r.stale_after, T0)}
    async with sessions.begin() as session:
        session.add_all(rows)
    async with sessions() as session:
        H = HighlightRow
        states = dict((await session.execute(select(H.user_id, state_column(T0)))).all())
        due = set(await session.scalars(select(H.user_id).where(expiry_due_clause(T0))))
        filtered = {
            state.value: set(
                await session.scalars(select(H.user_id).where(state_filter(state, T0)))
            )
            for state in FreshnessState
        }
        due_text = set(
            await session.scalars(
                text(
                    f"SELECT user_id FROM user_profile_highlights WHERE {EXPIRY_DUE_SQL}"
                ).bindparams(bindparam("now", T0, type_=UTCDateTime)),
            )
        )
    assert states == expected_state
    assert due == expected_due
    assert filtered == {
        state.value: {u for u, s in expected_state.items() if s == state.value}
        for state in FreshnessState
    }
    assert due_text == expected_due
    assert len(set(states.values())) == 5  # every state occurs: the comparison means something
