"""Array literals (``worker.storage.pgarray``): whatever the values, PostgreSQL reads back exactly
what was sent, and statements run together behave like statements run one by one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from worker.storage.database import create_engine, session_factory
from worker.storage.pgarray import (
    INSTANT,
    Write,
    columns_of,
    instants,
    literal,
    unnest_rows,
    write_together,
)

pytestmark = pytest.mark.postgres

# NUL and lone surrogates are refused before anything is stored (``domain.values``).
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=12)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))]
)
KINDS: dict[str, Any] = {
    "text": texts | st.sampled_from(["", "NULL", "null", '"', "\\", "a,b", "{x}", " s ", "é"]),
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "boolean": st.booleans(),
    "timestamptz": st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2999, 1, 1), timezones=zones
    ),
}
# Every instant Python and both databases hold, far apart from any anchor.
INSTANTS = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones
)
columns = st.sampled_from(sorted(KINDS)).flatmap(
    lambda kind: st.tuples(st.just(kind), st.lists(KINDS[kind] | st.none(), max_size=8))
)


@pytest.fixture(scope="module")
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url)
    yield engine
    await engine.dispose()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns)
async def test_any_values_read_back_unchanged(
    pg: AsyncEngine, column: tuple[str, list[Any]]
) -> None:
    kind, values = column
    async with pg.connect() as conn:
        got = await conn.scalar(
            text(f"SELECT CAST(CAST(:a AS text) AS {kind}[])"), {"a": literal(kind, values)}
        )
    assert list(got) == values


@dataclass
class _Stamped:
    n: int
    at: datetime | None


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(INSTANTS | st.none(), max_size=8), INSTANTS)
async def test_instants_read_back_unchanged_whatever_the_anchor(
    pg: AsyncEngine, values: list[datetime | None], anchor: datetime
) -> None:
    """An ``INSTANT`` column leaves ``unnest_rows`` as the timestamps sent, to the
    microsecond, in order, NULL for None, before or after its anchor, in any zone."""
    columns = {"n": "bigint", "at": INSTANT}
    items = [_Stamped(i, v) for i, v in enumerate(values)]
    params = columns_of(columns, items, "x_", anchor=anchor)
    sql = f"SELECT v.n, v.at FROM {unnest_rows(columns, 'x_')}"
    async with pg.connect() as conn:
        rows = (await conn.execute(text(sql), params)).all()
    assert [(r.n, r.at) for r in rows] == [(i.n, i.at) for i in items]


async def test_instants_are_short_after_the_batch_clock_and_refuse_naive() -> None:
    now = datetime(2026, 12, 6, 4, 30, tzinfo=UTC)
    earlier = now - timedelta(seconds=1, microseconds=5)
    assert instants([now, None, earlier, now], now) == "{0,NULL,-1000005,0}"
    with pytest.raises(ValueError, match="naive"):
        instants([datetime(2026, 1, 1)], now)


async def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        literal("timestamptz", [datetime(2026, 1, 1)])


@dataclass
class _Item:
    a: int
    b: str | None


async def test_columns_of_takes_every_column_of_every_item_in_order() -> None:
    items = [_Item(1, "x"), _Item(2, None)]
    both = {"a": "bigint", "b": "text"}
    assert columns_of(both, items, "p_") == {"p_a": "{1,2}", "p_b": '{"x",NULL}'}
    assert columns_of({"b": "text"}, items) == {"b": '{"x",NULL}'}  # one column
    assert columns_of(both, []) == {"a": "{}", "b": "{}"}


async def test_a_column_no_row_sets_is_sent_empty_and_read_as_nulls(pg: AsyncEngine) -> None:
    columns = {"a": "bigint", "b": "text"}
    items = [_Item(1, None), _Item(2, None)]
    params = columns_of(columns, items, "p_")
    assert params["p_b"] == "{}"
    nothing = columns_of({"b": "text"}, items, "q_")  # the rows' count must still arrive
    sql = f"SELECT v.a, v.b FROM {unnest_rows(columns, 'p_')}"
    async with pg.connect() as conn:
        rows = (await conn.execute(text(sql), params)).all()
        alone = (
            await conn.execute(text(f"SELECT v.b FROM {unnest_rows({'b': 'text'}, 'q_')}"), nothing)
        ).all()
    assert [tuple(r) for r in rows] == [(1, None), (2, None)]
    assert [tuple(r) for r in alone] == [(None,), (None,)]


async def test_writes_together_apply_all_or_refuse_overlapping_names(pg: AsyncEngine) -> None:
    sessions = session_factory(pg)
    async with pg.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS together_a (v text)"))
        await conn.execute(text("CREATE TABLE IF NOT EXISTS together_b (n bigint)"))
    a = Write(
        "INSERT INTO together_a SELECT unnest(CAST(CAST(:a_v AS text) AS text[]))",
        {"a_v": literal("text", ["x", "y"])},
    )
    b = Write("INSERT INTO together_b VALUES (:b_n)", {"b_n": 7})
    async with sessions.begin() as session:
        await write_together(session, [a, None, b])
    async with pg.connect() as conn:
        assert sorted((await conn.scalars(text("SELECT v FROM together_a"))).all()) == ["x", "y"]
        assert (await conn.scalars(text("SELECT n FROM together_b"))).all() == [7]
    with pytest.raises(ValueError, match="overlap"):
        async with sessions.begin() as session:
            await write_together(session, [b, b])
