"""Builders for test data, so tests state only what matters to them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import T0
from worker.domain.values import GeneratedHighlight
from worker.services import outbox
from worker.services.outbox import OutboxMessage


def result(
    user_id: int = 1,
    *,
    generated_at: datetime = T0,
    bio: str = "Helps everyone ship.",
    **overrides: Any,
) -> GeneratedHighlight:
    fields: dict[str, Any] = {
        "user_id": user_id,
        "bio_text": bio,
        "proof_points": ["Reviewed 40 PRs"],
        "quotes": ["\u201cAlways kind\u201d"],
        "source_group": "signal-v1",
        "llm_model": "test-llm-1",
        "generated_at": generated_at,
    }
    fields.update(overrides)
    return GeneratedHighlight(**fields)


def later(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def comment_doc(
    eid: str, user: int | None, at: datetime, kind: str = "created", req: str = "r1"
) -> dict[str, Any]:
    """A ``signal.comments`` message; without ``user`` it names only its request."""
    doc: dict[str, Any] = {
        "event_id": eid,
        "type": f"comment.{kind}",
        "comment_id": f"c-{eid}",
        "request_id": req,
        "occurred_at": at.isoformat(),
    }
    if user is not None:
        doc["user_id"] = user
    return doc


async def queued_messages(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    """Every message in the outbox (not yet published), in order."""
    async with sessions() as session:
        return await outbox.pending(session)


async def queued_requests(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    """The payloads of the outbox's messages, in order."""
    return [m.payload() for m in await queued_messages(sessions)]
