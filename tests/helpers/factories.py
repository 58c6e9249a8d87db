"""Builders for test data, so tests state only what matters to them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0
from worker.domain.batch import RawMessage
from worker.domain.values import GeneratedHighlight
from worker.domain.wire import InputStream
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
    eid: str,
    user: int | None,
    at: datetime,
    kind: str = "created",
    req: str = "r1",
    cid: str | None = None,
) -> dict[str, Any]:
    """A ``signal.comments`` message (about comment ``cid``, default ``c-<eid>``); without
    ``user`` it names only its request."""
    doc: dict[str, Any] = {
        "event_id": eid,
        "type": f"comment.{kind}",
        "comment_id": cid or f"c-{eid}",
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


C, R, G = InputStream.COMMENTS, InputStream.REQUESTS, InputStream.GENERATED
_offsets = iter(range(10**9))


def raw(doc: dict[str, Any] | bytes) -> RawMessage:
    value = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return RawMessage(value=value, topic="t", partition=0, offset=next(_offsets))


def comment(
    eid: str,
    user: int | None,
    at: datetime,
    kind: str = "created",
    req: str = "r1",
    cid: str | None = None,
) -> RawMessage:
    return raw(comment_doc(eid, user, at, kind, req, cid))


def generated_doc(eid: str, user: int, at: datetime, snap: str, **extra: Any) -> dict[str, Any]:
    """A generator's result (``profile.highlights.generated``) as JSON values."""
    return {
        "event_id": eid,
        "user_id": user,
        "bio_text": f"bio {snap}",
        "proof_points": ["p"],
        "quotes": ["q"],
        "source_group": "g",
        "snapshot_hash": snap,
        "llm_model": "m",
        "generated_at": at.isoformat(),
        **extra,
    }


def generated(eid: str, user: int, at: datetime, snap: str, **extra: Any) -> RawMessage:
    return raw(generated_doc(eid, user, at, snap, **extra))


def batch(users: tuple[int, ...] = (1, 2, 3), prefix: str = "e") -> list[RawMessage]:
    now = datetime.now(UTC)
    return [raw(comment_doc(f"{prefix}{u}", u, now - timedelta(minutes=1))) for u in users]
