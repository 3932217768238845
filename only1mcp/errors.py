"""One exception root for Only1MCP, and the JSON-RPC error codes it answers with.

Third-party errors (aiohttp, OS, JSON) are translated at the boundary where they
happen, with ``raise ... from exc``, so callers only ever catch these.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "REQUEST_TIMEOUT",
    "RESOURCE_NOT_FOUND",
    "UPSTREAM_UNAVAILABLE",
    "UPSTREAM_FAILED",
    "RATE_LIMITED",
    "TOO_MANY_SESSIONS",
    "TOO_MANY_INFLIGHT",
    "STREAM_OVERRUN",
    "HEADER_MISMATCH",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "Only1MCPError",
    "ConfigError",
    "RPCError",
    "UpstreamError",
    "UpstreamUnavailable",
    "UpstreamFailed",
    "UpstreamSaturated",
    "UpstreamTimeout",
]

# JSON-RPC 2.0 and MCP codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_TIMEOUT = -32001  # the MCP SDKs' code for a request that timed out
RESOURCE_NOT_FOUND = -32002  # MCP: resources/read of an unknown URI
HEADER_MISMATCH = -32020  # 2026-07-28: MCP-Protocol-Version header disagrees with _meta
UNSUPPORTED_PROTOCOL_VERSION = -32022  # 2026-07-28: version not supported
# Only1MCP's own codes, in the JSON-RPC range reserved for implementations.
UPSTREAM_UNAVAILABLE = -32010  # no replica of the server can take the call now
UPSTREAM_FAILED = -32011  # the upstream went away (crash, connection lost) during the call
RATE_LIMITED = -32029  # the client's rate limit is used up (HTTP 429 + Retry-After); -32029 echoes 429, a common choice
TOO_MANY_SESSIONS = -32030  # initialize past max_sessions_per_client (HTTP 429) or max_sessions (HTTP 503)
TOO_MANY_INFLIGHT = -32031  # a request past max_inflight_per_session / _per_client (HTTP 429 + Retry-After)
STREAM_OVERRUN = -32032  # the client left its SSE answer unread past max_stream_buffer_bytes: the call is cancelled


class Only1MCPError(Exception):
    """Root of every error Only1MCP raises on purpose."""


class ConfigError(Only1MCPError):
    """A configuration file or override is invalid: names the file, the key and why."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"{source}: {key}: {reason}")


class RPCError(Only1MCPError):
    """An error that becomes a JSON-RPC error object for the client."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class UpstreamError(RPCError):
    """An upstream server could not serve a request."""


class UpstreamUnavailable(UpstreamError):
    def __init__(self, server: str, reason: str) -> None:
        super().__init__(UPSTREAM_UNAVAILABLE, f"upstream '{server}' is unavailable: {reason}", {"server": server})


class UpstreamSaturated(UpstreamError):
    """Every routable replica already has ``max_inflight`` calls in flight: refused at once, not queued
    (a queue in front of an overloaded upstream only turns an overload into timeouts for everyone)."""

    def __init__(self, server: str, max_inflight: int, replicas: int) -> None:
        super().__init__(
            UPSTREAM_UNAVAILABLE,
            f"upstream '{server}' is saturated: each of its {replicas} routable replica(s) has {max_inflight} calls "
            "in flight (max_inflight); retry shortly",
            {"server": server, "reason": "saturated", "max_inflight": max_inflight, "retry_after_s": 1})


class UpstreamFailed(UpstreamError):
    def __init__(self, server: str, reason: str) -> None:
        super().__init__(UPSTREAM_FAILED, f"upstream '{server}' failed during the call: {reason}", {"server": server})


class UpstreamTimeout(UpstreamError):
    def __init__(self, server: str, seconds: float) -> None:
        super().__init__(
            REQUEST_TIMEOUT, f"upstream '{server}' did not answer within {seconds:g} s; the call was cancelled",
            {"server": server, "timeout_s": seconds},
        )
