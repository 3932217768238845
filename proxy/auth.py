"""Bearer-token and API-key authentication, as pure ASGI middleware.

With ``[auth] tokens`` set, ``/mcp`` and ``/metrics`` need ``Authorization: Bearer <token>``
or ``X-API-Key: <token>``; ``/healthz`` and ``/readyz`` stay open. ``/admin/*`` needs
``Authorization: Bearer <admin_token>``, or, with no admin token set, a loopback peer.

Tokens are compared as SHA-256 digests with ``hmac.compare_digest`` against every
configured token, so neither a token's length nor which one matched shows in the
timing. The caller's identity goes to ``scope["state"]["client_id"]`` for rate
limiting and logs: a short hash of its token (never the token), else its address.
The peer address is the socket's (uvicorn runs with ``proxy_headers=False``): an
``X-Forwarded-For`` header cannot make a remote client look like a loopback one.

:func:`exposure_refusal` says why settings must not be served: no client token on a
public address, or a published demo token (:data:`DEMO_TOKENS`) outside a demo.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from only1mcp.errors import INVALID_REQUEST
from only1mcp.traffic import AuthSettings

__all__ = ["exposure_refusal", "AuthMiddleware", "client_id_of", "is_loopback_host", "peer_host", "DEMO_TOKENS",
           "demo_tokens_in"]

# The tokens docker-compose.yml (and infra/prometheus/prometheus.yml) give the demo stack. They are
# published in this repository, so they protect nothing: accepted only with [proxy] demo = true.
DEMO_TOKENS = frozenset({"only1mcp-demo-token", "only1mcp-demo-admin-token"})

_PROTECTED = frozenset({"/mcp", "/mcp/", "/metrics", "/metrics/"})
_MCP = frozenset({"/mcp", "/mcp/"})


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1`` (also IPv4-mapped)."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def peer_host(scope: dict[str, Any]) -> str:
    """The connecting peer's address (no port), or ``"unknown"`` (e.g. a Unix socket)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def client_id_of(scope: dict[str, Any]) -> str:
    """The identity :class:`AuthMiddleware` set, else the peer address."""
    state = scope.get("state")
    if state and "client_id" in state:
        return state["client_id"]
    return peer_host(scope)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _credentials(scope: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    """The bearer token of ``Authorization`` and the ``X-API-Key`` value, each or None."""
    bearer = api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and rest.strip():
                bearer = rest.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.strip()
    return bearer, api_key


class AuthMiddleware:
    """Refuses unauthenticated requests to ``/mcp``, ``/metrics`` and ``/admin``; tags the rest."""

    def __init__(self, app: Any, settings: AuthSettings, follow: Callable[[], AuthSettings] | None = None) -> None:
        """``follow``, if given, returns the settings in force; a change (a hot reload) is picked up."""
        self.app = app
        self.follow = follow
        self.update(settings)

    def _refresh(self, current: AuthSettings) -> None:
        if current == self.settings:  # a reload that left this table alone keeps the state
            self.settings = current
        else:
            self.update(current)

    def update(self, settings: AuthSettings) -> None:
        """Use new settings from the next request on."""
        self.settings = settings
        self._tokens = [(_digest(t.encode()), "token:" + hashlib.sha256(t.encode()).hexdigest()[:12])
                        for t in dict.fromkeys(settings.tokens)]
        self._admin = _digest(settings.admin_token.encode()) if settings.admin_token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.follow is not None and self.follow() is not self.settings:
            self._refresh(self.follow())
        path = scope["path"]
        if path == "/admin" or path.startswith("/admin/"):
            await self._admin_request(scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        if not self._tokens or path not in _PROTECTED:
            state["client_id"] = peer_host(scope)
            await self.app(scope, receive, send)
            return
        bearer, api_key = _credentials(scope)
        presented = bearer if bearer is not None else api_key
        if presented is None:
            await self._refuse(send, path, 401, "Unauthorized: send Authorization: Bearer <token> or X-API-Key",
                               'Bearer realm="only1mcp"')
            return
        client_id = self._match(presented)
        if client_id is None:
            await self._refuse(send, path, 401, "Unauthorized: invalid token",
                               'Bearer realm="only1mcp", error="invalid_token"')
            return
        state["client_id"] = client_id
        await self.app(scope, receive, send)

    def _match(self, presented: bytes) -> str | None:
        """The client id of the configured token equal to ``presented``; every token is compared."""
        digest = _digest(presented)
        found = None
        for expected, client_id in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = client_id
        return found

    async def _admin_request(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        if self._admin is None:
            if not is_loopback_host(peer_host(scope)):
                await self._refuse(send, scope["path"], 403, "Forbidden: without [auth] admin_token the admin "
                                                             "API answers loopback clients only")
                return
            origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
            if origin is not None and not is_loopback_host(urlsplit(origin.decode("latin-1")).hostname):
                # a web page (perhaps by DNS rebinding) must not reach an API guarded by the address alone
                await self._refuse(send, scope["path"], 403, "Forbidden: Origin not allowed")
                return
        else:
            bearer, _ = _credentials(scope)
            if bearer is None:
                await self._refuse(send, scope["path"], 401, "Unauthorized: send Authorization: Bearer "
                                                             "<admin_token>", 'Bearer realm="only1mcp-admin"')
                return
            if not hmac.compare_digest(_digest(bearer), self._admin):
                await self._refuse(send, scope["path"], 403, "Forbidden: this token may not use the admin API")
                return
        state["client_id"] = "admin"
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Any, path: str, status: int, message: str, challenge: str | None = None) -> None:
        if path in _MCP:
            payload: dict[str, Any] = {"jsonrpc": "2.0", "id": None,
                                       "error": {"code": INVALID_REQUEST, "message": message}}
        else:
            payload = {"error": message}
        body = orjson.dumps(payload)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if challenge:
            headers.append((b"www-authenticate", challenge.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def demo_tokens_in(auth: AuthSettings) -> list[str]:
    """Which settings hold a published demo token: ``[auth] tokens`` and/or ``[auth] admin_token``.
    (A plain comparison: the demo tokens are public, and this runs at start-up, not per request.)"""
    found = []
    if any(token in DEMO_TOKENS for token in auth.tokens):
        found.append("[auth] tokens (ONLY1MCP_AUTH_TOKENS)")
    if auth.admin_token in DEMO_TOKENS:
        found.append("[auth] admin_token (ONLY1MCP_ADMIN_TOKEN)")
    return found


def exposure_refusal(settings: Any) -> str:
    """Why the proxy must not serve as configured ("" if it may): no tokens on a non-loopback address,
    or a published demo token without ``[proxy] demo = true``. Checked at start-up and on every reload.
    The message names settings, never a token."""
    demo = demo_tokens_in(settings.auth)
    if demo and not settings.proxy.demo:
        return (f"refusing to start: {' and '.join(demo)} hold(s) a demo token published in docker-compose.yml, "
                "which anyone can read. Set a token of your own; only for a demo, set [proxy] demo = true "
                "(ONLY1MCP_PROXY_DEMO=true).")
    if settings.auth.tokens or is_loopback_host(settings.proxy.host):
        return ""
    return (f"refusing to listen on {settings.proxy.listen} without authentication: anyone who can reach it "
            "could use every upstream. Set [auth] tokens (or ONLY1MCP_AUTH_TOKENS), or listen on a loopback "
            "address (127.0.0.1, ::1 or localhost).")
