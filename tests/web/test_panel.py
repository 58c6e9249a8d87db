"""The admin panel and API over HTTP against a live worker: permissions, CSRF, escaping,
audit diffs, and hostile requests (always a 4xx with a JSON reason, never a 500)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.factories import result
from tests.helpers.live import WorkerProcess, eventually
from worker.services.auth import TokenService
from worker.services.store import HighlightStore
from worker.storage.models import AdminSessionRow
from worker.web.responses import SECURITY_HEADERS

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
NOW = datetime.now(UTC).replace(microsecond=0)
API_ACTIONS = {
    "regenerate": {},
    "override": {"text": "Locked text"},
    "clear-override": {},
    "mark-stale": {"reason": "checking"},
}


@pytest.fixture(scope="module")
async def tokens(live_sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    service = TokenService(live_sessions)
    out = {}
    for name, role in (("admin", "admin"), ("viewer", "viewer"), ("revoked", "admin")):
        out[name], row = await service.create(f"{name}-user", role)
        if name == "revoked":
            await service.revoke(row.id)
    return out


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = dict(kwargs.pop("headers", {}))  # never the caller's dict: it is reused
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    async with http.request(method, url, headers=headers, allow_redirects=False, **kwargs) as r:
        body: Any = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r


async def login(
    http: aiohttp.ClientSession, worker: WorkerProcess, token: str, expect: int = 303
) -> None:
    csrf = await csrf_of(http, f"{worker.url}/admin/login")
    form = {"token": token, "next": "/admin/", "csrf": csrf}
    status, _, resp = await call(http, "POST", f"{worker.url}/admin/login", data=form)
    assert status == expect, status
    if expect != 303:
        return
    cookie = resp.cookies["wb_admin_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"


async def csrf_of(http: aiohttp.ClientSession, url: str) -> str:
    _, page, _ = await call(http, "GET", url)
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no csrf field on the page"
    return match.group(1)


@pytest.mark.parametrize("who", ["none", "revoked", "viewer", "admin"])
async def test_api_permission_matrix(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
    who: str,
) -> None:
    user = {"none": 2001, "revoked": 2002, "viewer": 2003, "admin": 2004}[who]
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "s")
    token = tokens.get(who)
    base = f"{worker.url}/admin/api/profiles/{user}"
    expect_read = {"none": 401, "revoked": 401, "viewer": 200, "admin": 200}[who]
    expect_act = {"none": 401, "revoked": 401, "viewer": 403, "admin": 200}[who]
    for url in (base, f"{base}/audit"):
        status, body, _ = await call(http, "GET", url, token)
        assert status == expect_read, (url, body)
        if status != 200:
            assert body["error"] and body["reason"]
    for action in ("regenerate", "override", "mark-stale", "clear-override"):
        status, body, _ = await call(
            http, "POST", f"{base}/{action}", token, json=API_ACTIONS[action]
        )
        assert status == expect_act, (action, body)
    row = await live_store.get(user)
    assert row is not None
    assert row.generation == (2 if who == "admin" else 0)


@pytest.mark.parametrize("who", ["none", "revoked", "viewer", "admin"])
async def test_panel_permission_matrix(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
    who: str,
) -> None:
    user = {"none": 2011, "revoked": 2012, "viewer": 2013, "admin": 2014}[who]
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "s")
    glaze = f"{worker.url}/admin/profiles/{user}/glaze"
    if who == "revoked":
        await login(http, worker, tokens["revoked"], expect=401)
    elif who != "none":
        await login(http, worker, tokens[who])
    status, page, resp = await call(http, "GET", glaze)
    if who in ("none", "revoked"):
        assert status == 303
        assert resp.headers["Location"].startswith("/admin/login?next=")
        status, _, _ = await call(
            http, "POST", f"{worker.url}/admin/profiles/{user}/regenerate", data={"csrf": "x"}
        )
        assert status == 303
        return
    assert status == 200
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    csrf = await csrf_of(http, glaze)
    status, page, resp = await call(
        http,
        "POST",
        f"{worker.url}/admin/profiles/{user}/override",
        data={"csrf": csrf, "text": "Panel text"},
    )
    row = await live_store.get(user)
    assert row is not None
    if who == "viewer":
        assert status == 403
        assert not row.manual_override
    else:
        assert status == 303
        assert resp.headers["Location"] == f"/admin/profiles/{user}/glaze"
        assert row.override_text == "Panel text"


async def test_revoking_a_token_ends_its_panel_session(
    worker: WorkerProcess,
    live_sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
) -> None:
    service = TokenService(live_sessions)
    token, row = await service.create("temp", "admin")
    await login(http, worker, token)
    assert (await call(http, "GET", f"{worker.url}/admin/"))[0] == 200
    await service.revoke(row.id)
    assert (await call(http, "GET", f"{worker.url}/admin/"))[0] == 303


async def test_forms_without_a_valid_csrf_token_are_refused(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
) -> None:
    user = 2021
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "s")
    await login(http, worker, tokens["admin"])
    for data in ({}, {"csrf": ""}, {"csrf": "forged"}):
        status, _, _ = await call(
            http, "POST", f"{worker.url}/admin/profiles/{user}/regenerate", data=data
        )
        assert status == 403
    row = await live_store.get(user)
    assert row is not None
    assert row.generation == 0
    status, _, _ = await call(http, "POST", f"{worker.url}/admin/logout", data={"csrf": "forged"})
    assert status == 403


async def test_hostile_text_is_shown_as_text(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
) -> None:
    user = 2031
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await live_store.upsert_auto(
        result(user, generated_at=NOW - timedelta(hours=1), bio=evil, quotes=[evil]), "s"
    )
    await live_store.set_manual_override(user + 1, evil, actor='"><script>')
    await login(http, worker, tokens["viewer"])
    for uid in (user, user + 1):
        _, page, _ = await call(http, "GET", f"{worker.url}/admin/profiles/{uid}/glaze")
        assert "<script>" not in page
        assert "<img" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


async def test_audit_rows_carry_correct_diffs_for_each_action(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
) -> None:
    user = 2041
    await live_store.upsert_auto(result(user, generated_at=NOW - timedelta(hours=1)), "s")
    base = f"{worker.url}/admin/api/profiles/{user}"
    admin = tokens["admin"]
    for action in ("override", "mark-stale", "regenerate", "clear-override"):
        status, body, _ = await call(
            http,
            "POST",
            f"{base}/{action}",
            admin,
            json={**API_ACTIONS[action], "note": f"n-{action}"},
        )
        assert status == 200, body
    _, body, _ = await call(http, "GET", f"{base}/audit", admin)
    entries = list(reversed(body["entries"]))
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("set_override", "admin-user"),
        ("mark_stale", "admin-user"),
        ("regenerate", "admin-user"),
        ("clear_override", "admin-user"),
    ]
    override, stale, regen, clear = (e["diff"] for e in entries)
    assert override == {
        "manual_override": {"old": False, "new": True},
        "override_text": {"old": None, "new": "Locked text"},
    }
    assert stale["is_stale"] == {"old": False, "new": True}
    assert stale["generation"] == {"old": 0, "new": 1}
    assert stale["stale_reason"] == {"old": None, "new": "manual"}
    assert entries[1]["reason"] == "checking"
    assert regen["generation"] == {"old": 1, "new": 2}
    assert regen["regen_request_id"]["old"] is None
    assert regen["regen_request_id"]["new"]
    assert clear["manual_override"] == {"old": True, "new": False}
    assert entries[0]["reason"] == "n-override"


HOSTILE = [
    ("GET", "/admin/api/profiles/abc", None, 400),
    ("GET", "/admin/api/profiles/-1", None, 400),
    ("GET", "/admin/api/profiles/99999999999999999999999", None, 400),
    ("GET", "/admin/api/profiles/%2e%2e%2fetc", None, 400),
    ("GET", "/admin/api/profiles/1/../../metrics", None, 404),
    (
        "POST",
        "/admin/api/profiles/1/override",
        {"data": b"x" * 200_000, "headers": {"Content-Type": "application/json"}},
        413,
    ),
    (
        "POST",
        "/admin/api/profiles/1/override",
        {"data": b"<xml/>", "headers": {"Content-Type": "text/xml"}},
        415,
    ),
    (
        "POST",
        "/admin/api/profiles/1/override",
        {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
    ),
    ("POST", "/admin/api/profiles/1/override", {"json": [1, 2]}, 400),
    ("POST", "/admin/api/profiles/1/override", {"json": {"text": 5}}, 400),
    ("POST", "/admin/api/profiles/1/override", {"json": {"text": "  "}}, 400),
    ("POST", "/admin/api/profiles/1/override", {"json": {"text": "x" * 6000}}, 400),
    ("POST", "/admin/api/profiles/1/mark-stale", {"json": {}}, 400),
    ("POST", "/admin/api/profiles/1/explode", {"json": {}}, 404),
    ("POST", "/admin/api/profiles/424242/clear-override", {"json": {}}, 404),
    ("DELETE", "/admin/api/profiles/1", None, 405),
    ("GET", "/profiles/1e9/highlight", None, 400),
    ("GET", "/nowhere", None, 404),
    ("POST", "/admin/api/profiles/1/mark-stale", {"json": {"reason": "a\x00b"}}, 400),
    ("POST", "/admin/api/profiles/1/override", {"json": {"text": "ok", "note": "\x00"}}, 400),
    (
        "POST",
        "/admin/api/profiles/1/override",
        {"data": b'{"text": "\\ud800"}', "headers": {"Content-Type": "application/json"}},
        400,
    ),
    ("GET", "/admin/api/profiles/1", {"headers": {"Authorization": "Bearer wbt_\u00e9"}}, 401),
    # Faust's own pages are not served on the worker's port.
    ("GET", "/", None, 404),
    ("GET", "/router/", None, 404),
    ("GET", "/table/", None, 404),
    ("GET", "/graph/", None, 404),
]


@pytest.mark.parametrize(
    ("method", "path", "extra", "expected"),
    HOSTILE,
    ids=[f"{m} {p[:40]} {e}" for m, p, _, e in HOSTILE],
)
async def test_hostile_requests_get_a_4xx_json_reason(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    extra: dict[str, Any] | None,
    expected: int,
) -> None:
    status, body, resp = await call(
        http, method, f"{worker.url}{path}", tokens["admin"], **(extra or {})
    )
    assert status == expected, body
    assert resp.content_type == "application/json"
    assert body["error"]
    assert body["reason"]


async def raw_request(worker: WorkerProcess, request: bytes) -> tuple[int, bytes]:
    """Send bytes a client library would refuse to build (invalid UTF-8 in headers)."""
    host, port = worker.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), head


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Authorization: Bearer wbt_\xc3\xa9\xff\xfe", 401),
        (b"Authorization: Bearer \xff", 401),
        (b"Cookie: wb_admin_session=\xff\xfe.\xc3\xa9", 401),
    ],
)
async def test_invalid_utf8_or_non_ascii_credentials_are_a_4xx_not_a_500(
    worker: WorkerProcess, header: bytes, expected: int
) -> None:
    request = b"GET /admin/api/profiles/1 HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
    status, head = await raw_request(worker, request)
    assert status == expected, head
    assert b"X-Content-Type-Options: nosniff" in head


async def test_hostile_cookie_and_form_text_on_the_panel_are_refused_not_500(
    worker: WorkerProcess, tokens: dict[str, str], http: aiohttp.ClientSession
) -> None:
    bad_cookie = b"GET /admin/ HTTP/1.1\r\nHost: x\r\nCookie: wb_admin_session=\xff.\x80\r\n\r\n"
    assert (await raw_request(worker, bad_cookie))[0] == 303  # no session: to the login page
    await login(http, worker, tokens["admin"])
    url = f"{worker.url}/admin/profiles/1/mark-stale"
    csrf = await csrf_of(http, f"{worker.url}/admin/")
    for form in (
        {"csrf": "\u00e9\u00e9"},
        {"csrf": csrf, "reason": "a\x00b"},
        "csrf=%FF%FE&reason=x",
        f"csrf={csrf}&reason=%ED%A0%80",
    ):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, body, _ = await call(http, "POST", url, data=form, headers=headers)
        assert 400 <= status < 500, (form, status, body)
    broken_part = b'--x\r\nContent-Disposition: form-data; name="a"\n\xff\r\n--x--\r\n'
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    status, _, _ = await call(http, "POST", url, data=broken_part, headers=headers)
    assert status == 400  # a malformed multipart part (found by the HTTP fuzzer)
    status, _, _ = await call(http, "POST", f"{worker.url}/admin/logout", json={"csrf": csrf})
    assert status == 415  # logout with a body that is not a form


async def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_dies(
    worker: WorkerProcess, tokens: dict[str, str], http: aiohttp.ClientSession
) -> None:
    await login(http, worker, tokens["viewer"])
    copied = {c.key: c.value for c in http.cookie_jar}["wb_admin_session"]
    csrf = await csrf_of(http, f"{worker.url}/admin/")
    status, _, _ = await call(http, "POST", f"{worker.url}/admin/logout", data={"csrf": csrf})
    assert status == 303
    async with aiohttp.ClientSession() as thief:
        status, _, resp = await call(
            thief, "GET", f"{worker.url}/admin/", headers={"Cookie": f"wb_admin_session={copied}"}
        )
    assert status == 303
    assert resp.headers["Location"].startswith("/admin/login")


async def test_login_without_the_form_token_of_this_browser_is_refused(
    worker: WorkerProcess, tokens: dict[str, str], http: aiohttp.ClientSession
) -> None:
    url = f"{worker.url}/admin/login"
    for form in ({"token": tokens["admin"]}, {"token": tokens["admin"], "csrf": "forged"}):
        status, page, resp = await call(http, "POST", url, data=form)
        assert status == 403, page
        assert "wb_admin_session" not in resp.cookies
    async with aiohttp.ClientSession() as other:  # a token from another browser's form
        csrf = await csrf_of(other, url)
    status, _, _ = await call(http, "POST", url, data={"token": tokens["admin"], "csrf": csrf})
    assert status == 403


@pytest.mark.parametrize(
    "next_url", ["/admin/profiles\r\nSet-Cookie: x=1", "/admin/\n", "/admin/\x7f", "/admin/\u2028"]
)
async def test_a_next_url_with_control_characters_logs_in_to_the_overview(
    worker: WorkerProcess,
    live_sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
    next_url: str,
) -> None:
    """CR/LF in ``next=`` made aiohttp refuse the redirect (no answer at all) after the
    login had opened a session no cookie held; now it is the overview, one session."""
    token, row = await TokenService(live_sessions).create("next-user", "viewer")
    csrf = await csrf_of(http, f"{worker.url}/admin/login")
    form = {"token": token, "next": next_url, "csrf": csrf}
    status, _, resp = await call(http, "POST", f"{worker.url}/admin/login", data=form)
    assert (status, resp.headers["Location"]) == (303, "/admin/")
    async with live_sessions() as session:
        held = select(func.count()).where(AdminSessionRow.token_id == row.id)
        assert await session.scalar(held) == 1
    status, _, _ = await call(http, "GET", f"{worker.url}/admin/")
    assert status == 200  # the cookie holds that one session


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/nowhere"),
        ("DELETE", "/healthz"),
        ("GET", "/admin/login"),
        ("GET", "/profiles/1/highlight"),
        ("GET", "/"),
    ],
)
async def test_every_response_of_the_port_carries_the_security_headers(
    worker: WorkerProcess, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    _, _, resp = await call(http, method, f"{worker.url}{path}")
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (path, name)


# The overview, the profile list and bulk regenerate.

PANEL_PAGES = ("/admin/", "/admin/profiles", "/admin/profiles?state=stale&sort=change")


async def _seed_model(live_store: HighlightStore, model: str, users: range) -> None:
    for user in users:
        await live_store.upsert_auto(
            result(user, generated_at=NOW - timedelta(hours=1), llm_model=model), f"s{user}"
        )


async def _bulk_marked(live_sessions: async_sessionmaker[AsyncSession], users: range) -> int:
    from sqlalchemy import func, select

    from worker.storage.models import AuditRow

    async with live_sessions() as session:
        stmt = select(func.count()).where(
            AuditRow.action == "bulk_regenerate", AuditRow.user_id.in_(list(users))
        )
        return int(await session.scalar(stmt) or 0)


@pytest.mark.parametrize("who", ["none", "revoked", "viewer", "admin"])
async def test_overview_list_and_bulk_permission_matrix(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
    who: str,
) -> None:
    """No session: to the login page, everywhere. A viewer looks (overview, list) but may
    not open the bulk confirmation nor post it. An admin does both, and the rows are marked."""
    users = {"none": range(2201, 2204), "revoked": range(2211, 2214)}.get(who) or {
        "viewer": range(2221, 2224),
        "admin": range(2231, 2234),
    }[who]
    model = f"perm-{who}"
    await _seed_model(live_store, model, users)
    if who == "revoked":
        await login(http, worker, tokens["revoked"], expect=401)
    elif who != "none":
        await login(http, worker, tokens[who])
    bulk = f"{worker.url}/admin/profiles/bulk?model={model}"
    if who in ("none", "revoked"):
        for path in (*PANEL_PAGES, f"/admin/profiles/bulk?model={model}"):
            status, _, resp = await call(http, "GET", f"{worker.url}{path}")
            assert status == 303, path
            assert resp.headers["Location"].startswith("/admin/login?next=")
        form = {"csrf": "x", "model": model, "count": "3"}
        status, _, resp = await call(http, "POST", f"{worker.url}/admin/profiles/bulk", data=form)
        assert status == 303
        assert resp.headers["Location"].startswith("/admin/login")
        assert await _bulk_marked(live_sessions, users) == 0
        return
    for path in PANEL_PAGES:
        status, page, resp = await call(http, "GET", f"{worker.url}{path}")
        assert status == 200, path
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "<script" not in page and "style=" not in page
    csrf = await csrf_of(http, f"{worker.url}/admin/profiles")
    form = {"csrf": csrf, "model": model, "count": "3"}
    status, page, _ = await call(http, "GET", bulk)
    if who == "viewer":
        assert status == 403
        status, _, _ = await call(http, "POST", f"{worker.url}/admin/profiles/bulk", data=form)
        assert status == 403
        assert await _bulk_marked(live_sessions, users) == 0
        return
    assert status == 200
    assert re.search(r'<strong id="bulk-count">3</strong>', page), page
    status, _, resp = await call(http, "POST", f"{worker.url}/admin/profiles/bulk", data=form)
    assert status == 303, resp
    assert resp.headers["Location"] == "/admin/#bulk-jobs"

    async def marked() -> bool:
        return await _bulk_marked(live_sessions, users) == 3

    await eventually(marked, what="bulk regenerate marked the selection")
    row = await live_store.get(users[0])
    assert row is not None and row.is_stale and row.stale_reason == "manual"
    _, overview, _ = await call(http, "GET", f"{worker.url}/admin/")
    assert 'id="bulk-jobs"' in overview and "admin-user" in overview


async def test_bulk_form_needs_this_sessions_token_and_the_confirmed_count(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    users = range(2241, 2243)
    await _seed_model(live_store, "csrf-model", users)
    await login(http, worker, tokens["admin"])
    url = f"{worker.url}/admin/profiles/bulk"
    for csrf in (None, "", "forged"):
        form = {"model": "csrf-model", "count": "2"}
        if csrf is not None:
            form["csrf"] = csrf
        status, _, _ = await call(http, "POST", url, data=form)
        assert status == 403, csrf
    token = await csrf_of(http, f"{url}?model=csrf-model")
    status, page, _ = await call(
        http, "POST", url, data={"csrf": token, "model": "csrf-model", "count": "5"}
    )
    assert status == 409
    assert '<strong id="bulk-count">2</strong>' in page
    for bad in ({"count": "-1"}, {"count": "two"}, {"count": "2", "state": "x"}):
        data = {"csrf": token, "model": "csrf-model", **bad}
        status, _, _ = await call(http, "POST", url, data=data)
        assert status == 400, bad
    assert await _bulk_marked(live_sessions, users) == 0


async def test_hostile_text_in_filters_and_rows_is_shown_as_text(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    live_store: HighlightStore,
) -> None:
    evil = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'
    await live_store.upsert_auto(
        result(2251, generated_at=NOW - timedelta(hours=1), llm_model=evil, source_group=evil),
        "s",
    )
    await live_store.mark_stale(2251, "new_comment")
    await login(http, worker, tokens["admin"])
    from urllib.parse import urlencode

    query = urlencode({"model": evil, "source_group": evil})
    for path in (
        "/admin/",
        "/admin/profiles",
        f"/admin/profiles?{query}",
        f"/admin/profiles/bulk?{query}",
    ):
        status, page, _ = await call(http, "GET", f"{worker.url}{path}")
        assert status == 200, path
        assert "<script>" not in page and "<img" not in page, path
    _, page, _ = await call(http, "GET", f"{worker.url}/admin/profiles?{query}")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'href="/admin/profiles/2251/glaze"' in page  # the filter found the row


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=sleepy", 400),
        ("reason=%3Cscript%3E", 400),
        ("sort=random", 400),
        ("after=garbage", 400),
        ("after=c~2026-01-01T00:00:00~1", 400),
        # valid times with no UTC form: asyncpg overflowed converting them (a 500)
        ("sort=change&after=c~9999-12-31T23:59:59-14:00~1", 400),
        ("after=s~9999-12-31T23:59:59-01:00~1", 400),
        ("sort=change&after=c~0001-01-01T00:00:00%2B01:00~1", 400),
        ("sort=change&after=c~9999-12-31T09:59:59-14:00~1", 200),  # 23:59:59 UTC: in range
        ("model=" + "m" * 300, 400),
        ("model=a%00b", 400),
        ("source_group=%ED%A0%80", 200),  # decoded to U+FFFD by the URL parser: text
        ("model=%FF%FE", 200),
    ],
)
async def test_bad_list_queries_are_a_4xx_page_not_a_500(
    worker: WorkerProcess,
    tokens: dict[str, str],
    http: aiohttp.ClientSession,
    query: str,
    expected: int,
) -> None:
    await login(http, worker, tokens["viewer"])
    status, page, _ = await call(http, "GET", f"{worker.url}/admin/profiles?{query}")
    assert status == expected, (query, page[:300])
    assert "<script>" not in page
    status, _, _ = await call(http, "GET", f"{worker.url}/admin/profiles/bulk?{query}")
    assert status == 403  # a viewer never reaches the confirmation


async def test_overview_api_takes_a_bearer_token(
    worker: WorkerProcess, tokens: dict[str, str], http: aiohttp.ClientSession
) -> None:
    status, body, _ = await call(http, "GET", f"{worker.url}/admin/api/overview")
    assert status == 401
    status, body, _ = await call(http, "GET", f"{worker.url}/admin/api/overview", tokens["viewer"])
    assert status == 200
    assert set(body["counts"]) == {"fresh", "stale", "expired", "overridden", "missing"}
    assert set(body["time_to_fresh"]) == {"last hour", "last day"}
