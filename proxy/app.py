"""The proxy's ASGI application: ``/mcp``, probes, ``/metrics`` and ``/admin``, with the gateway's lifespan.

Requests pass, outermost first: request counting (``/mcp`` only), authentication,
rate limiting, then :class:`ProxyApp`, which sends ``/mcp`` straight to the endpoint
and everything else to a Starlette router.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from only1mcp.proxy.admin import admin_mount
from only1mcp.proxy.auth import AuthMiddleware
from only1mcp.proxy.gateway import Gateway
from only1mcp.proxy.http_front import McpEndpoint
from only1mcp.proxy.looplag import LoopLag
from only1mcp.proxy.metrics import ProxyMetrics, RequestMetricsMiddleware
from only1mcp.proxy.ratelimit import RateLimitMiddleware
from only1mcp.proxy.reload import Watcher
from only1mcp.settings import Settings

__all__ = ["build_app", "ProxyApp"]


class ProxyApp:
    """``/mcp`` goes straight to the endpoint; everything else (lifespan, probes) to Starlette.

    The MCP path is the hot path: skipping the router and middleware stack saves work on
    every call, and the endpoint already answers every error itself."""

    def __init__(self, endpoint: McpEndpoint, rest: Starlette, gateway: Gateway) -> None:
        self.endpoint, self.rest, self.gateway = endpoint, rest, gateway

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in ("/mcp", "/mcp/"):
            await self.endpoint(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def build_app(settings: Settings, gateway: Gateway | None = None,
              reload_from: Callable[[], Settings] | None = None) -> Any:
    """The whole ASGI app: middleware around a :class:`ProxyApp`; sets ``gateway.metrics``.

    ``reload_from`` (from the CLI) re-reads the configuration; given, the file is watched."""
    gateway = gateway or Gateway(settings)
    metrics = getattr(gateway, "metrics", None)
    if not isinstance(metrics, ProxyMetrics):
        metrics = ProxyMetrics()
        attach = getattr(gateway, "attach_metrics", None)  # the gateway (and its pools) report calls through it
        if attach is not None:
            attach(metrics)
        else:
            gateway.metrics = metrics  # type: ignore[attr-defined]
    endpoint = McpEndpoint(gateway, settings.proxy)
    sessions = gateway.sessions
    metrics.register_limits(lambda: {"sessions": len(sessions), "clients": sessions.clients()},
                            lambda: {**sessions.refused, **endpoint.limits.refused, **gateway.refused})

    loop_lag = LoopLag()
    metrics.register_collector(loop_lag.stats, prefix="only1mcp_event_loop_", counters=("lag_seconds", "stalls"),
                               help_text="event loop lateness (proxy/looplag.py):")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        loop_lag.start()  # after: a gateway that fails to start leaves no task behind
        watcher = Watcher(gateway, settings.source, reload_from) if reload_from else None
        if watcher is not None:
            watcher.start()
        gateway.watcher = watcher
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            await gateway.stop()
            await loop_lag.stop()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        servers = {name: [{"id": r.id, "state": r.state, "error": r.last_error} for r in pool.replicas]
                   for name, pool in gateway.pools.items()}
        ready = all(pool.any_ready() for pool in gateway.pools.values())
        body: dict[str, Any] = {"ready": ready, "servers": servers, "conflicts": gateway.catalog.conflicts}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        """No route, or not that method (an unknown /admin path, an id the path cannot hold): JSON too."""
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path!r}"},
                            status_code=exc.status_code, headers=exc.headers)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/metrics", metrics.metrics_app, methods=["GET", "HEAD"]), admin_mount(gateway)]
    rest = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    # Both follow gateway.settings, so a hot reload changes tokens and limits too.
    app = RateLimitMiddleware(ProxyApp(endpoint, rest, gateway), settings.rate_limit, on_limited=metrics.rate_limited,
                              follow=lambda: gateway.settings.rate_limit)
    app = AuthMiddleware(app, settings.auth, follow=lambda: gateway.settings.auth)
    app = RequestMetricsMiddleware(app, metrics)
    app.close_streams = endpoint.streams.close_all  # type: ignore[attr-defined]  # for the server's shutdown
    return app
