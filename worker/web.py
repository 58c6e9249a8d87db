"""HTTP views served by the worker's own web server (Faust web, aiohttp)."""

from __future__ import annotations

import logging
from typing import Any

import faust
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from worker.admin_web import json_response, parse_user_id, refusals_as_json, register_admin
from worker.runtime import Runtime
from worker.views import served_document

log = logging.getLogger(__name__)

# aiohttp takes the charset separately; the exposition format is UTF-8 anyway.
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Errors the router or aiohttp raise (404, 405, 413, ...) as JSON with a reason;
    an unexpected exception as a JSON 500 (logged), never an HTML error page."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = (exc.reason or "error").lower().replace(" ", "_")
        return web.json_response({"error": error, "reason": exc.reason}, status=exc.status)
    except Exception:
        log.exception("request failed: %s %s", request.method, request.path)
        return web.json_response(
            {"error": "internal", "reason": "internal error (logged)"}, status=500
        )


def register_views(app: faust.App, rt: Runtime) -> None:
    register_admin(app, rt)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """Liveness: answering at all means the event loop is alive."""
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Readiness: the database answers and this worker has joined its consumer group."""
        checks = {"database": await rt.database_ready(), "partitions_assigned": rt.assigned}
        ready = all(checks.values())
        return web.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    @app.page("/profiles/{user_id}/highlight")
    @refusals_as_json
    async def highlight(view: Any, request: Any, user_id: str) -> Any:
        """What a UI should show for a user (README: serving rules)."""
        doc = await served_document(rt.store, parse_user_id(user_id), rt.settings.serve_stale_for)
        return json_response(doc)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(rt.metrics.exposition(), content_type=METRICS_CONTENT_TYPE)
