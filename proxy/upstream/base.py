"""The upstream side of the proxy: a transport interface and a JSON-RPC client session over it.

A ``Transport`` moves JSON-RPC messages to and from one upstream replica (HTTP or
stdio). An ``UpstreamSession`` is one long-lived MCP session over a transport: it
allocates request ids (so ids are remapped per upstream by construction), remaps
progress tokens, routes messages that belong to an in-flight call back to that
call, and answers server-to-client requests through a handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from only1mcp.errors import INVALID_PARAMS, RPCError, UpstreamFailed, UpstreamTimeout, UpstreamUnavailable

__all__ = [
    "Transport",
    "TransportClosed",
    "SessionExpired",
    "HttpStatusError",
    "Deliver",
    "UpstreamSession",
    "RelatedSink",
    "too_deep",
    "unencodable",
    "PROXY_CLIENT_CAPABILITIES",
]

log = logging.getLogger("only1mcp.upstream")

# A message from the upstream, and the id of our request it belongs to (None if unknown).
Deliver = Callable[[dict[str, Any], Any], None]


class RelatedSink(Protocol):
    """Where notifications and server-to-client requests that belong to one call go."""

    def emit(self, message: dict[str, Any]) -> None:
        """Queue a notification for the caller's client, in order."""

# About the upstream session, never one call, whichever stream carried them: the proxy refreshes
# its catalog or fans them out to subscribers (never to the client of a call that happens to be in flight).
_SESSION_WIDE = frozenset({"notifications/tools/list_changed", "notifications/prompts/list_changed",
                           "notifications/resources/list_changed", "notifications/resources/updated"})

# The proxy relays sampling, elicitation and roots to its clients, so it offers them upstream.
PROXY_CLIENT_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


class TransportClosed(Exception):
    """The transport lost its upstream (process died, connection refused or reset)."""


class HttpStatusError(Exception):
    """An HTTP upstream answered 5xx without a JSON-RPC error: the call failed at the server."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"upstream answered HTTP {status}{': ' + body if body else ''}")
        self.status = status


class SessionExpired(Exception):
    """The upstream no longer knows our session (HTTP 404): re-initialize."""


class Transport(Protocol):
    async def start(self, deliver: Deliver, on_closed: Callable[[str], None]) -> None: ...

    async def send(self, message: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        """Send one message (HTTP adds ``headers``). An HTTP transport delivers the reply stream before returning."""

    def initialized(self, protocol_version: str) -> None:
        """Called once the handshake is done (HTTP opens its GET stream here)."""

    async def close(self) -> None: ...


@dataclass
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    on_related: RelatedSink | None
    client_token: Any = None
    last_progress: float = float("-inf")


@dataclass
class UpstreamSession:
    server: str
    transport: Transport
    # Unrelated notifications (list_changed, resource updates, logging) and server requests.
    on_notification: Callable[[dict[str, Any]], None]
    on_request: Callable[[dict[str, Any], RelatedSink | None], Awaitable[Any]]
    on_closed: Callable[[str], None]
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _pending: dict[Any, _Pending] = field(default_factory=dict)
    _tokens: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    init_result: dict[str, Any] = field(default_factory=dict)

    async def open(self, client_info: dict[str, Any], protocol_version: str, timeout: float) -> dict[str, Any]:
        await self.transport.start(self._deliver, self._closed)
        params = {"protocolVersion": protocol_version, "capabilities": PROXY_CLIENT_CAPABILITIES,
                  "clientInfo": client_info}
        result = await self.request("initialize", params, timeout=timeout)
        self.init_result = result
        self.transport.initialized(str(result.get("protocolVersion", protocol_version)))
        await self.notify("notifications/initialized")
        return result

    def load(self) -> int:
        return len(self._pending)

    @property
    def capabilities(self) -> dict[str, Any]:
        return self.init_result.get("capabilities") or {}

    async def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float,
                      on_related: RelatedSink | None = None,
                      headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Send a request and return its ``result``; an upstream error raises ``RPCError``."""
        if self.closed:
            raise UpstreamUnavailable(self.server, "session closed")
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        pending = _Pending(asyncio.get_running_loop().create_future(), on_related)
        if params is not None:
            meta = params.get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                # Clients' tokens may collide across sessions: upstream sees ours, the client gets its own back.
                pending.client_token = meta["progressToken"]
                token = f"p{request_id}"
                self._tokens[token] = request_id
                params = {**params, "_meta": {**meta, "progressToken": token}}
            message["params"] = params
        self._pending[request_id] = pending
        try:
            async with asyncio.timeout(timeout):
                await self.transport.send(message, headers)
                response = await pending.future
        except TimeoutError:
            self._cancel_upstream(request_id, "timed out at the proxy")
            raise UpstreamTimeout(self.server, timeout) from None
        except asyncio.CancelledError:
            self._cancel_upstream(request_id, "cancelled by the client")
            raise
        except (TransportClosed, HttpStatusError) as exc:
            raise UpstreamFailed(self.server, str(exc)) from exc
        except TypeError as exc:  # orjson: the caller's params nest too deeply to write, not the upstream's fault
            if not too_deep(exc):
                raise
            raise RPCError(INVALID_PARAMS, unencodable(method)) from None
        finally:
            self._pending.pop(request_id, None)
            if pending.future.done() and not pending.future.cancelled():
                pending.future.exception()  # failed by _fail_all while send() raised: already reported
            if pending.client_token is not None:
                self._tokens.pop(f"p{request_id}", None)
        if "error" in response:
            error = response["error"] if isinstance(response["error"], dict) else {}
            raise RPCError(int(error.get("code", -32603)), str(error.get("message", "upstream error")), error.get("data"))
        result = response.get("result")
        return result if isinstance(result, dict) else {}

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        try:
            await self.transport.send(message)
        except TransportClosed as exc:
            raise UpstreamFailed(self.server, str(exc)) from exc

    def _cancel_upstream(self, request_id: int, reason: str) -> None:
        if self.closed:
            return
        params = {"requestId": request_id, "reason": reason}
        task = asyncio.get_running_loop().create_task(self._quiet_notify("notifications/cancelled", params))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _quiet_notify(self, method: str, params: dict[str, Any]) -> None:
        try:
            await self.notify(method, params)
        except Exception as exc:  # the call is already failed; a lost cancel is only logged
            log.debug("could not send %s to %s: %s", method, self.server, exc)

    async def close(self) -> None:
        self.closed = True
        await self.transport.close()
        self._fail_all("upstream session closed")

    # -- inbound ---------------------------------------------------------------
    def _deliver(self, message: dict[str, Any], related_id: Any) -> None:
        if "method" not in message:
            pending = self._pending.get(message.get("id"))
            if pending is not None and not pending.future.done():
                pending.future.set_result(message)
            return
        pending = self._related(message, related_id)
        if "id" in message:  # a server-to-client request: answer it in the background
            sink = pending.on_related if pending else None
            asyncio.get_running_loop().create_task(self._answer(message, sink))
        elif pending is not None and pending.on_related is not None and message["method"] not in _SESSION_WIDE:
            if message["method"] == "notifications/progress":
                message = self._restore_progress(message, pending)
                if message is None:
                    return
            pending.on_related.emit(message)
        else:
            self.on_notification(message)

    def _related(self, message: dict[str, Any], related_id: Any) -> _Pending | None:
        if message.get("method") == "notifications/progress":
            token = (message.get("params") or {}).get("progressToken")
            request_id = self._tokens.get(token) if isinstance(token, str) else None
            if request_id is not None:
                return self._pending.get(request_id)
        if related_id is not None:
            return self._pending.get(related_id)
        if len(self._pending) == 1 and not getattr(self.transport, "relates_messages", False):
            # stdio carries no request relation: with one call in flight the message is its.
            return next(iter(self._pending.values()))
        return None

    @staticmethod
    def _restore_progress(message: dict[str, Any], pending: _Pending) -> dict[str, Any] | None:
        params = dict(message.get("params") or {})
        progress = params.get("progress")
        if isinstance(progress, (int, float)):
            if progress <= pending.last_progress:
                return None  # progress must only increase
            pending.last_progress = progress
        params["progressToken"] = pending.client_token
        return {**message, "params": params}

    async def _answer(self, message: dict[str, Any], sink: RelatedSink | None) -> None:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            reply["result"] = await self.on_request(message, sink)
        except RPCError as exc:
            reply["error"] = exc.to_error()
        except Exception as exc:
            log.exception("relaying %s from %s failed", message.get("method"), self.server)
            reply["error"] = {"code": -32603, "message": f"proxy could not relay the request: {type(exc).__name__}"}
        try:
            await self.transport.send(reply)
        except Exception as exc:
            log.warning("could not answer %s to %s: %s", message.get("method"), self.server, exc)

    def _closed(self, reason: str) -> None:
        self.closed = True
        self._fail_all(reason)
        self.on_closed(reason)

    def _fail_all(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(TransportClosed(reason))



def too_deep(exc: BaseException) -> bool:
    """orjson's refusal to write a value nested deeper than 255 levels (it parses up to 1024): client
    input the proxy accepted but cannot forward, hash or cache. (orjson.JSONEncodeError is TypeError
    itself, so the message is what tells it from a bug.)"""
    return type(exc) is TypeError and str(exc) == "Recursion limit reached"


def unencodable(method: str) -> str:
    return f"{method}: params are nested too deeply to forward (at most 255 levels of arrays and objects)"
