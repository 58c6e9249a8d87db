"""The admin panel (HTML) and its JSON API, on the worker's Faust web server.

Thin adapters over ``AdminService`` / ``HighlightStore``: parse and check the request,
authenticate, authorise (viewer looks, admin acts), call the service, render. Every
state change goes through the store, which writes the audit row in the same transaction.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import faust
from aiohttp import web

from worker.domain.errors import InvalidInput, StoreError, UnknownUser
from worker.domain.values import utcnow
from worker.runtime.process import Runtime
from worker.services.admin import AdminService
from worker.services.auth import Principal, Signer, TokenService
from worker.web import pages

log = logging.getLogger(__name__)

COOKIE = "wb_admin_session"
MAX_BODY = 64 * 1024
STATIC = Path(__file__).resolve().parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ACTIONS = ("regenerate", "override", "clear-override", "mark-stale")


class Refused(Exception):
    """A request refused with an HTTP status and a one-line reason."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, headers=SECURITY_HEADERS, dumps=lambda d: json.dumps(d, default=str)
    )


def html_response(
    body: str, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def parse_user_id(raw: str) -> int:
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) < 2**63:
        return int(raw)
    raise Refused(
        400, "bad_user_id", f"user id must be a positive 64-bit integer, got {raw[:40]!r}"
    )


def safe_next(url: str | None) -> str:
    """Only redirect within the panel (no open redirect to another site)."""
    if url and url.startswith("/admin/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/admin/"


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Refused(413, "too_large", f"request body over {MAX_BODY} bytes")
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Refused(415, "unsupported_media_type", "expected a form")
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Refused(413, "too_large", f"request body over {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Refused(413, "too_large", f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise Refused(415, "unsupported_media_type", "send application/json")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refused(400, "bad_json", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "bad_json", "body must be a JSON object")
    return data


def text_field(data: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise Refused(400, "missing_field", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise Refused(400, "bad_field", f"{name} must be a string")
    if len(value) > 10_000:
        raise Refused(400, "bad_field", f"{name} is too long")
    return value


class AdminApp:
    """Shared state of the admin views: services, signer, and the one action dispatcher."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.tokens = TokenService(rt.sessions)
        self.service = AdminService(rt.store, rt.settings.serve_stale_for)
        key = rt.settings.secret_key or secrets.token_hex(32)
        if not rt.settings.secret_key:
            log.warning("WB_SECRET_KEY is not set: admin sessions end when this worker stops")
        self.signer = Signer(key.encode())
        self.secure_cookie = rt.settings.admin_secure_cookie

    async def session_principal(self, request: web.Request) -> tuple[Principal | None, str]:
        cookie = request.cookies.get(COOKIE, "")
        token_id = self.signer.read_session(cookie, utcnow()) if cookie else None
        principal = await self.tokens.by_id(token_id) if token_id is not None else None
        return principal, cookie if principal else ""

    async def bearer_principal(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "unauthenticated", "send Authorization: Bearer <token>")
        principal = await self.tokens.authenticate(token.strip())
        if principal is None:
            raise Refused(401, "unauthenticated", "unknown or revoked token")
        return principal

    async def act(
        self, principal: Principal, user_id: int, action: str, data: dict[str, Any]
    ) -> None:
        """Perform one admin action as ``principal`` (audited by the store)."""
        if not principal.may_act:
            raise Refused(403, "forbidden", f"role {principal.role.value} may not {action}")
        store, actor, note = self.rt.store, principal.actor, text_field(data, "note")
        if action == "regenerate":
            await store.regenerate(user_id, actor, note)
        elif action == "override":
            await store.set_manual_override(
                user_id, text_field(data, "text", True) or "", actor, note
            )
        elif action == "clear-override":
            await store.clear_manual_override(user_id, actor, note)
        elif action == "mark-stale":
            reason = text_field(data, "reason", True)
            await store.mark_stale(user_id, "manual", actor=actor, note=reason)
        else:
            raise Refused(404, "not_found", f"no action {action!r}")
        self.rt.relay_wakeup.set()


def refusals_as_json(handler: Callable[..., Awaitable[web.StreamResponse]]) -> Callable[..., Any]:
    """Turn refusals and store errors into 4xx JSON, and anything else into a JSON 500."""

    async def wrapped(view: Any, request: web.Request, **kwargs: Any) -> web.StreamResponse:
        try:
            return await handler(view, request, **kwargs)
        except Refused as exc:
            return json_response({"error": exc.error, "reason": exc.reason}, exc.status)
        except UnknownUser as exc:
            return json_response({"error": "not_found", "reason": str(exc)}, 404)
        except (InvalidInput, StoreError) as exc:
            return json_response({"error": "invalid", "reason": str(exc)}, 400)
        except web.HTTPException as exc:
            return json_response(
                {"error": exc.reason.lower().replace(" ", "_"), "reason": exc.text or exc.reason},
                exc.status,
            )
        except Exception:
            log.exception("admin request failed: %s %s", request.method, request.path)
            return json_response({"error": "internal", "reason": "internal error (logged)"}, 500)

    return wrapped


def register_admin(app: faust.App, rt: Runtime) -> AdminApp:
    admin = AdminApp(rt)

    async def html_principal(request: web.Request, *, act: bool) -> tuple[Principal, str]:
        principal, cookie = await admin.session_principal(request)
        if principal is None:
            raise web.HTTPSeeOther(
                f"/admin/login?next={quote(request.path_qs)}", headers=SECURITY_HEADERS
            )
        if act and not principal.may_act:
            raise Refused(403, "forbidden", f"role {principal.role.value} may only look")
        return principal, cookie

    def html_refusal(
        exc: Refused, principal: Principal | None = None, csrf: str = ""
    ) -> web.Response:
        return html_response(
            pages.message_page(
                exc.error.replace("_", " ").capitalize(), exc.reason, principal, csrf
            ),
            exc.status,
        )

    @app.page("/admin/static/admin.css")  # type: ignore[arg-type]
    async def css(view: Any, request: web.Request) -> web.Response:
        return web.Response(
            text=(STATIC / "admin.css").read_text(),
            content_type="text/css",
            headers=SECURITY_HEADERS,
        )

    @app.page("/admin/login")
    class Login(faust.web.View):
        async def get(self, request: web.Request) -> web.Response:
            return html_response(pages.login_page(next_url=safe_next(request.query.get("next"))))

        async def post(self, request: web.Request) -> web.Response:
            try:
                form = await read_form(request)
            except Refused as exc:
                return html_refusal(exc)
            principal = await admin.tokens.authenticate(form.get("token", "").strip())
            if principal is None:
                return html_response(
                    pages.login_page("Unknown or revoked token.", safe_next(form.get("next"))), 401
                )
            response = see_other(safe_next(form.get("next")))
            response.set_cookie(
                COOKIE,
                admin.signer.session_cookie(principal.token_id, utcnow()),
                httponly=True,
                samesite="Strict",
                path="/admin",
                secure=admin.secure_cookie,
                max_age=8 * 3600,
            )
            return response

    @app.page("/admin/logout")
    class Logout(faust.web.View):
        async def post(self, request: web.Request) -> web.Response:
            principal, cookie = await admin.session_principal(request)
            form = await read_form(request) if principal else {}
            if principal is not None and not admin.signer.check_csrf(cookie, form.get("csrf", "")):
                return html_refusal(Refused(403, "csrf", "missing or stale form token"))
            response = see_other("/admin/login")
            response.del_cookie(COOKIE, path="/admin")
            return response

    @app.page("/admin/")
    class Index(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            principal, cookie = await html_principal(request, act=False)
            csrf = admin.signer.csrf_token(cookie)
            wanted = request.query.get("user_id")
            if wanted is not None:
                try:
                    return see_other(f"/admin/profiles/{parse_user_id(wanted.strip())}/glaze")
                except Refused as exc:
                    return html_response(
                        pages.index_page(await admin.service.index(), principal, csrf, exc.reason),
                        400,
                    )
            return html_response(pages.index_page(await admin.service.index(), principal, csrf))

    @app.page("/admin/profiles/{user_id}/glaze")
    class Glaze(faust.web.View):
        async def get(self, request: web.Request, user_id: str) -> web.StreamResponse:
            principal, cookie = await html_principal(request, act=False)
            csrf = admin.signer.csrf_token(cookie)
            try:
                doc = await admin.service.profile(parse_user_id(user_id))
            except Refused as exc:
                return html_refusal(exc, principal, csrf)
            return html_response(pages.glaze_page(doc, principal, csrf))

    @app.page("/admin/profiles/{user_id}/{action}")
    class Act(faust.web.View):
        async def post(self, request: web.Request, user_id: str, action: str) -> web.StreamResponse:
            try:
                principal, cookie = await html_principal(request, act=True)
            except Refused as exc:
                return html_refusal(exc)
            csrf = admin.signer.csrf_token(cookie)
            try:
                uid = parse_user_id(user_id)
                if action not in ACTIONS:
                    raise Refused(404, "not_found", f"no action {action!r}")
                form = await read_form(request)
                if not admin.signer.check_csrf(cookie, form.get("csrf", "")):
                    raise Refused(403, "csrf", "missing or stale form token: reload the page")
                await admin.act(principal, uid, action, form)
            except Refused as exc:
                return html_refusal(exc, principal, csrf)
            except (StoreError, InvalidInput) as exc:
                doc = await admin.service.profile(int(user_id))
                return html_response(pages.glaze_page(doc, principal, csrf, str(exc)), 400)
            return see_other(f"/admin/profiles/{uid}/glaze")

    @app.page("/admin/api/profiles/{user_id}")
    class ApiProfile(faust.web.View):
        @refusals_as_json
        async def get(self, request: web.Request, user_id: str) -> web.StreamResponse:
            await admin.bearer_principal(request)
            return json_response(await admin.service.profile(parse_user_id(user_id)))

    @app.page("/admin/api/profiles/{user_id}/audit")
    class ApiAudit(faust.web.View):
        @refusals_as_json
        async def get(self, request: web.Request, user_id: str) -> web.StreamResponse:
            await admin.bearer_principal(request)
            return json_response({"entries": await admin.service.audit(parse_user_id(user_id))})

    @app.page("/admin/api/profiles/{user_id}/{action}")
    class ApiAct(faust.web.View):
        @refusals_as_json
        async def post(self, request: web.Request, user_id: str, action: str) -> web.StreamResponse:
            principal = await admin.bearer_principal(request)
            uid = parse_user_id(user_id)
            if action not in ACTIONS:
                raise Refused(404, "not_found", f"no action {action!r}")
            await admin.act(principal, uid, action, await read_json(request))
            return json_response(await admin.service.profile(uid))

    return admin
