"""The proxy's ASGI application: ``/mcp`` plus liveness and readiness, with the gateway's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from only1mcp.proxy.gateway import Gateway
from only1mcp.proxy.http_front import McpEndpoint
from only1mcp.settings import Settings

__all__ = ["build_app"]


def build_app(settings: Settings, gateway: Gateway | None = None) -> Starlette:
    gateway = gateway or Gateway(settings)
    endpoint = McpEndpoint(gateway, settings.proxy)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        servers = {name: [{"id": r.id, "state": r.state, "error": r.last_error} for r in pool.replicas]
                   for name, pool in gateway.pools.items()}
        ready = all(pool.any_ready() for pool in gateway.pools.values())
        body: dict[str, Any] = {"ready": ready, "servers": servers, "conflicts": gateway.catalog.conflicts}
        return JSONResponse(body, status_code=200 if ready else 503)

    app = Starlette(routes=[Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"]),
                            Route("/healthz", healthz), Route("/readyz", readyz)], lifespan=lifespan)
    app.state.gateway = gateway
    return app
