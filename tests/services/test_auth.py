"""Tokens, session cookies and CSRF tokens (both databases for the token store)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.clock import T0
from worker.domain.errors import InvalidInput
from worker.services.auth import Role, SessionService, Signer, TokenService, hash_token
from worker.storage.models import AdminTokenRow


async def test_token_is_shown_once_and_only_its_hash_is_stored(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tokens = TokenService(sessions)
    token, row = await tokens.create("alice", "admin")
    async with sessions() as session:
        stored = (await session.scalars(select(AdminTokenRow))).one()
    assert stored.token_hash == hash_token(token)
    assert token not in repr(stored.__dict__)
    principal = await tokens.authenticate(token)
    assert principal is not None
    assert (principal.actor, principal.role, principal.token_id) == ("alice", Role.ADMIN, row.id)
    assert await tokens.authenticate(token + "x") is None
    assert await tokens.authenticate("not-a-token") is None


async def test_revoked_token_stops_working_at_once_and_ends_its_sessions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tokens, panel = TokenService(sessions), SessionService(sessions, Signer(b"k" * 32))
    token, row = await tokens.create("bob", "viewer")
    principal = await tokens.authenticate(token)
    assert principal is not None
    cookie = await panel.open(principal, T0)
    assert await panel.principal(cookie, T0) == principal
    assert await tokens.revoke(row.id) is True
    assert await tokens.revoke(row.id) is False
    assert await tokens.authenticate(token) is None
    assert await panel.principal(cookie, T0) is None


@pytest.mark.parametrize(("actor", "role"), [("", "admin"), ("x", "root"), ("x" * 201, "viewer")])
async def test_bad_token_requests_are_refused(
    sessions: async_sessionmaker[AsyncSession], actor: str, role: str
) -> None:
    with pytest.raises(InvalidInput):
        await TokenService(sessions).create(actor, role)


async def test_session_is_signed_expires_and_ends_at_logout_wherever_copied(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    signer = Signer(b"k" * 32)
    panel = SessionService(sessions, signer)
    token, _ = await TokenService(sessions).create("carol", "admin")
    principal = await TokenService(sessions).authenticate(token)
    assert principal is not None
    cookie, other = await panel.open(principal, T0), await panel.open(principal, T0)
    assert await panel.principal(cookie, T0) == principal
    assert await panel.principal(cookie, T0 + timedelta(hours=9)) is None
    assert await SessionService(sessions, Signer(b"other" * 8)).principal(cookie, T0) is None
    value, _, mac = cookie.rpartition(".")
    assert await panel.principal(value[:-2] + "AA." + mac, T0) is None
    assert await panel.principal("garbage", T0) is None
    await panel.close(cookie)  # logout: the copied cookie is dead too
    assert await panel.principal(cookie, T0) is None
    assert await panel.principal(other, T0) == principal  # another session lives on


@pytest.mark.parametrize(
    "hostile", ["é", "\udcff", "\x00", "a.\u00e9", "x" * 5000, ".", "\u2028.abc"]
)
async def test_hostile_cookie_token_or_csrf_text_is_refused_without_raising(
    sessions: async_sessionmaker[AsyncSession], hostile: str
) -> None:
    signer = Signer(b"k" * 32)
    assert await SessionService(sessions, signer).principal(hostile, T0) is None
    assert await TokenService(sessions).authenticate("wbt_" + hostile) is None
    assert not signer.check_csrf(signer.sign("s"), hostile)
    if not (hostile.isascii() and hostile.isprintable()):
        assert not signer.check_csrf(hostile, signer.csrf_token(hostile))


def test_csrf_token_is_bound_to_the_session() -> None:
    signer = Signer(b"k" * 32)
    one, two = signer.sign("one"), signer.sign("two")
    assert signer.check_csrf(one, signer.csrf_token(one))
    assert not signer.check_csrf(two, signer.csrf_token(one))
    assert not signer.check_csrf(one, "")
