"""What the admin panel, its JSON API and the CLI show and do: service layer, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.domain.values import utcnow
from worker.services.documents import profile_document_in
from worker.services.store import HighlightStore, check_user_id
from worker.storage.database import snapshot
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
    serve_stale_for: timedelta = timedelta(0)

    async def audit(self, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
        check_user_id(user_id)
        async with self.store.sessions() as session:
            return await _audit_in(session, user_id, limit)

    async def profile(self, user_id: int) -> dict[str, Any]:
        """The profile document plus the pending request's age and the latest audit entries,
        all read in one snapshot."""
        check_user_id(user_id)
        now = utcnow()
        async with snapshot(self.store.sessions) as session:
            doc = await profile_document_in(session, self.store, user_id, now, self.serve_stale_for)
            highlight = doc["highlight"]
            requested = highlight and highlight["regen_requested_at"]
            pending_age = None
            if requested:
                pending_age = round((now - datetime.fromisoformat(requested)).total_seconds(), 1)
            doc["pending_regeneration_age_s"] = pending_age
            doc["audit"] = await _audit_in(session, user_id, 20)
        return doc


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
