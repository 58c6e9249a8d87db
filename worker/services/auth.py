"""Operator authentication: API tokens, signed session cookies and CSRF tokens.

Tokens are random (256 bits) and shown once; only their SHA-256 is stored, so a leaked
database does not leak tokens. A session lives in the database (``admin_sessions``) and its
cookie is a signed random id checked on every request, so logging out or revoking a token
ends its sessions at once, wherever a cookie was copied. Cookies and CSRF tokens are
HMAC-signed with ``WB_SECRET_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.errors import InvalidInput
from worker.domain.values import utcnow
from worker.services.checks import check_actor
from worker.storage.models import AdminSessionRow, AdminTokenRow

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
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200 or not _ascii(token):
            return None
        return await self._principal(AdminTokenRow.token_hash == hash_token(token))

    async def _principal(self, condition: object) -> Principal | None:
        async with self.sessions() as session:
            row = (
                await session.scalars(
                    select(AdminTokenRow).where(condition, AdminTokenRow.revoked_at.is_(None))  # type: ignore[arg-type]
                )
            ).one_or_none()
        return Principal(row.id, row.actor, Role(row.role)) if row else None


def _ascii(value: str) -> bool:
    """Cookies, tokens and form fields reach us as text a client chose: anything outside
    printable ASCII cannot be ours (and ``hmac.compare_digest`` refuses non-ASCII str)."""
    return value.isascii() and value.isprintable()


@dataclass(frozen=True)
class Signer:
    """HMAC signing of session cookies and CSRF tokens with ``WB_SECRET_KEY``."""

    key: bytes

    def _mac(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, data, hashlib.sha256).digest()).decode()

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(value.encode())}"

    def unsign(self, signed: str) -> str | None:
        """The value of an intact signature, else None (never raises on hostile text)."""
        value, _, mac = signed.rpartition(".")
        if (
            not value
            or not _ascii(signed)
            or not hmac.compare_digest(mac, self._mac(value.encode()))
        ):
            return None
        return value

    def csrf_token(self, cookie: str) -> str:
        """Bound to a cookie (the session, or the login form's): a form from another
        session does not validate."""
        return self._mac(b"csrf:" + cookie.encode("utf-8", "surrogatepass"))

    def check_csrf(self, cookie: str, presented: str) -> bool:
        return (
            bool(cookie)
            and bool(presented)
            and _ascii(cookie)
            and _ascii(presented)
            and hmac.compare_digest(self.csrf_token(cookie), presented)
        )


@dataclass
class SessionService:
    """Panel sessions stored server-side: the cookie is a signed random id, the table holds
    its hash. A session ends at logout, at expiry, or when its token is revoked."""

    sessions: async_sessionmaker[AsyncSession]
    signer: Signer

    async def open(self, principal: Principal, now: datetime) -> str:
        session_id = secrets.token_urlsafe(32)
        async with self.sessions.begin() as session:
            await session.execute(delete(AdminSessionRow).where(AdminSessionRow.expires_at <= now))
            session.add(
                AdminSessionRow(
                    session_hash=hash_token(session_id),
                    token_id=principal.token_id,
                    created_at=now,
                    expires_at=now + SESSION_TTL,
                )
            )
        return self.signer.sign(session_id)

    async def principal(self, cookie: str, now: datetime) -> Principal | None:
        session_id = self.signer.unsign(cookie)
        if session_id is None:
            return None
        query = (
            select(AdminTokenRow)
            .join(AdminSessionRow, AdminSessionRow.token_id == AdminTokenRow.id)
            .where(
                AdminSessionRow.session_hash == hash_token(session_id),
                AdminSessionRow.expires_at > now,
                AdminTokenRow.revoked_at.is_(None),
            )
        )
        async with self.sessions() as session:
            row = (await session.scalars(query)).one_or_none()
        return Principal(row.id, row.actor, Role(row.role)) if row else None

    async def close(self, cookie: str) -> None:
        session_id = self.signer.unsign(cookie)
        if session_id is None:
            return
        async with self.sessions.begin() as session:
            await session.execute(
                delete(AdminSessionRow).where(
                    AdminSessionRow.session_hash == hash_token(session_id)
                )
            )
