"""Operator authentication: API tokens, signed session cookies and CSRF tokens.

Tokens are random (256 bits) and shown once; only their SHA-256 is stored, so a leaked
database does not leak tokens. A session cookie names the token it was made from and is
checked against the database on every request, so revoking a token ends its sessions at
once. Cookies and CSRF tokens are HMAC-signed with ``WB_SECRET_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.errors import InvalidInput
from worker.domain.values import utcnow
from worker.services.store import check_actor
from worker.storage.models import AdminTokenRow

TOKEN_PREFIX = "wbt_"
SESSION_TTL = timedelta(hours=8)


class Role(StrEnum):
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    token_id: int
    actor: str
    role: Role

    @property
    def may_act(self) -> bool:
        return self.role is Role.ADMIN


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class TokenService:
    sessions: async_sessionmaker[AsyncSession]

    async def create(self, actor: str, role: str) -> tuple[str, AdminTokenRow]:
        """A new token for ``actor``; the plain token is returned once and never stored."""
        actor = check_actor(actor)
        try:
            parsed_role = Role(role)
        except ValueError:
            raise InvalidInput(f"role must be one of {[r.value for r in Role]}") from None
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = AdminTokenRow(
            actor=actor, role=parsed_role.value, token_hash=hash_token(token), created_at=utcnow()
        )
        async with self.sessions.begin() as session:
            session.add(row)
        return token, row

    async def list(self) -> list[AdminTokenRow]:
        async with self.sessions() as session:
            return list(
                (await session.scalars(select(AdminTokenRow).order_by(AdminTokenRow.id))).all()
            )

    async def revoke(self, token_id: int) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(AdminTokenRow)
                .where(AdminTokenRow.id == token_id, AdminTokenRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def authenticate(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        return await self._principal(AdminTokenRow.token_hash == hash_token(token))

    async def by_id(self, token_id: int) -> Principal | None:
        return await self._principal(AdminTokenRow.id == token_id)

    async def _principal(self, condition: object) -> Principal | None:
        async with self.sessions() as session:
            row = (
                await session.scalars(
                    select(AdminTokenRow).where(condition, AdminTokenRow.revoked_at.is_(None))  # type: ignore[arg-type]
                )
            ).one_or_none()
        return Principal(row.id, row.actor, Role(row.role)) if row else None


@dataclass(frozen=True)
class Signer:
    """HMAC signing of small JSON documents (session cookies) and CSRF tokens."""

    key: bytes

    def _mac(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, data, hashlib.sha256).digest()).decode()

    def session_cookie(self, token_id: int, now: datetime) -> str:
        body = {
            "tid": token_id,
            "exp": int((now + SESSION_TTL).timestamp()),
            "nonce": secrets.token_urlsafe(8),
        }
        data = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{data.decode()}.{self._mac(data)}"

    def read_session(self, cookie: str, now: datetime) -> int | None:
        """The token id of a valid, unexpired cookie, else None."""
        data, _, mac = cookie.partition(".")
        if not data or not hmac.compare_digest(mac, self._mac(data.encode())):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(data.encode()))
            token_id, expires = int(body["tid"]), int(body["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        return token_id if expires > now.timestamp() else None

    def csrf_token(self, cookie: str) -> str:
        """Bound to the session cookie: a form from another session does not validate."""
        return self._mac(b"csrf:" + cookie.encode())

    def check_csrf(self, cookie: str, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token(cookie), presented)
