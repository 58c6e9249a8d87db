"""The worker's public endpoints: liveness, readiness, metrics and what a client shows."""

from __future__ import annotations

from typing import Any, cast

import faust
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from worker.runtime.process import Runtime
from worker.services.documents import served_document
from worker.web.panel import api, register_panel
from worker.web.requests import parse_user_id
from worker.web.responses import json_response

# aiohttp takes the charset separately; the exposition format is UTF-8 anyway.
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"

blueprint = faust.web.Blueprint("public")


class RuntimeView(faust.web.View):
    @property
    def rt(self) -> Runtime:
        return cast(Runtime, self.app.wb_runtime)  # type: ignore[attr-defined]


@blueprint.route("/healthz", name="healthz")
class Health(RuntimeView):
    async def get(self, request: web.Request) -> web.Response:
        """Liveness: answering at all means the event loop is alive."""
        return json_response({"status": "ok"})


@blueprint.route("/readyz", name="readyz")
class Ready(RuntimeView):
    async def get(self, request: web.Request) -> web.Response:
        """Readiness: the database answers and this worker has joined its consumer group."""
        database = await self.rt.database_ready()
        checks = {"database": database, "partitions_assigned": self.rt.assigned}
        ready = all(checks.values())
        return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


@blueprint.route("/profiles/{user_id}/highlight", name="highlight")
class Served(RuntimeView):
    @api
    async def get(self, request: web.Request, user_id: str) -> Any:
        """What a UI should show for a user (README: serving rules)."""
        rt = self.rt
        doc = await served_document(rt.store, parse_user_id(user_id), rt.settings.serve_stale_for)
        return json_response(doc)


@blueprint.route("/metrics", name="metrics")
class Metrics(RuntimeView):
    async def get(self, request: web.Request) -> web.Response:
        return web.Response(body=self.rt.metrics.exposition(), content_type=METRICS_CONTENT_TYPE)


def register_views(app: faust.App, rt: Runtime) -> None:
    """Attach the runtime the views read and register both blueprints."""
    app.wb_runtime = rt  # type: ignore[attr-defined]
    blueprint.register(app, url_prefix="/")
    register_panel(app, rt)
