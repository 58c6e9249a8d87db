"""Many rows as one parameter per column: PostgreSQL arrays sent as text literals.

The set-based statements (comment batches, event-id claims, Signal activity) pass a
batch as one array per column. asyncpg's list encoder inspects every element in Python
(nesting, types), which is dear per element on the hot path; a text literal such as
``{1,2,3}``, built here and parsed by PostgreSQL's array input in C, is much cheaper: the
statement casts it, ``CAST(CAST(:p AS text) AS bigint[])``. (Figures: docs/performance.md.)

``write_together`` sends a batch's writes to different tables as one statement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from operator import attrgetter
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from worker.storage.driver_rows import driver_rows


def array(name: str, kind: str) -> str:
    """SQL for the bind parameter ``name`` holding a literal of ``kind[]``."""
    return f"CAST(CAST(:{name} AS text) AS {kind}[])"


# A timestamptz column of ``unnest_rows`` sent as whole microseconds after an anchor (the
# parameter ``prefix`` + ``t0``, usually the batch's clock reading, so most values are
# ``0``). A timestamp's 33 characters of ISO 8601 were the largest part of a comment
# batch's write (8 of its 35 columns, 132 of 224 kB a batch of 500: socket writes were 15 %
# of the worker's CPU), and PostgreSQL reads an integer and adds it in under half the time
# it parses the text (docs/performance.md, 2026-12-06). Exact: both sides count microseconds.
INSTANT = "instant"
_MICROSECOND = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unnest_rows(columns: Mapping[str, str], prefix: str = "") -> str:
    """``unnest(<arrays>) AS v(a, ...)``: one row per index, a parameter per column (named
    ``prefix`` + column), instead of a VALUES list with a parameter per cell (Python time
    per cell, and PostgreSQL planning time per parameter). ``INSTANT`` columns arrive as
    offsets (``instants``) and leave as timestamptz."""
    names = ", ".join(columns)
    arrays = ", ".join(
        array(prefix + name, "bigint" if kind == INSTANT else kind)
        for name, kind in columns.items()
    )
    if INSTANT not in columns.values():
        return f"unnest({arrays}) AS v({names})"
    anchor = f"CAST(:{prefix}t0 AS timestamptz)"
    # Whole seconds and microseconds apart: PostgreSQL multiplies an interval in double
    # precision, exact below 2^53 microseconds (285 years) but not across years 1..9999.
    out = ", ".join(
        f"{anchor} + u.{name} / 1000000 * interval '1 second' "
        f"+ u.{name} % 1000000 * interval '1 microsecond' AS {name}"
        if kind == INSTANT
        else f"u.{name}"
        for name, kind in columns.items()
    )
    return f"(SELECT {out} FROM unnest({arrays}) AS u({names})) AS v"


def instants(values: Sequence[Any], anchor: datetime) -> str:
    """The array literal of an ``INSTANT`` column: each value's microseconds after
    ``anchor``. A batch repeats a few values (its clock reading, None): each distinct one
    is converted once, and the column is joined by C loops, not a Python step per value."""
    sent: dict[Any, str] = {None: "NULL"}
    for value in set(values):
        if value is not None:
            if value.utcoffset() is None:
                raise ValueError(
                    f"naive timestamp {value.isoformat()} (an instant needs an offset)"
                )
            sent[value] = str((value - anchor) // _MICROSECOND)
    return "{" + ",".join(map(sent.__getitem__, values)) + "}"


def _text(value: str) -> str:
    """Always quoted, so that no text (empty, ``NULL``, braces, commas) is misread."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=256)
def _timestamp(value: datetime) -> str:
    """ISO 8601 with its offset (a batch repeats its clock reading: cached)."""
    if value.utcoffset() is None:
        raise ValueError(f"naive timestamp {value.isoformat()} (timestamptz needs an offset)")
    return value.isoformat()


def _boolean(value: bool) -> str:
    return "t" if value else "f"


def _bytea(value: bytes) -> str:
    """PostgreSQL's hex input form (``\\x...``), quoted as text is."""
    return _text("\\x" + value.hex())


_ENCODERS: dict[str, Callable[[Any], str]] = {
    "bigint": str,
    "integer": str,
    "boolean": _boolean,
    "bytea": _bytea,
    "double precision": repr,
    "text": _text,
    "timestamptz": _timestamp,
}


def literal(kind: str, values: Iterable[Any]) -> str:
    """The array literal of ``values`` (None is SQL NULL) for a column of ``kind``."""
    items = values if isinstance(values, list | tuple) else list(values)
    if kind == "jsonb":  # JSON text, cast by the statement
        kind = "text"
    if items and None not in items:  # the commonest shapes, joined without a call each
        if kind == "text":
            together = "".join(items)
            if '"' not in together and "\\" not in together:  # nothing to escape
                return '{"' + '","'.join(items) + '"}'
        elif kind in ("bigint", "integer"):
            return "{" + ",".join(map(str, items)) + "}"
        elif kind == "boolean":
            return "{" + ",".join(["t" if v else "f" for v in items]) + "}"
    nulls = items.count(None)
    if nulls == len(items):  # a column the batch leaves empty (queue columns, coverage)
        return "{" + ",".join(["NULL"] * nulls) + "}"
    encode = _ENCODERS[kind]
    if not nulls:
        return "{" + ",".join(map(encode, items)) + "}"
    return "{" + ",".join(["NULL" if v is None else encode(v) for v in items]) + "}"


def columns_of(
    columns: Mapping[str, str],
    items: Sequence[object],
    prefix: str = "",
    anchor: datetime | None = None,
) -> dict[str, object]:
    """Bind parameters for ``unnest_rows(columns, prefix)``, taken from the attributes of
    ``items`` (all of an item's at once, then transposed: a batch's rows times twenty
    columns of single ``getattr`` calls cost more than the literals); see ``arrays_of``."""
    if not items:
        return arrays_of(columns, dict.fromkeys(columns, ()), prefix, anchor)
    get = attrgetter(*columns)
    # attrgetter of one name gives the value itself, of several a tuple
    rows = map(get, items) if len(columns) > 1 else ((get(item),) for item in items)
    return arrays_of(
        columns, dict(zip(columns, zip(*rows, strict=True), strict=True)), prefix, anchor
    )


def arrays_of(
    columns: Mapping[str, str],
    values: Mapping[str, Sequence[Any]],
    prefix: str = "",
    anchor: datetime | None = None,
) -> dict[str, object]:
    """Bind parameters for ``unnest_rows(columns, prefix)`` from each column's values (of
    equal length): each column's literal; ``INSTANT`` columns after ``anchor`` (the batch's
    clock reading makes most of them ``0``; None: their first value)."""
    params: dict[str, object] = {}
    if INSTANT in columns.values():
        if anchor is None:
            firsts = (v for n, k in columns.items() if k == INSTANT for v in values[n] if v)
            anchor = next(firsts, EPOCH)
        params[prefix + "t0"] = anchor
    empty = []
    for name, kind in columns.items():
        column = values[name]
        if column and column.count(None) == len(column):
            empty.append(prefix + name)
        elif kind == INSTANT:
            params[prefix + name] = instants(column, anchor or EPOCH)
        else:
            params[prefix + name] = literal(kind, column)
    # unnest pads shorter arrays with NULL: a column no row sets (most of a stale mark's
    # request columns) need not be sent, unless no column has a value.
    for name in empty:
        size = len(values[name[len(prefix) :]])
        params[name] = "{}" if len(empty) < len(columns) else literal("text", [None] * size)
    return params


def sent_as_instants(columns: Mapping[str, str]) -> dict[str, str]:
    """``columns`` with their timestamptz columns sent as ``INSTANT``s (for ``unnest_rows``
    and ``columns_of``; a column list shared with a form that sends literals keeps its
    timestamptz)."""
    return {name: INSTANT if kind == "timestamptz" else kind for name, kind in columns.items()}


@dataclass(frozen=True)
class Write:
    """One data-modifying statement of a batch; its parameter names are its own (a prefix
    per statement), so that several can run as one (``write_together``)."""

    sql: str
    params: dict[str, object]


async def write_together(session: AsyncSession, writes: Iterable[Write | None]) -> None:
    """Run ``writes`` (None: nothing to write) in one round trip: each becomes a
    data-modifying CTE of one statement, which PostgreSQL runs to completion. A batch's
    writes touch different tables, and every round trip costs the worker's event loop a
    turn behind Faust's per-event work: fewer of them is what keeps a batch short."""
    present = [w for w in writes if w is not None]
    if not present:
        return
    params: dict[str, object] = {}
    for w in present:
        if params.keys() & w.params.keys():
            raise ValueError(f"parameter names overlap: {sorted(params.keys() & w.params.keys())}")
        params.update(w.params)
    await driver_rows(session, _together(tuple(w.sql for w in present)), params)


@lru_cache(maxsize=32)
def _together(statements: tuple[str, ...]) -> TextClause:
    if len(statements) == 1:
        return text(statements[0])
    ctes = ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(statements))
    return text(f"WITH {ctes} SELECT 1")
