"""HTTP views served by the worker's own web server (Faust web, aiohttp)."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from worker.runtime import Runtime

# aiohttp takes the charset separately; the exposition format is UTF-8 anyway.
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"


def register_views(app: faust.App, rt: Runtime) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """Liveness: answering at all means the event loop is alive."""
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Readiness: the database answers and this worker has joined its consumer group."""
        database = await rt.database_reachable()
        checks = {"database": database and rt.db_ok, "partitions_assigned": rt.assigned}
        ready = all(checks.values())
        return web.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(rt.metrics.exposition(), content_type=METRICS_CONTENT_TYPE)
