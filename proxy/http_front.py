"""The Streamable HTTP front: the ``/mcp`` endpoint as a pure ASGI app.

POST carries one JSON-RPC message (a batch only in 2025-03-26). A request's answer
is plain JSON unless something related (progress, logging, a server-to-client
request) arrives before it; then the answer switches to an SSE stream
(``proxy/exchange.py``). GET holds the session's stream of unsolicited messages, or
resumes a stream with ``Last-Event-ID`` (``proxy/resume.py``); DELETE ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from only1mcp.errors import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, TOO_MANY_INFLIGHT
from only1mcp.proxy.auth import client_id_of
from only1mcp.proxy.exchange import SSE_HEADERS, Exchange, event, respond, rpc_error
from only1mcp.proxy.gateway import SUPPORTED_VERSIONS, Gateway, Sink
from only1mcp.proxy.limits import Limits, refuse
from only1mcp.proxy.replay import PRIMING_SINCE, ReplayBudget
from only1mcp.proxy.resume import GetStreams
from only1mcp.proxy.sessions import ClientSession, SessionLimit
from only1mcp.proxy.telemetry import REQUEST_ID_HEADER, new_request_id
from only1mcp.settings import ProxySettings

__all__ = ["McpEndpoint", "Exchange", "event", "invalid", "respond", "accepted", "rpc_error", "SSE_HEADERS"]

log = logging.getLogger("only1mcp.http")

_JSON = (b"content-type", b"application/json")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class McpEndpoint:
    def __init__(self, gateway: Gateway, settings: ProxySettings) -> None:
        self.gateway = gateway
        self.settings = settings
        self.limits = Limits(lambda: gateway.settings.proxy)  # follows reloads
        self.replays = ReplayBudget(lambda: gateway.settings.proxy)  # Last-Event-ID buffers of all sessions
        self.streams = GetStreams(self.limits, self.replays)
        from only1mcp.proxy.stateless import Stateless  # it builds on this module's Exchange

        self.stateless = Stateless(gateway, self.limits)
        self._allowed_origins = set(settings.allowed_origins)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k: v for k, v in scope["headers"]}
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1")):
            await respond(send, 403, rpc_error(INVALID_REQUEST, "Forbidden: Origin not allowed"))
            return
        method = scope["method"]
        if method == "POST":
            await self._post(headers, receive, send, scope)
        elif method == "GET":
            await self._get(headers, receive, send)
        elif method == "DELETE":
            await self._delete(headers, send)
        else:
            await respond(send, 405, rpc_error(INVALID_REQUEST, "Method Not Allowed"), [(b"allow", b"GET, POST, DELETE")])

    def _origin_allowed(self, origin: str) -> bool:
        if origin in self._allowed_origins or "*" in self._allowed_origins:
            return True
        return (urlsplit(origin).hostname or "") in _LOOPBACK

    # -- POST --------------------------------------------------------------------
    async def _post(self, headers: dict[bytes, bytes], receive: Any, send: Any, scope: dict[str, Any]) -> None:
        accept = headers.get(b"accept", b"")
        if b"application/json" not in accept and b"*/*" not in accept:
            await respond(send, 406, rpc_error(INVALID_REQUEST, "Not Acceptable: Accept must list application/json "
                                                              "and text/event-stream"))
            return
        content_type = headers.get(b"content-type", b"application/json")
        if content_type != b"application/json" and not _is_json(content_type):
            await respond(send, 415, rpc_error(INVALID_REQUEST, "Unsupported Media Type: Content-Type must be "
                                                              "application/json"))
            return
        body = await self._read_body(headers, receive, send)
        if body is None:
            return
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            await respond(send, 400, rpc_error(PARSE_ERROR, f"Parse error: {exc.msg}"))
            return
        version_header = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
        # 2026-07-28 has no sessions: a request naming one is judged by its session (so a bad
        # MCP-Protocol-Version on it is reported as such, not as a stateless request missing _meta).
        if b"mcp-session-id" not in headers and self.stateless.claims(message, version_header):
            await self.stateless.handle(message, headers, self._sse_allowed(accept), receive, send,
                                        _Origin(len(body), scope))
            return
        if isinstance(message, list):
            await self._batch(message, headers, send)
            return
        problem = invalid(message)
        if problem:
            await respond(send, 400, rpc_error(INVALID_REQUEST, problem, _id_of(message)))
            return
        if message.get("method") == "initialize":
            await self._initialize(message, send, scope)
            return
        session, status, reason = self._session(headers, version_header)
        if session is None:
            await respond(send, status, rpc_error(INVALID_REQUEST, reason, _id_of(message)))
            return
        if "method" not in message:  # the client's answer to one of our requests
            try:
                session.answer(message)
            except Exception as exc:
                log.info("unexpected response from client: %s", exc)
            await accepted(send)
        elif "id" not in message:
            await self.gateway.handle(message, session, None)
            await accepted(send)
        elif session.inflight >= self.gateway.settings.proxy.max_inflight_per_session:
            self.limits.refused["inflight_session"] += 1
            await refuse(send, 429, TOO_MANY_INFLIGHT, f"Too Many Requests: this session already has "
                         f"{session.inflight} calls in flight (the limit)", message["id"], retry_after=1)
        else:
            await self._request(message, session, receive, send, self._sse_allowed(accept), _prefers_sse(accept),
                                _Origin(len(body), scope))

    @staticmethod
    def _sse_allowed(accept: bytes) -> bool:
        return b"text/event-stream" in accept or b"*/*" in accept

    async def _read_body(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> bytes | None:
        proxy = self.gateway.settings.proxy  # follows reloads
        limit = proxy.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.limits.refused["body_too_large"] += 1
            await respond(send, 413, rpc_error(INVALID_REQUEST, f"Payload Too Large: body exceeds {limit} bytes"))
            return None
        chunks: list[bytes] = []
        size = 0
        watchdog = self.limits.watchdog
        task = watchdog.arm(proxy.body_timeout)  # a slowloris body: 408 and the connection closed
        try:
            while True:
                event = await receive()
                if event["type"] == "http.disconnect":
                    return None
                chunk = event.get("body", b"")
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
                if not event.get("more_body"):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except asyncio.CancelledError:
            if not watchdog.fired(task):
                raise
            self.limits.refused["body_timeout"] += 1
            await refuse(send, 408, INVALID_REQUEST, f"Request Timeout: the body did not arrive within "
                         f"{proxy.body_timeout:g} s", close=True)
            return None
        finally:
            watchdog.disarm(task)
        self.limits.refused["body_too_large"] += 1
        await respond(send, 413, rpc_error(INVALID_REQUEST, f"Payload Too Large: body exceeds {limit} bytes"))
        return None

    def _session(self, headers: dict[bytes, bytes], version: str) -> tuple[ClientSession | None, int, str]:
        session_id = headers.get(b"mcp-session-id")
        if session_id is None:
            return None, 400, "Bad Request: Mcp-Session-Id header is required"
        session = self.gateway.sessions.get(session_id.decode("latin-1"))
        if session is None:
            return None, 404, "Session not found"
        if version and version not in SUPPORTED_VERSIONS:
            return None, 400, f"Bad Request: unsupported MCP-Protocol-Version {version!r}"
        return session, 200, ""

    async def _initialize(self, message: dict[str, Any], send: Any, scope: dict[str, Any]) -> None:
        params = message.get("params")
        if "id" not in message:
            await respond(send, 400, rpc_error(INVALID_REQUEST, "initialize must be a request with an id"))
            return
        if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
            await respond(send, 200, rpc_error(INVALID_PARAMS, "initialize: params.protocolVersion is required",
                                               message["id"]))
            return
        version = self.gateway.negotiate(params.get("protocolVersion"))
        capabilities = params.get("capabilities") if isinstance(params.get("capabilities"), dict) else {}
        client_info = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
        try:
            session = self.gateway.sessions.create(version, capabilities, client_info, client_id_of(scope))
        except SessionLimit as exc:
            await refuse(send, exc.status, exc.code, exc.message, message["id"], retry_after=exc.retry_after)
            return
        self.gateway.sessions_changed()
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": self.gateway.initialize_result(version)}
        await respond(send, 200, reply, [(b"mcp-session-id", session.id.encode()),  # type: ignore[union-attr]
                                         (REQUEST_ID_HEADER, new_request_id().encode())])

    async def _batch(self, messages: list[Any], headers: dict[bytes, bytes], send: Any) -> None:
        session, status, reason = self._session(headers, headers.get(b"mcp-protocol-version", b"").decode())
        if session is None or not messages or session.protocol_version != "2025-03-26":
            reason = reason or "JSON-RPC batches are only allowed in protocol version 2025-03-26"
            await respond(send, status if session is None else 400, rpc_error(INVALID_REQUEST, reason))
            return
        replies = []
        request_ids = []
        for message in messages:
            problem = invalid(message)
            if problem:
                replies.append(rpc_error(INVALID_REQUEST, problem, _id_of(message)))
            elif "method" not in message:
                try:
                    session.answer(message)
                except Exception as exc:  # as for a single POST: an unexpected response is not a 500
                    log.info("unexpected response from client: %s", exc)
            else:
                if "id" in message:
                    request_ids.append(new_request_id())
                reply = await self.gateway.handle(message, session, None)
                if reply is not None:
                    replies.append(reply)
        if replies:  # the request ids of the batch's requests, in order
            await respond(send, 200, replies, [(REQUEST_ID_HEADER, ",".join(request_ids).encode())])
        else:
            await accepted(send)

    async def _request(self, message: dict[str, Any], session: ClientSession, receive: Any, send: Any,
                       sse: bool, prefer_sse: bool, origin: _Origin) -> None:
        telemetry = self.gateway.telemetry
        request_id = new_request_id()  # before the handler task is made, so it sees the same context
        context = telemetry.begin(request_id)
        exchange = Exchange(send, sse, [(REQUEST_ID_HEADER, request_id.encode())], prefer_sse=prefer_sse,
                            limits=self.limits, streams=self.streams.replay_of(session),
                            prime=session.protocol_version >= PRIMING_SINCE)
        await exchange.run(self.gateway.handle(message, session, Sink(session, exchange.push) if sse else None),
                           receive, session, message["id"])
        telemetry.finish(context, message, exchange.reply, origin.started, origin.wall, origin.size,
                         exchange.sent_bytes, session.id, origin.client_id)

    # -- GET and DELETE ------------------------------------------------------------
    async def _get(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        if b"text/event-stream" not in headers.get(b"accept", b""):
            await respond(send, 406, rpc_error(INVALID_REQUEST, "Not Acceptable: Accept must list text/event-stream"))
            return
        session, status, reason = self._session(headers, headers.get(b"mcp-protocol-version", b"").decode())
        if session is None:
            await respond(send, status, rpc_error(INVALID_REQUEST, reason))
            return
        await self.streams.handle(session, headers, receive, send)

    async def _delete(self, headers: dict[bytes, bytes], send: Any) -> None:
        session_id = headers.get(b"mcp-session-id")
        if session_id is None:
            await respond(send, 400, rpc_error(INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required"))
        elif self.gateway.sessions.delete(session_id.decode("latin-1")):
            await send({"type": "http.response.start", "status": 200, "headers": [_JSON]})
            await send({"type": "http.response.body", "body": b""})
        else:
            await respond(send, 404, rpc_error(INVALID_REQUEST, "Session not found"))


class _Origin:
    """What the front knows about a request before handling it, for its event."""

    __slots__ = ("size", "started", "wall", "client_id", "raw_headers")

    def __init__(self, size: int, scope: dict[str, Any]) -> None:
        self.size, self.started, self.wall = size, time.perf_counter(), time.time()
        self.raw_headers = scope["headers"]  # repeated headers kept (a doubled Mcp-Param-* is refused)
        state = scope.get("state")
        self.client_id = state.get("client_id") if isinstance(state, dict) else None


def _is_json(content_type: bytes) -> bool:
    """The media type (before any parameter, any case) is application/json: not application/jsonx."""
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _prefers_sse(accept: bytes) -> bool:
    sse, json = accept.find(b"text/event-stream"), accept.find(b"application/json")
    return sse >= 0 and (json < 0 or sse < json)


def invalid(message: Any) -> str:
    if not isinstance(message, dict):
        return "Invalid Request: a JSON-RPC message must be an object"
    if message.get("jsonrpc") != "2.0":
        return "Invalid Request: jsonrpc must be \"2.0\""
    if "method" in message:
        if not isinstance(message["method"], str):
            return "Invalid Request: method must be a string"
    elif "id" not in message or ("result" not in message and "error" not in message):
        return "Invalid Request: neither a request, a notification nor a response"
    if "id" in message and not isinstance(message["id"], (str, int)) or isinstance(message.get("id"), bool):
        value = message["id"]
        if isinstance(value, float) and value.is_integer() and not -2**63 <= value < 2**64:
            return "Invalid Request: id must be a string or an integer; integers beyond 64 bits are not supported"
        return "Invalid Request: id must be a string or an integer"
    return ""


def _id_of(message: Any) -> Any:
    if isinstance(message, dict) and isinstance(message.get("id"), (str, int)) and not isinstance(message["id"], bool):
        return message["id"]
    return None


async def accepted(send: Any) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
