"""The profile list's keyset queries read an index, not the whole table: PostgreSQL's
plans for each order and filter over 200,000 real rows (analysed), no ``enable_seqscan``
tricks. What the planner picks at 200k it picks at 1M: the plans are ordered index walks
that stop after a page (a LIMIT), whatever the table's size."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.clock import T0
from tests.helpers.plans import plan_nodes
from worker.domain.freshness import FreshnessState
from worker.domain.values import StaleReason
from worker.services.profile_list import Cursor, ProfileFilter, ProfileQuery, Sort, list_statements

ROWS = 200_000
TABLE = "user_profile_highlights"

# 5 % stale (new comments, a few expired), 0.1 % overridden, 0.5 % missing, three models
# (one rare), four source groups; updated_at spread over 30 days.
FILL = f"""
INSERT INTO {TABLE} (user_id, bio_text, source_group, snapshot_hash, llm_model, generated_at,
    stale_after, manual_override, is_stale, stale_reason, stale_since, generation,
    regen_request_id, regen_requested_at, created_at, updated_at)
SELECT g,
    'bio',
    'group-' || (g % 4),
    'h' || g,
    CASE WHEN g % 1000 = 7 THEN 'rare-model' WHEN g % 2 = 0 THEN 'model-a' ELSE 'model-b' END,
    CASE WHEN g % 200 = 3 THEN NULL ELSE CAST(:t0 AS timestamptz) - (g % 30) * interval '1 day' END,
    CAST(:t0 AS timestamptz) + interval '7 days' - (g % 30) * interval '1 day' / 10,
    g % 1000 = 11,
    g % 20 = 0,
    CASE WHEN g % 20 = 0 THEN (CASE WHEN g % 100 = 0 THEN 'expired' ELSE 'new_comment' END) END,
    CASE WHEN g % 20 = 0 THEN CAST(:t0 AS timestamptz) - (g % 997) * interval '1 minute' END,
    1,
    CASE WHEN g % 20 = 0 THEN md5(g::text) END,
    CASE WHEN g % 20 = 0 THEN CAST(:t0 AS timestamptz) - (g % 997) * interval '1 minute' END,
    CAST(:t0 AS timestamptz) - interval '30 days',
    CAST(:t0 AS timestamptz) - (g % 43200) * interval '1 minute'
FROM generate_series(1, {ROWS}) AS g
"""

FILTERS = [
    ProfileFilter(),
    ProfileFilter(state=FreshnessState.STALE),
    ProfileFilter(state=FreshnessState.FRESH),
    ProfileFilter(state=FreshnessState.EXPIRED),
    ProfileFilter(stale_reason=StaleReason.NEW_COMMENT),
    ProfileFilter(llm_model="rare-model"),
    ProfileFilter(source_group="group-2"),
    ProfileFilter(state=FreshnessState.STALE, llm_model="model-a", source_group="group-0"),
]


@pytest.fixture
async def big_table(engine: AsyncEngine) -> AsyncEngine:
    if engine.dialect.name != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    async with engine.begin() as conn:
        await conn.execute(text(FILL), {"t0": T0})
    async with engine.connect() as conn:
        await conn.execute(text(f"ANALYZE {TABLE}"))
        await conn.commit()
    return engine


def _queries() -> list[tuple[str, ProfileQuery]]:
    out = []
    for f in FILTERS:
        name = ",".join(f"{k}={v}" for k, v in f.params().items()) or "all"
        out.append((f"change {name}", ProfileQuery(f, Sort.CHANGE)))
        out.append((f"staleness {name}", ProfileQuery(f, Sort.STALENESS)))
        out.append((f"change {name} page 2", ProfileQuery(f, Sort.CHANGE, Cursor("c", 5000, T0))))
        out.append(
            (
                f"staleness {name} page 2",
                ProfileQuery(f, Sort.STALENESS, Cursor("s", 5000, T0 - timedelta(hours=3))),
            )
        )
        out.append((f"staleness {name} run n", ProfileQuery(f, Sort.STALENESS, Cursor("n", 9000))))
    return out


async def test_every_list_query_reads_an_index_not_the_table(big_table: AsyncEngine) -> None:
    seen: dict[str, set[str]] = {}
    for name, query in _queries():
        for run, stmt in list_statements(query, T0):
            nodes = await plan_nodes(big_table, stmt)
            kinds = {n["Node Type"] for n in nodes if n.get("Relation Name") == TABLE}
            assert "Seq Scan" not in kinds, (name, run, kinds)
            indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
            assert indexes, (name, run, nodes[0])
            seen[f"{name} [{run}]"] = indexes
    used = set().union(*seen.values())
    # The orders' own indexes are what the plans walk.
    assert {
        "ix_user_profile_highlights_updated_at_user_id",
        "ix_user_profile_highlights_is_stale_stale_since_user_id",
        "pk_user_profile_highlights",
    } <= used, seen
    assert seen["change model=rare-model [c]"] == {
        "ix_user_profile_highlights_llm_model_updated_at_user_id"
    }
    assert seen["change source_group=group-2 [c]"] <= {
        "ix_user_profile_highlights_source_group_updated_at_user_id",
        "ix_user_profile_highlights_updated_at_user_id",
    }
