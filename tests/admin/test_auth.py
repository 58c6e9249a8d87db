"""Tokens, session cookies and CSRF tokens (both databases for the token store)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import T0
from worker.domain.errors import InvalidInput
from worker.services.auth import Role, Signer, TokenService, hash_token
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


async def test_revoked_token_stops_working_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tokens = TokenService(sessions)
    token, row = await tokens.create("bob", "viewer")
    assert await tokens.by_id(row.id) is not None
    assert await tokens.revoke(row.id) is True
    assert await tokens.revoke(row.id) is False
    assert await tokens.authenticate(token) is None
    assert await tokens.by_id(row.id) is None


@pytest.mark.parametrize(("actor", "role"), [("", "admin"), ("x", "root"), ("x" * 201, "viewer")])
async def test_bad_token_requests_are_refused(
    sessions: async_sessionmaker[AsyncSession], actor: str, role: str
) -> None:
    with pytest.raises(InvalidInput):
        await TokenService(sessions).create(actor, role)


def test_session_cookie_is_signed_and_expires() -> None:
    signer = Signer(b"k" * 32)
    cookie = signer.session_cookie(7, T0)
    assert signer.read_session(cookie, T0) == 7
    assert signer.read_session(cookie, T0 + timedelta(hours=9)) is None
    assert Signer(b"other" * 8).read_session(cookie, T0) is None
    data, _, mac = cookie.partition(".")
    assert signer.read_session(data[:-2] + "AA." + mac, T0) is None
    assert signer.read_session("garbage", T0) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    signer = Signer(b"k" * 32)
    one, two = signer.session_cookie(1, T0), signer.session_cookie(1, T0)
    assert signer.check_csrf(one, signer.csrf_token(one))
    assert not signer.check_csrf(two, signer.csrf_token(one))
    assert not signer.check_csrf(one, "")
