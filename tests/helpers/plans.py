"""PostgreSQL's plan of a SQLAlchemy statement, as the list of its nodes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine


def _flatten(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(_flatten(child))
    return out


async def plan_nodes(engine: AsyncEngine, stmt: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        # IN lists rendered as their own parameters (the plan does not depend on them)
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        processors = compiled._bind_processors
        values = tuple(
            processors[name](params[name]) if name in processors else params[name]
            for name in compiled.positiontup
        )
        result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled.string}", values)
        doc = result.scalar_one()
    plan = (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]
    return _flatten(plan)
