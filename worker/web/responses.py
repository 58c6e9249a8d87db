"""What the worker's port answers with: security headers on every response, refusals as
JSON with a reason, and only the routes this project serves.

The middleware here wraps every request aiohttp handles, so health checks, metrics,
404s and 405s carry the same headers as the panel, and a path outside ``SERVED`` (Faust's
built-in pages among them) is a 404 before any view runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from worker.domain.errors import InvalidInput, StoreError, UnknownUser

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SERVED = ("/healthz", "/readyz", "/metrics", "/profiles/", "/admin/")


class Refused(Exception):
    """A request refused with an HTTP status and a one-line reason."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def html_response(
    body: str, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=headers)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def refusal(exc: Exception) -> web.Response | None:
    """The 4xx JSON answer for an error a client caused, or None for anything else."""
    if isinstance(exc, Refused):
        return json_response({"error": exc.error, "reason": exc.reason}, exc.status)
    if isinstance(exc, UnknownUser):
        return json_response({"error": "not_found", "reason": str(exc)}, 404)
    if isinstance(exc, InvalidInput | StoreError):
        return json_response({"error": "invalid", "reason": str(exc)}, 400)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        error = (exc.reason or "error").lower().replace(" ", "_")
        return json_response({"error": error, "reason": exc.text or exc.reason}, exc.status)
    return None


def _served(path: str) -> bool:
    return path in SERVED or any(path.startswith(p) for p in SERVED if p.endswith("/"))


async def _answer(request: web.Request, handler: Any) -> web.StreamResponse:
    if not _served(request.path):
        return json_response({"error": "not_found", "reason": "no such page"}, 404)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except Exception as exc:
        answer = refusal(exc)
        if answer is not None:
            return answer
        if isinstance(exc, web.HTTPException):
            raise  # a redirect
        log.exception("request failed: %s %s", request.method, request.path)
        return json_response({"error": "internal", "reason": "internal error (logged)"}, 500)


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every response of the worker's port: served routes only, errors as JSON with a
    reason, the security headers always (redirects raised as exceptions included)."""
    try:
        response = await _answer(request, handler)
    except web.HTTPException as redirect:
        redirect.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response
