"""A user's audit trail as operators read it (the panel's JSON API, ``wb signal-profile audit``).

The profile document the panel shows is ``worker.services.documents.profile_document``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.services.store import HighlightStore, check_user_id
from worker.storage.models import AuditRow


def audit_entry(row: AuditRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.created_at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "user_id": row.user_id,
        "reason": row.reason,
        "diff": row.diff,
    }


@dataclass
class AdminService:
    store: HighlightStore

    async def audit(self, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
        check_user_id(user_id)
        async with self.store.sessions() as session:
            return await _audit_in(session, user_id, limit)


async def _audit_in(session: AsyncSession, user_id: int, limit: int) -> list[dict[str, Any]]:
    rows = (
        await session.scalars(
            select(AuditRow)
            .where(AuditRow.user_id == user_id)
            .order_by(AuditRow.id.desc())
            .limit(limit)
        )
    ).all()
    return [audit_entry(r) for r in rows]
