"""What the admin panel, its JSON API and the CLI show and do: service layer, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from worker.domain.values import utcnow
from worker.services.documents import profile_document
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
    serve_stale_for: timedelta = timedelta(0)

    async def audit(self, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
        check_user_id(user_id)
        async with self.store.sessions() as session:
            rows = (
                await session.scalars(
                    select(AuditRow)
                    .where(AuditRow.user_id == user_id)
                    .order_by(AuditRow.id.desc())
                    .limit(limit)
                )
            ).all()
        return [audit_entry(r) for r in rows]

    async def profile(self, user_id: int) -> dict[str, Any]:
        """The profile document plus the pending request's age and the latest audit entries."""
        check_user_id(user_id)
        doc = await profile_document(self.store, user_id, self.serve_stale_for)
        highlight = doc["highlight"]
        requested = highlight and highlight["regen_requested_at"]
        pending_age = None
        if requested:
            pending_age = round((utcnow() - datetime.fromisoformat(requested)).total_seconds(), 1)
        doc["pending_regeneration_age_s"] = pending_age
        doc["audit"] = await self.audit(user_id, limit=20)
        return doc
