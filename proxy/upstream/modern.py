"""Speaking the stateless revision 2026-07-28 to an upstream that supports it.

No initialize and no session: ``server/discover`` first, then every request carries
the ``_meta`` envelope and the ``Mcp-Method`` / ``Mcp-Name`` headers. What the
proxy's gateway expects of an upstream session is kept: an ``input_required`` result
is answered by asking the client (the same relay as a session-era server-to-client
request) and the call retried with ``inputResponses``; ``subscriptions/listen``
replaces the GET stream; ``logging/setLevel`` and ``resources/subscribe`` become
request ``_meta`` and the listen filter. Cancelling a call closes its stream.

A ``tools/call`` mirrors the arguments its tool marks with ``x-mcp-header`` into
``Mcp-Param-<Name>`` headers (``proxy/param_headers.py``), learned from the upstream's
``tools/list`` (listed once by the session itself if the catalog's listing went through
another replica); a tool whose annotations break the rules is left out of the list. An
upstream that answers -32020 (HeaderMismatch) gets its tools listed again and the call
retried once if that changes its headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from only1mcp.errors import HEADER_MISMATCH, INTERNAL_ERROR, RPCError
from only1mcp.proxy.param_headers import annotations, header_value, mirror
from only1mcp.proxy.upstream.base import PROXY_CLIENT_CAPABILITIES, RelatedSink, UpstreamSession

__all__ = ["ModernSession", "NotModern", "STATELESS_VERSION"]

log = logging.getLogger("only1mcp.upstream.modern")

STATELESS_VERSION = "2026-07-28"
_META = "io.modelcontextprotocol/"
_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_MAX_INPUT_ROUNDS = 10
_RESULT_ENVELOPE = ("resultType", "ttlMs", "cacheScope")


class NotModern(Exception):
    """The upstream does not speak 2026-07-28: fall back to an initialize session."""


class _ListenSink:
    """Frames of the listen stream that are not session-wide (the acknowledgement) are dropped."""

    def emit(self, message: dict[str, Any]) -> None:
        pass


@dataclass
class ModernSession(UpstreamSession):
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    _client_info: dict[str, Any] = field(default_factory=dict)
    _listen_task: asyncio.Task[None] | None = None
    # x-mcp-header annotations by tool name, from the upstream's tools/list; None until a whole list was seen.
    _param_headers: dict[str, Any] | None = None
    _param_pages: dict[str, Any] | None = None  # the pages of a listing under way
    _listing: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        forward = self.on_notification

        def untagged(message: dict[str, Any]) -> None:  # the listen stream's tag is ours, not the client's
            params = message.get("params")
            if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
                meta = {k: v for k, v in params["_meta"].items() if not k.startswith(_META)}
                message = {**message, "params": {**params, "_meta": meta} if meta else
                           {k: v for k, v in params.items() if k != "_meta"}}
            forward(message)

        self.on_notification = untagged

    async def open(self, client_info: dict[str, Any], protocol_version: str, timeout: float) -> dict[str, Any]:
        await self.transport.start(self._deliver, self._closed)
        self._client_info = client_info
        self.transport.initialized(STATELESS_VERSION)
        try:
            result = await self.request("server/discover", {}, timeout=timeout)
        except RPCError as exc:
            raise NotModern(f"server/discover answered {exc.code}: {exc.message}") from exc
        if STATELESS_VERSION not in (result.get("supportedVersions") or []):
            raise NotModern(f"server/discover offers {result.get('supportedVersions')}")
        meta = result.get("_meta") if isinstance(result.get("_meta"), dict) else {}
        self.init_result = {"protocolVersion": STATELESS_VERSION, "capabilities": result.get("capabilities") or {},
                            "serverInfo": meta.get(f"{_META}serverInfo") or {}}
        if result.get("instructions"):
            self.init_result["instructions"] = result["instructions"]
        self._restart_listen()
        return self.init_result

    async def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float,
                      on_related: RelatedSink | None = None,
                      headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        params = dict(params or {})
        if method == "ping":
            return {}
        if method == "logging/setLevel":
            self.log_level = params.get("level")
            return {}
        if method in ("resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if isinstance(uri, str):
                (self.subscriptions.add if method == "resources/subscribe" else self.subscriptions.discard)(uri)
                self._restart_listen()
            return {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        relisted = False
        if method == "tools/call" and self._param_headers is None:
            await self._learn_tools(deadline)
        for _ in range(_MAX_INPUT_ROUNDS):
            headers = self._headers(method, params)
            try:
                result = await super().request(method, self._envelope(params),
                                               timeout=max(deadline - loop.time(), 0.001),
                                               on_related=on_related, headers=headers)
            except RPCError as exc:
                if exc.code != HEADER_MISMATCH or method != "tools/call" or relisted:
                    raise
                relisted = True  # the tool's schema may have changed: list again, retry if its headers did
                await self._learn_tools(deadline, again=True)
                if self._headers(method, params) == headers:
                    raise
                continue
            if result.get("resultType") != "input_required":
                if method == "tools/list":
                    result = self._keep_valid_tools(result, params)
                return result if method == "server/discover" else _without_envelope(result)
            params = {**params, **await self._answer_inputs(result, on_related)}
        raise RPCError(INTERNAL_ERROR, f"upstream '{self.server}' asked for input more than {_MAX_INPUT_ROUNDS} times")

    def _keep_valid_tools(self, result: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Record the page's x-mcp-header annotations; a tool whose annotations break the rules is left out."""
        learned = self._param_pages if "cursor" in params and self._param_pages is not None else {}
        kept = []
        for tool in result.get("tools") or []:
            name = tool.get("name") if isinstance(tool, dict) else None
            found, problem = annotations(tool.get("inputSchema")) if isinstance(name, str) else ({}, None)
            if problem:
                log.warning("upstream %s: tool %r left out: %s", self.server, name, problem)
                continue
            if found:
                learned[name] = found  # type: ignore[index]
            kept.append(tool)
        if result.get("nextCursor"):
            self._param_pages = learned  # the listing goes on: calls meanwhile use the previous one
        else:
            self._param_headers, self._param_pages = learned, None
        return {**result, "tools": kept}

    async def _learn_tools(self, deadline: float, again: bool = False) -> None:
        """List the upstream's tools (all pages) to learn their headers; concurrent calls share one listing."""
        if self._listing is None or self._listing.done():
            if not again and self._param_headers is not None:
                return
            self._listing = asyncio.get_running_loop().create_task(self._list_tools(deadline))
        try:
            await asyncio.shield(self._listing)
        except Exception as exc:  # a call without its headers is better than no call (a -32020 relists)
            log.info("could not list the tools of %s for their Mcp-Param headers: %s", self.server, exc)
            if self._param_headers is None:
                self._param_headers = {}

    async def _list_tools(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        cursor = None
        for _ in range(100):
            params = {"cursor": cursor} if cursor is not None else {}
            result = await self.request("tools/list", params, timeout=max(deadline - loop.time(), 0.001))
            cursor = result.get("nextCursor")
            if not cursor:
                return

    async def _answer_inputs(self, result: dict[str, Any], sink: RelatedSink | None) -> dict[str, Any]:
        """Ask the client what the upstream needs, as session-era server-to-client requests."""
        requests = result.get("inputRequests") if isinstance(result.get("inputRequests"), dict) else {}
        keys = list(requests)
        answers = await asyncio.gather(*(
            self.on_request({"jsonrpc": "2.0", "id": key, "method": requests[key].get("method"),
                             "params": requests[key].get("params")}, sink) for key in keys))
        retry: dict[str, Any] = {"inputResponses": dict(zip(keys, answers))}
        if "requestState" in result:
            retry["requestState"] = result["requestState"]
        return retry

    def _envelope(self, params: dict[str, Any]) -> dict[str, Any]:
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        meta = {**meta, f"{_META}protocolVersion": STATELESS_VERSION,
                f"{_META}clientCapabilities": PROXY_CLIENT_CAPABILITIES, f"{_META}clientInfo": self._client_info}
        if self.log_level is not None:
            meta[f"{_META}logLevel"] = self.log_level
        return {**params, "_meta": meta}

    def _headers(self, method: str, params: dict[str, Any]) -> dict[str, str]:
        headers = {"Mcp-Method": method}
        if method in _NAMED and isinstance(params.get(_NAMED[method]), str):
            headers["Mcp-Name"] = header_value(params[_NAMED[method]])
            if method == "tools/call" and self._param_headers:
                annotated = self._param_headers.get(params["name"])
                if annotated:
                    headers.update(mirror(annotated, params.get("arguments")))
        return headers

    def _cancel_upstream(self, request_id: int, reason: str) -> None:
        pass  # at 2026-07-28 closing the request's stream is the cancel, and that already happened

    def _restart_listen(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
        if not self.init_result or self.closed:
            return
        self._listen_task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        """Hold subscriptions/listen open: list changes and resource updates arrive on it."""
        while not self.closed:
            wanted: dict[str, Any] = {"toolsListChanged": True, "promptsListChanged": True,
                                      "resourcesListChanged": True}
            if self.subscriptions:
                wanted["resourceSubscriptions"] = sorted(self.subscriptions)
            try:
                await self.request("subscriptions/listen", {"notifications": wanted}, timeout=10 ** 9,
                                   on_related=_ListenSink())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("listen stream of %s ended: %s", self.server, exc)
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
        await super().close()


def _without_envelope(result: dict[str, Any]) -> dict[str, Any]:
    """The gateway speaks both eras: the 2026 envelope is added back by the stateless front."""
    result = {k: v for k, v in result.items() if k not in _RESULT_ENVELOPE}
    meta = result.get("_meta")
    if isinstance(meta, dict) and f"{_META}serverInfo" in meta:
        meta = {k: v for k, v in meta.items() if k != f"{_META}serverInfo"}
        result = {**result, "_meta": meta} if meta else {k: v for k, v in result.items() if k != "_meta"}
    return result
