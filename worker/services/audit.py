"""The audit trail: who changed what on a profile's highlight, written and read.

An operator's change (override, mark stale, regenerate, reseed) is recorded in its own
transaction as one ``AuditRow`` holding only the fields that changed, old and new
(``audited`` around the change); a change that changes nothing records nothing. The
worker's own marks are not audited: they are the input events, kept in Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.services.checks import check_user_id
from worker.storage.models import AuditRow, HighlightRow

AUDITED_FIELDS = (
    "manual_override",
    "override_text",
    "is_stale",
    "stale_reason",
    "generation",
    "regen_request_id",
)


def _audit_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def snapshot_fields(row: HighlightRow) -> dict[str, Any]:
    return {name: _audit_value(getattr(row, name)) for name in AUDITED_FIELDS}


def audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    user_id: int,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str | None,
    now: datetime,
) -> None:
    """Append one audit row with the fields that changed (old -> new)."""
    diff = {
        name: {"old": before.get(name), "new": after[name]}
        for name in after
        if before.get(name) != after[name]
    }
    if not diff:  # nothing changed: nothing to attribute
        return
    session.add(
        AuditRow(
            actor=actor, action=action, user_id=user_id, reason=reason, diff=diff, created_at=now
        )
    )


@contextmanager
def audited(
    session: AsyncSession,
    row: HighlightRow,
    *,
    actor: str,
    action: str,
    reason: str | None,
    now: datetime,
) -> Iterator[None]:
    """Record what the enclosed block changes on ``row`` as one audit row by ``actor``."""
    before = snapshot_fields(row)
    yield
    audit(
        session,
        actor=actor,
        action=action,
        user_id=row.user_id,
        before=before,
        after=snapshot_fields(row),
        reason=reason,
        now=now,
    )


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


async def audit_trail(session: AsyncSession, user_id: int, limit: int) -> list[dict[str, Any]]:
    """A user's latest ``limit`` audit entries, newest first, in the caller's session (the
    profile view reads them in the snapshot it reads the rest in)."""
    rows = (
        await session.scalars(
            select(AuditRow)
            .where(AuditRow.user_id == user_id)
            .order_by(AuditRow.id.desc())
            .limit(limit)
        )
    ).all()
    return [audit_entry(r) for r in rows]


@dataclass
class AuditReader:
    """A user's audit trail on its own (the panel's audit API, ``wb signal-profile audit``);
    the profile document reads it inside its own snapshot through ``audit_trail``."""

    sessions: async_sessionmaker[AsyncSession]

    async def trail(self, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
        check_user_id(user_id)
        async with self.sessions() as session:
            return await audit_trail(session, user_id, limit)
