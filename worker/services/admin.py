"""What the admin panel, its JSON API and the CLI show and do: service layer, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from worker.domain.values import utcnow
from worker.services.audit import audit_trail
from worker.services.checks import check_user_id
from worker.services.documents import profile_document_in
from worker.services.store import HighlightStore
from worker.storage.database import snapshot


@dataclass
class AdminService:
    store: HighlightStore
    serve_stale_for: timedelta = timedelta(0)

    async def audit(self, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
        check_user_id(user_id)
        async with self.store.sessions() as session:
            return await audit_trail(session, user_id, limit)

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
            doc["audit"] = await audit_trail(session, user_id, 20)
        return doc
