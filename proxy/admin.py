"""The admin API: JSON views of the gateway under ``/admin``, and a hot reload.

The data comes from an :class:`AdminSource` (the gateway). A source that lacks a
method yet is answered ``501`` naming it, so the routes can be mounted before every
view exists. Access control is not here: :class:`~only1mcp.proxy.auth.AuthMiddleware`
guards ``/admin/*`` (admin token, else loopback peers only).

    GET  /admin/upstreams              admin_upstreams()
    GET  /admin/cache                  admin_cache()
    GET  /admin/prefetch               admin_prefetch() (counts, budget, settings; never arguments or results)
    GET  /admin/decisions/{request_id} admin_decision(request_id), 404 when None (the JSON-RPC id)
    GET  /admin/explain/{request_id}   admin_explain(request_id), 404 when None (Only1MCP-Request-Id)
    GET  /admin/overrides              admin_overrides()
    POST /admin/overrides              admin_set_override(body); 400 on ValueError
    GET  /admin/remediation            admin_remediation()
    POST /admin/remediation            admin_set_remediation(body) ({"server": …, "auto": …}); 400 on ValueError
    GET  /admin/config                 admin_config()
    POST /admin/reload                 await reload(); 400 if refused
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Protocol, runtime_checkable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from only1mcp.errors import ConfigError

__all__ = ["AdminSource", "admin_routes", "admin_mount", "json_response"]

log = logging.getLogger("only1mcp.admin")


@runtime_checkable
class AdminSource(Protocol):
    """What the admin API reads; the gateway implements it. Each returns JSON-ready data."""

    def admin_upstreams(self) -> dict[str, Any]:
        """Servers and their replicas: state, health, breaker, ejection, load."""
        ...

    def admin_cache(self) -> dict[str, Any]:
        """Response cache stats and settings."""
        ...

    def admin_decision(self, request_id: str) -> dict[str, Any] | None:
        """The routing decision recorded for one request, or None if unknown (or forgotten)."""
        ...

    def admin_config(self) -> dict[str, Any]:
        """The settings in force, secrets redacted."""
        ...

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration file and apply it; return what changed.

        A refusal (an invalid file) is a dict with an ``"error"`` key, or a raised ConfigError:
        both are answered 400 and the running configuration stays."""
        ...


def json_response(data: Any, status: int = 200) -> Response:
    """JSON via orjson (dataclasses, non-string keys and NaN-free output are fine)."""
    body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status, media_type="application/json")


_MISSING = object()


async def _call(source: object, name: str, *args: Any) -> Any:
    """``source.<name>(*args)``, awaited if need be; ``_MISSING`` if the source has no such method."""
    method = getattr(source, name, None)
    if method is None:
        return _MISSING
    result = method(*args)
    return await result if inspect.isawaitable(result) else result


def _view(source: object, name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        result = await _call(source, name)
        return _not_implemented(name) if result is _MISSING else json_response(result)

    return endpoint


def _not_implemented(name: str) -> Response:
    return json_response({"error": f"Not Implemented: the gateway has no {name}() yet"}, 501)


def admin_routes(source: object) -> list[BaseRoute]:
    """The admin routes, relative to ``/admin``, reading from ``source`` (an :class:`AdminSource`)."""

    async def decision(request: Request) -> Response:
        request_id = request.path_params["request_id"]
        found = await _call(source, "admin_decision", request_id)
        if found is _MISSING:
            return _not_implemented("admin_decision")
        if found is None:
            return json_response({"error": f"no routing decision recorded for request id {request_id!r}"}, 404)
        return json_response(found)

    async def reload(request: Request) -> Response:
        try:
            summary = await _call(source, "reload")
        except ConfigError as exc:
            return json_response({"error": f"reload refused: {exc}"}, 400)
        except Exception as exc:
            log.exception("admin reload failed")
            return json_response({"error": f"reload failed: {type(exc).__name__}: {exc}"}, 500)
        if summary is _MISSING:
            return _not_implemented("reload")
        refused = isinstance(summary, dict) and "error" in summary
        return json_response(summary, 400 if refused else 200)

    async def weights(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return json_response({"error": "the body must be JSON"}, 400)
        try:
            result = await _call(source, "admin_set_weights", request.path_params["server"], body)
        except (ValueError, TypeError, KeyError) as exc:
            return json_response({"error": f"weights refused: {exc}"}, 400)
        if result is _MISSING:
            return _not_implemented("admin_set_weights")
        return json_response(result)

    async def explain(request: Request) -> Response:
        request_id = request.path_params["request_id"]
        found = await _call(source, "admin_explain", request_id)
        if found is _MISSING:
            return _not_implemented("admin_explain")
        if found is None:
            return json_response({"error": f"no explanation for request id {request_id!r}: not a routed call "
                                           f"(tools/call, prompts/get), or forgotten (the newest 10000 are kept)"},
                                 404)
        return json_response(found)

    def get_or_set(view: str, setter: str, what: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if request.method == "GET":
                found = await _call(source, view)
                return _not_implemented(view) if found is _MISSING else json_response(found)
            try:
                body = await request.json()
            except ValueError:
                return json_response({"error": "the body must be JSON"}, 400)
            try:
                result = await _call(source, setter, body)
            except (ValueError, TypeError, KeyError) as exc:
                return json_response({"error": f"{what} refused: {exc}"}, 400)
            if result is _MISSING:
                return _not_implemented(setter)
            return json_response(result)

        return endpoint

    return [
        Route("/weights/{server}", weights, methods=["POST"]),
        Route("/explain/{request_id}", explain, methods=["GET"]),
        Route("/overrides", get_or_set("admin_overrides", "admin_set_override", "override"), methods=["GET", "POST"]),
        Route("/remediation", get_or_set("admin_remediation", "admin_set_remediation", "remediation switch"),
              methods=["GET", "POST"]),
        Route("/upstreams", _view(source, "admin_upstreams"), methods=["GET"]),
        Route("/cache", _view(source, "admin_cache"), methods=["GET"]),
        Route("/prefetch", _view(source, "admin_prefetch"), methods=["GET"]),
        Route("/decisions/{request_id:path}", decision, methods=["GET"]),
        Route("/config", _view(source, "admin_config"), methods=["GET"]),
        Route("/reload", reload, methods=["POST"]),
    ]


def admin_mount(source: object) -> Mount:
    """``Mount("/admin", routes=admin_routes(source))``, for an app's route list."""
    return Mount("/admin", routes=admin_routes(source))
