"""The admin panel (HTML under ``/admin/``) and its JSON API, declared on a Faust blueprint.

Thin adapters over the services: parse and check the request, authenticate (tokens and
sessions: ``worker.services.auth``; ``wb admin`` creates the tokens), authorise (viewer
looks, admin acts), call the service, render. Every state change goes through the store,
which writes the audit row in the same transaction. The views find their shared state
(``Panel``) on the Faust app, where ``register_panel`` puts it.

The glaze page (``/admin/profiles/{id}/glaze``, the seed's name for it, kept so links and
bookmarks hold) is the page of one profile: its profile document
(``worker.services.documents.profile_document``: served answer, stored highlight and
provenance, freshness, queue, override, latest audit entries) and the admin actions.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import faust
from aiohttp import web

from worker.domain.errors import InvalidInput, StoreError
from worker.domain.values import utcnow
from worker.runtime.process import Runtime
from worker.services.audit import AuditReader
from worker.services.auth import SESSION_TTL, Principal, SessionService, Signer, TokenService
from worker.services.cost_preview import CostPreview
from worker.services.documents import profile_document
from worker.services.overview import OverviewService
from worker.services.profile_list import (
    ProfileFilter,
    ProfileListService,
    ProfileQuery,
    SelectionChanged,
)
from worker.web import overview_pages, pages
from worker.web.requests import (
    count_field,
    parse_user_id,
    query_fields,
    read_form,
    read_json,
    safe_next,
    text_field,
)
from worker.web.responses import Refused, html_response, json_response, refusal, see_other

log = logging.getLogger(__name__)

SESSION_COOKIE = "wb_admin_session"
LOGIN_COOKIE = "wb_admin_login"  # binds the login form's CSRF token to this browser
STATIC = Path(__file__).resolve().parent / "static"
ACTIONS = ("regenerate", "override", "clear-override", "mark-stale")
AUDIT_SHOWN = 20  # the latest audit entries in a profile document the panel shows

blueprint = faust.web.Blueprint("admin")


class Panel:
    """Shared state of the admin views: services, signer, and the one action dispatcher."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.tokens = TokenService(rt.sessions)
        self.audit_reader = AuditReader(rt.sessions)
        self.overview = OverviewService(rt.sessions)
        self.profiles = ProfileListService(
            rt.sessions,
            rt.settings.bulk_rate,
            on_requests=rt.relay_wakeup.set,
            policy=rt.regen_policy,
        )
        key = rt.settings.secret_key or secrets.token_hex(32)
        if not rt.settings.secret_key:
            log.warning("WB_SECRET_KEY is not set: admin sessions end when this worker stops")
        self.signer = Signer(key.encode())
        self.panel_sessions = SessionService(rt.sessions, self.signer)
        self.secure_cookie = rt.settings.secure_admin_cookie

    async def profile(self, user_id: int) -> dict[str, Any]:
        """The profile document the glaze page and the API show, with its audit entries."""
        grace = self.rt.settings.serve_stale_for
        return await profile_document(self.rt.store, user_id, grace, audit=AUDIT_SHOWN)

    def set_cookie(self, response: web.Response, name: str, value: str) -> None:
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite="Strict",
            path="/admin",
            secure=self.secure_cookie,
            max_age=int(SESSION_TTL.total_seconds()),
        )

    async def session_principal(self, request: web.Request) -> tuple[Principal | None, str]:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        principal = await self.panel_sessions.principal(cookie, utcnow()) if cookie else None
        return principal, cookie if principal else ""

    async def html_principal(self, request: web.Request, *, act: bool) -> tuple[Principal, str]:
        principal, cookie = await self.session_principal(request)
        if principal is None:
            raise web.HTTPSeeOther(f"/admin/login?next={quote(request.path_qs)}")
        if act and not principal.may_act:
            raise Refused(403, "forbidden", f"role {principal.role.value} may only look")
        return principal, cookie

    async def checked_form(self, request: web.Request, cookie: str) -> dict[str, str]:
        """The posted form, if it carries this session's CSRF token (else a 403)."""
        form = await read_form(request)
        if not self.signer.check_csrf(cookie, form.get("csrf", "")):
            raise Refused(403, "csrf", "missing or stale form token: reload the page")
        return form

    async def bearer_principal(self, request: web.Request) -> Principal:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
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
            text = text_field(data, "text", True) or ""
            await store.set_manual_override(user_id, text, actor, note)
        elif action == "clear-override":
            await store.clear_manual_override(user_id, actor, note)
        elif action == "mark-stale":
            reason = text_field(data, "reason", True)
            await store.mark_stale(user_id, "manual", actor=actor, note=reason)
        else:
            raise Refused(404, "not_found", f"no action {action!r}")
        self.rt.relay_wakeup.set()


def html_refusal(exc: Refused, principal: Principal | None = None, csrf: str = "") -> web.Response:
    title = exc.error.replace("_", " ").capitalize()
    return html_response(pages.message_page(title, exc.reason, principal, csrf), exc.status)


class PanelView(faust.web.View):
    """A view of the panel: finds the ``Panel`` that ``register_panel`` attached."""

    @property
    def panel(self) -> Panel:
        return cast(Panel, self.app.wb_panel)  # type: ignore[attr-defined]


def api(handler: Any) -> Any:
    """JSON API methods: refusals and store errors become 4xx JSON with a reason."""

    async def wrapped(view: Any, request: web.Request, **kwargs: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(view, request, **kwargs)
            return response
        except Exception as exc:
            answer = refusal(exc)
            if answer is None:
                raise
            return answer

    return wrapped


@dataclass(frozen=True, slots=True)
class Visit:
    """Who is looking at a panel page, and the CSRF token its forms carry."""

    principal: Principal
    cookie: str
    csrf: str


def html_page(*, act: bool) -> Callable[[Any], Any]:
    """Panel pages: the session's principal resolved first (no session: to the login; a
    viewer on a page that acts: a 403 page), handed to the method as a ``Visit``; a
    ``Refused`` or ``InvalidInput`` the method lets through becomes a 4xx page that still
    shows the visitor's navigation. One place for what every page did by hand."""

    def decorate(handler: Any) -> Any:
        async def wrapped(view: PanelView, request: web.Request, **kwargs: Any) -> Any:
            try:
                principal, cookie = await view.panel.html_principal(request, act=act)
            except Refused as exc:
                return html_refusal(exc)
            visit = Visit(principal, cookie, view.panel.signer.csrf_token(cookie))
            try:
                return await handler(view, request, visit, **kwargs)
            except Refused as exc:
                return html_refusal(exc, principal, visit.csrf)
            except InvalidInput as exc:
                return html_refusal(invalid(exc), principal, visit.csrf)

        return wrapped

    return decorate


@blueprint.route("/static/admin.css", name="css")
class Stylesheet(PanelView):
    async def get(self, request: web.Request) -> web.Response:
        return web.Response(text=(STATIC / "admin.css").read_text(), content_type="text/css")


@blueprint.route("/login", name="login")
class Login(PanelView):
    """Logging in takes a form token bound to a cookie this page set, so another site
    cannot log a browser into a session of its choosing (login CSRF)."""

    async def get(self, request: web.Request) -> web.Response:
        return self._form(safe_next(request.query.get("next")))

    def _form(self, next_url: str, error: str | None = None, status: int = 200) -> web.Response:
        binding = self.panel.signer.sign(secrets.token_urlsafe(16))
        csrf = self.panel.signer.csrf_token(binding)
        response = html_response(pages.login_page(csrf, error, next_url), status)
        self.panel.set_cookie(response, LOGIN_COOKIE, binding)
        return response

    async def post(self, request: web.Request) -> web.Response:
        try:
            form = await read_form(request)
        except Refused as exc:
            return html_refusal(exc)
        binding = request.cookies.get(LOGIN_COOKIE, "")
        next_url = safe_next(form.get("next"))
        signer = self.panel.signer
        if signer.unsign(binding) is None or not signer.check_csrf(binding, form.get("csrf", "")):
            return self._form(next_url, "The form expired: log in again.", 403)
        principal = await self.panel.tokens.authenticate(form.get("token", "").strip())
        if principal is None:
            return self._form(next_url, "Unknown or revoked token.", 401)
        response = see_other(next_url)
        self.panel.set_cookie(
            response, SESSION_COOKIE, await self.panel.panel_sessions.open(principal, utcnow())
        )
        response.del_cookie(LOGIN_COOKIE, path="/admin")
        return response


@blueprint.route("/logout", name="logout")
class Logout(PanelView):
    """Ends the session on the server, so a copied cookie stops working too."""

    async def post(self, request: web.Request) -> web.Response:
        principal, cookie = await self.panel.session_principal(request)
        if principal is not None:
            try:
                form = await read_form(request)
            except Refused as exc:
                return html_refusal(exc, principal, self.panel.signer.csrf_token(cookie))
            if not self.panel.signer.check_csrf(cookie, form.get("csrf", "")):
                return html_refusal(Refused(403, "csrf", "missing or stale form token"))
            await self.panel.panel_sessions.close(cookie)
        response = see_other("/admin/login")
        response.del_cookie(SESSION_COOKIE, path="/admin")
        return response


def invalid(exc: InvalidInput) -> Refused:
    return Refused(400, "invalid", str(exc))


@blueprint.route("/", name="index")
class Index(PanelView):
    """The overview: how fresh the store is, at a glance; and a user id to open."""

    @html_page(act=False)
    async def get(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        wanted = request.query.get("user_id")
        error, status = None, 200
        if wanted is not None:
            try:
                return see_other(f"/admin/profiles/{parse_user_id(wanted.strip())}/glaze")
            except Refused as exc:
                error, status = exc.reason, 400
        ov = await self.panel.overview.overview(utcnow())
        jobs = self.panel.profiles.jobs
        page = overview_pages.overview_page(ov, jobs, visit.principal, visit.csrf, error)
        return html_response(page, status)


@blueprint.route("/profiles", name="profiles")
class Profiles(PanelView):
    """The profile list: filters, two orders, keyset pages."""

    @html_page(act=False)
    async def get(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        query = ProfileQuery.parse(query_fields(request))
        result = await self.panel.profiles.page(query)
        body = overview_pages.profiles_page(query, result, visit.principal, visit.csrf, utcnow())
        return html_response(body)


@blueprint.route("/profiles/bulk", name="bulk")
class Bulk(PanelView):
    """Bulk regenerate: the confirmation (GET: how many profiles the selection holds),
    then the start (POST with the count confirmed and the CSRF token). Admins only."""

    @html_page(act=True)
    async def get(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        selection = ProfileFilter.parse(query_fields(request))
        cost = await self.panel.profiles.preview(selection)
        return html_response(self._page(selection, cost, visit))

    def _page(
        self, selection: ProfileFilter, cost: CostPreview, visit: Visit, notice: str | None = None
    ) -> str:
        rate = self.panel.profiles.bulk_rate
        return overview_pages.bulk_page(selection, cost, rate, visit.principal, visit.csrf, notice)

    @html_page(act=True)
    async def post(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        form = await self.panel.checked_form(request, visit.cookie)
        selection = ProfileFilter.parse(form)
        expected = count_field(form, "count")
        note = text_field(form, "note")
        try:
            await self.panel.profiles.start_bulk(selection, visit.principal.actor, expected, note)
        except SelectionChanged as exc:
            notice = f"The selection changed since you looked: it now holds {exc.count} profiles."
            cost = await self.panel.profiles.preview(selection)
            return html_response(self._page(selection, cost, visit, notice), 409)
        return see_other("/admin/#bulk-jobs")


@blueprint.route("/profiles/{user_id}/glaze", name="glaze")
class Glaze(PanelView):
    """The glaze page: one profile's document and, for admins, its actions (``Act``)."""

    @html_page(act=False)
    async def get(self, request: web.Request, visit: Visit, user_id: str) -> web.StreamResponse:
        doc = await self.panel.profile(parse_user_id(user_id))
        return html_response(pages.glaze_page(doc, visit.principal, visit.csrf))


@blueprint.route("/profiles/{user_id}/{action}", name="act")
class Act(PanelView):
    @html_page(act=True)
    async def post(
        self, request: web.Request, visit: Visit, user_id: str, action: str
    ) -> web.StreamResponse:
        uid = parse_user_id(user_id)
        if action not in ACTIONS:
            raise Refused(404, "not_found", f"no action {action!r}")
        form = await self.panel.checked_form(request, visit.cookie)
        try:
            await self.panel.act(visit.principal, uid, action, form)
        except (StoreError, InvalidInput) as exc:
            doc = await self.panel.profile(uid)
            page = pages.glaze_page(doc, visit.principal, visit.csrf, str(exc))
            return html_response(page, 400)
        return see_other(f"/admin/profiles/{uid}/glaze")


@blueprint.route("/api/overview", name="api_overview")
class ApiOverview(PanelView):
    @api
    async def get(self, request: web.Request) -> web.StreamResponse:
        await self.panel.bearer_principal(request)
        return json_response((await self.panel.overview.overview(utcnow())).as_dict())


@blueprint.route("/api/profiles/{user_id}", name="api_profile")
class ApiProfile(PanelView):
    @api
    async def get(self, request: web.Request, user_id: str) -> web.StreamResponse:
        await self.panel.bearer_principal(request)
        return json_response(await self.panel.profile(parse_user_id(user_id)))


@blueprint.route("/api/profiles/{user_id}/audit", name="api_audit")
class ApiAudit(PanelView):
    @api
    async def get(self, request: web.Request, user_id: str) -> web.StreamResponse:
        await self.panel.bearer_principal(request)
        entries = await self.panel.audit_reader.trail(parse_user_id(user_id))
        return json_response({"entries": entries})


@blueprint.route("/api/profiles/{user_id}/{action}", name="api_act")
class ApiAct(PanelView):
    @api
    async def post(self, request: web.Request, user_id: str, action: str) -> web.StreamResponse:
        principal = await self.panel.bearer_principal(request)
        uid = parse_user_id(user_id)
        if action not in ACTIONS:
            raise Refused(404, "not_found", f"no action {action!r}")
        await self.panel.act(principal, uid, action, await read_json(request))
        return json_response(await self.panel.profile(uid))


def register_panel(app: faust.App, rt: Runtime) -> Panel:
    panel = Panel(rt)
    app.wb_panel = panel  # type: ignore[attr-defined]
    blueprint.register(app, url_prefix="/admin/")
    return panel
