"""One request event per MCP request, built at the front once the answer is out.

Along the request path the gateway fills a ``CallContext`` (which replica, which policy
and why, cache hit, keyed argument hash); the front adds what only it knows (sizes,
timing, the outcome) and hands a ``RequestEvent`` to the event sink, which never blocks.
Privacy: session ids, client ids and arguments leave only as keyed hashes.
"""

from __future__ import annotations

import contextvars
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from only1mcp.events import RequestEvent, keyed_hash

__all__ = ["CallContext", "call_context", "request_uid", "new_request_id", "REQUEST_ID_HEADER", "Telemetry",
           "classify"]

REQUEST_ID_HEADER = b"only1mcp-request-id"  # Only1MCP-Request-Id: the request id, on every answer to a request


@dataclass(slots=True)
class CallContext:
    tool: str | None = None
    server: str | None = None
    replica: str | None = None
    policy: str | None = None
    reason: str | None = None
    attempts: int = 0
    cache_hit: bool = False
    prefetch_hit: bool = False  # answered from an entry a prefetch stored (or a prefetch in flight)
    args_hash: str | None = None
    request_id: str | None = None  # the front's request id: the event's event_id, the explanation's key
    inflight: int | None = None  # calls in flight on the replica when it was chosen (before this one)


call_context: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("only1mcp_call", default=None)
# The request id of the MCP request being handled (set by the front before the handler task is made).
request_uid: contextvars.ContextVar[str | None] = contextvars.ContextVar("only1mcp_request_uid", default=None)


def new_request_id() -> str:
    """A new request id (uuid4 hex), made the current one for this context and the tasks it starts."""
    request_id = uuid.uuid4().hex
    request_uid.set(request_id)
    return request_id

_ERROR_CLASS = {-32700: "parse_error", -32600: "invalid_request", -32601: "method_not_found",
                -32602: "invalid_params", -32603: "internal_error", -32001: "timeout", -32002: "resource_not_found",
                -32010: "upstream_unavailable", -32011: "upstream_failed", -32800: "cancelled",
                -32029: "rate_limited", -32020: "header_mismatch", -32022: "unsupported_version"}
_STATUS = {-32001: "timeout", -32010: "unavailable", -32011: "error", -32603: "error", -32800: "cancelled"}


def classify(reply: Any) -> tuple[str, int | None, str | None]:
    """(status, error code, error class) of a JSON-RPC reply."""
    if not isinstance(reply, dict):
        return "ok", None, None
    error = reply.get("error")
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), int) else None
        return _STATUS.get(code, "rejected"), code, _ERROR_CLASS.get(code, "upstream_error")  # type: ignore[arg-type]
    result = reply.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        return "error", None, "tool_error"
    return "ok", None, None


class Telemetry:
    """Builds and emits request events; a no-op while the sink is off."""

    def __init__(self, sink: Any, hash_key: str, proxy_id: str) -> None:
        self.sink = sink
        self.enabled = bool(getattr(sink, "enabled", True))
        self.key = hash_key.encode() if hash_key else os.urandom(32)  # random: hashes valid for this run
        self.proxy_id = proxy_id
        self._session_hashes: dict[str, str] = {}

    def begin(self, request_id: str | None = None) -> CallContext | None:
        if not self.enabled:
            return None
        context = CallContext(request_id=request_id)
        call_context.set(context)
        return context

    def hash(self, value: Any) -> str:
        return keyed_hash(self.key, value)

    def session_hash(self, session_id: str | None) -> str | None:
        """The keyed hash of a session id, as request events carry it (and prefetch decisions name it)."""
        if session_id is None:
            return None
        hashed = self._session_hashes.get(session_id)
        if hashed is None:
            if len(self._session_hashes) > 100_000:
                self._session_hashes.clear()
            hashed = self._session_hashes[session_id] = self.hash(session_id.encode())
        return hashed

    def finish(self, context: CallContext | None, message: dict[str, Any], reply: Any, started: float,
               started_wall: float, request_bytes: int, response_bytes: int, session_id: str | None,
               client_id: str | None) -> None:
        if context is None:
            return
        status, code, error_class = classify(reply)
        # Only a name the catalog resolved (set by Calls): the name of an unknown tool is the client's
        # raw input, which events never carry (nor should it grow the streams' per-tool state).
        tool = context.tool
        event = RequestEvent(
            event_id=context.request_id or uuid.uuid4().hex, ts=started_wall, latency_ms=(time.perf_counter() - started) * 1000.0,
            method=str(message.get("method")), status=status, proxy_id=self.proxy_id,
            client_id=self.hash(client_id.encode()) if client_id else None, session_id=self.session_hash(session_id),
            tool=tool, server=context.server, replica=context.replica, error_code=code, error_class=error_class,
            request_bytes=request_bytes, response_bytes=response_bytes, args_hash=context.args_hash,
            cache_hit=context.cache_hit, prefetch_hit=context.prefetch_hit, policy=context.policy,
            reason=context.reason, attempts=context.attempts, inflight=context.inflight)
        self.sink.emit(event)
