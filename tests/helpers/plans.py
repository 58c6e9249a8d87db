"""A database's plan of a SQLAlchemy statement: PostgreSQL's as the list of its nodes,
SQLite's as the lines of ``EXPLAIN QUERY PLAN``."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def _flatten(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(_flatten(child))
    return out


def _driver_sql(conn: AsyncConnection, stmt: Any) -> tuple[str, tuple[Any, ...]]:
    """The statement's text and its positional parameters, as the driver gets them."""
    # IN lists rendered as their own parameters (the plan does not depend on them)
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    processors = compiled._bind_processors
    values = tuple(
        processors[name](params[name]) if name in processors else params[name]
        for name in compiled.positiontup
    )
    return compiled.string, values


async def plan_nodes(
    engine: AsyncEngine, stmt: Any, *, analyze: bool = False
) -> list[dict[str, Any]]:
    """PostgreSQL's plan; ``analyze``: run, with the rows each node really read (in a
    transaction rolled back: a locking statement's locks go with it)."""
    async with engine.connect() as conn:
        sql, values = _driver_sql(conn, stmt)
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        result = await conn.exec_driver_sql(f"EXPLAIN ({options}) {sql}", values)
        doc = result.scalar_one()
        await conn.rollback()
    plan = (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]
    return _flatten(plan)


async def sqlite_plan(engine: AsyncEngine, stmt: Any) -> list[str]:
    """SQLite's plan, one line a step (``SCAN t USING INDEX i``, ``USE TEMP B-TREE ...``)."""
    async with engine.connect() as conn:
        sql, values = _driver_sql(conn, stmt)
        rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", values)).all()
    return [str(row[-1]) for row in rows]
