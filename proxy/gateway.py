"""The gateway: MCP methods answered over the merged catalog, calls routed to upstream pools.

Transport-independent: the HTTP and stdio fronts hand it one JSON-RPC message, the
client session and a sink for messages related to that request, and get back the
response (or None for a notification).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from only1mcp import __version__
from only1mcp.events import TOPICS
from only1mcp.errors import (
    INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, RPCError, UpstreamError, UpstreamUnavailable,
)
from only1mcp.proxy.calls import Calls, request_id_var
from only1mcp.proxy.catalog import SEPARATOR, Catalog
from only1mcp.proxy.context import Context
from only1mcp.proxy.events import make_sink
from only1mcp.proxy.introspect import AdminViews
from only1mcp.proxy.telemetry import Telemetry
from only1mcp.proxy.cursor import decode_cursor, encode_cursor
from only1mcp.proxy.decisions import DecisionSubscriber
from only1mcp.proxy.pool import Override, ServerPool
from only1mcp.proxy.prefetch import COUNTERS as PREFETCH_COUNTERS
from only1mcp.proxy.prefetch import PrefetchExecutor
from only1mcp.proxy.relay import Relay
from only1mcp.proxy.remediation import Remediations
from only1mcp.proxy.routing import RouteRequest
from only1mcp.proxy.sessions import LOG_LEVELS, ClientSession, SessionStore
from only1mcp.proxy.upstream.base import too_deep, unencodable
from only1mcp.proxy.upstream.http1 import Http1Pool
from only1mcp.settings import ServerSettings, Settings

__all__ = ["Gateway", "Sink", "SUPPORTED_VERSIONS", "LATEST_VERSION"]

log = logging.getLogger("only1mcp.gateway")

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
Handler = Callable[[dict[str, Any], ClientSession, Any], Awaitable[dict[str, Any]]]


class Sink:
    """Messages that belong to one client request; a front decides how they travel."""

    def __init__(self, session: ClientSession, send: Callable[[dict[str, Any]], None]) -> None:
        self.session, self._send = session, send

    def emit(self, message: dict[str, Any]) -> None:
        if message.get("method") == "notifications/message":
            if not self.session.wants_log((message.get("params") or {}).get("level")):
                return
        self._send(message)


class Gateway(AdminViews, Relay):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        proxy = settings.proxy
        self.catalog = Catalog([(s.name, s.namespace) for s in settings.servers], proxy.max_tool_name_length)
        self.sessions = SessionStore(proxy.session_idle_timeout, proxy.max_sessions, proxy.max_sessions_per_client)
        self._http: aiohttp.ClientSession | None = None
        self.watcher: Any = None  # the configuration watcher, when the CLI gave a file to reload from
        self.metrics: Any = None  # ProxyMetrics, attached by the app
        self.fast = Http1Pool(proxy.connect_timeout)  # hot-path POSTs to http:// upstreams
        # Runtime overrides (POST /admin/overrides): server → upstream tool name → Override. Each pool
        # holds its server's dict, so they outlive a reload of the server.
        self.overrides: dict[str, dict[str, Override]] = {}
        self.remediations = Remediations(self)  # remediation decisions: switches, counts, webhooks
        self.refused = {"replica_inflight": 0}  # calls refused because every routable replica was at max_inflight
        self.pools = {s.name: self.make_pool(s) for s in settings.servers}
        super().__init__()
        self.calls = Calls(self)
        self.context = Context(self.catalog, lambda: self.settings.context)  # tools/list context optimisation
        events = settings.events
        self.events = make_sink(events)
        self.telemetry = Telemetry(self.events, events.hash_key,
                                   events.proxy_id or f"{socket.gethostname()}:{proxy.port}")
        self.telemetry.enabled = bool(events.bootstrap)
        # Prefetch decisions from the learning loop, run in the background ([prefetch]; at restart only).
        self.prefetch = PrefetchExecutor(self) if settings.prefetch.enabled else None
        self.calls.prefetch = self.prefetch
        self.sessions.on_end = self._session_ended
        # The decision channel (routing weights from the learning loop), when there is a broker.
        bootstrap = settings.decisions.bootstrap or events.bootstrap
        decisions = settings.decisions
        if self.prefetch is not None and TOPICS["prefetch"] not in decisions.topics:
            decisions = dataclasses.replace(decisions, topics=(*decisions.topics, TOPICS["prefetch"]))
        self.subscriber = DecisionSubscriber(self, decisions, bootstrap) if bootstrap else None
        self._handlers: dict[str, Handler] = {
            "ping": self._ping,
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
            "prompts/list": self._prompts_list,
            "prompts/get": self._prompts_get,
            "resources/list": self._resources_list,
            "resources/templates/list": self._templates_list,
            "resources/read": self._resource_call,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "completion/complete": self._complete,
            "logging/setLevel": self._set_level,
        }

    # -- lifecycle ---------------------------------------------------------------
    def make_pool(self, server: ServerSettings) -> ServerPool:
        proxy = self.settings.proxy
        pool = ServerPool(server, self, self.http, connect_timeout=proxy.connect_timeout,
                          call_timeout=proxy.call_timeout, retry=self.settings.retry, metrics=self.metrics)
        for replica in pool.replicas:
            replica.fast = self.fast
        pool.runtime_overrides = self.overrides.setdefault(server.name, {})
        pool.refused = self.refused  # one count for every pool, kept across reloads
        pool.remediation = self.remediations.attach(pool)
        return pool

    def attach_metrics(self, metrics: Any) -> None:
        self.metrics = metrics
        for pool in self.pools.values():
            pool.metrics = metrics
        if self.calls.cache is not None:  # cache figures are read at scrape time, not counted per call
            metrics.register_collector(self.calls.cache.stats, prefix="only1mcp_cache_",
                                       counters=("hits", "misses", "evictions", "expirations", "rejected",
                                                 "invalidations"), help_text="response cache")
            metrics.register_cache_ttls(self.calls.adaptive.current)
        # The event sink's counters: what a consumer of mcp.requests should find, and what was lost.
        metrics.register_collector(self.event_counters, prefix="only1mcp_events_",
                                   counters=("emitted", "delivered", "spooled", "replayed", "dropped",
                                             "spool_corrupt", "send_errors"), help_text="request events")
        metrics.register_decisions(self.decision_counts, self.decision_ages)
        if self.prefetch is not None:
            metrics.register_collector(self.prefetch.metrics, prefix="only1mcp_prefetch_",
                                       counters=PREFETCH_COUNTERS, help_text="prefetch")
        remediations = self.remediations
        metrics.register_remediations(lambda: remediations.counts, remediations.remediated,
                                      remediations.webhook_failures)

    def event_counters(self) -> dict[str, float]:
        """The sink's numeric counters (emitted, delivered, dropped, queue_depth, broker_up, …)."""
        return {key: float(value) for key, value in self.events.counters().items()
                if isinstance(value, (int, float))}  # bools included: broker_up, idempotent

    def decision_counts(self) -> dict[tuple[str, str], int]:
        return dict(self.subscriber.counts) if self.subscriber is not None else {}

    def decision_ages(self) -> dict[str, float]:
        return self.subscriber.ages() if self.subscriber is not None else {}

    def admin_prefetch(self) -> dict[str, Any]:
        """GET /admin/prefetch: counts, budget and settings; never an argument value or a result."""
        if self.prefetch is None:
            return {"enabled": False, "settings": dataclasses.asdict(self.settings.prefetch)}
        return self.prefetch.snapshot()

    async def apply_settings(self, settings: Settings) -> dict[str, Any]:
        """Apply a new configuration without dropping calls in flight (see reload.py)."""
        from only1mcp.proxy.reload import apply

        return await apply(self, settings)

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            # One pooled client for every HTTP upstream: no per-call connection or session setup.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
            self._http = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._http

    async def start(self, wait: float | None = None) -> None:
        await self.events.start()
        for pool in self.pools.values():
            pool.start()
        replicas = [r for p in self.pools.values() for r in p.replicas]
        wait = self.settings.proxy.connect_timeout if wait is None else wait
        if replicas:  # serve as soon as every replica answered or the wait ran out; late ones join later
            await asyncio.gather(*(r.wait_ready(wait) for r in replicas))
        await self.settle()
        if self.prefetch is not None:
            self.prefetch.start()
        if self.subscriber is not None:  # after the catalog is known: decisions name exposed tools
            await self.subscriber.start()

    async def stop(self) -> None:
        if self.subscriber is not None:
            await self.subscriber.stop()
        if self.prefetch is not None:
            await self.prefetch.stop()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()), return_exceptions=True)
        self.cancel_background()
        await self.remediations.close()
        self.fast.close()
        if self._http is not None:
            await self._http.close()
        await self.events.stop()

    # -- dispatch ----------------------------------------------------------------
    async def handle(self, message: dict[str, Any], session: ClientSession, sink: Sink | None) -> dict[str, Any] | None:
        method = message.get("method")
        if "id" not in message:
            params = message.get("params")  # a notification gets no answer: bad params are ignored, not a 500
            await self.client_notification(method, params if isinstance(params, dict) else {}, session)
            return None
        request_id = message["id"]
        request_id_var.set(request_id)
        handler = self._handlers.get(method)  # type: ignore[arg-type]
        try:
            if handler is None:
                raise RPCError(METHOD_NOT_FOUND, f"Method not found: {method}")
            params = message.get("params", {})
            if not isinstance(params, dict):
                raise RPCError(INVALID_PARAMS, "params must be an object")
            result = await handler(params, session, sink)
        except RPCError as exc:
            return {"jsonrpc": "2.0", "id": request_id, "error": exc.to_error()}
        except Exception as exc:
            if too_deep(exc):  # arguments too deep to write again (hashing, caching them)
                return {"jsonrpc": "2.0", "id": request_id,
                        "error": {"code": INVALID_PARAMS, "message": unencodable(str(method))}}
            log.exception("internal error handling %s", method)
            return {"jsonrpc": "2.0", "id": request_id,
                    "error": {"code": INTERNAL_ERROR, "message": f"internal error handling {method}"}}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def negotiate(self, requested: Any) -> str:
        return requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION

    def initialize_result(self, version: str) -> dict[str, Any]:
        result: dict[str, Any] = {"protocolVersion": version, "capabilities": self.capabilities(),
                                  "serverInfo": {"name": "only1mcp", "title": "Only1MCP", "version": __version__}}
        notes = [f"[{name}] {text}" for name, text in self.instructions().items()]
        if notes:
            result["instructions"] = "\n".join(notes)
        return result

    # -- methods -----------------------------------------------------------------
    async def _ping(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        return {}

    def _page(self, kind: str, key: str, params: dict[str, Any], items: list[dict[str, Any]] | None = None,
              ) -> dict[str, Any]:
        items = self.catalog.lists[kind] if items is None else items
        start = 0
        if params.get("cursor") is not None:
            start, _ = decode_cursor(kind, params["cursor"])
            if start > len(items):
                raise RPCError(INVALID_PARAMS, f"Invalid cursor for {kind}")
        end = start + self.settings.proxy.page_size
        result: dict[str, Any] = {key: items[start:end]}
        if end < len(items):
            result["nextCursor"] = encode_cursor(kind, end)
        return result

    async def _tools_list(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        if self.context.active(session):  # an opted-in client: its likely tools and the search tool
            return self._page("tools", "tools", params, self.context.tools(session))
        return self._page("tools", "tools", params)

    async def _prompts_list(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        return self._page("prompts", "prompts", params)

    async def _templates_list(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        return self._page("resourceTemplates", "resourceTemplates", params)

    async def _tools_call(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        return await self._named_call("tools", "tools/call", params, session, sink)

    async def _prompts_get(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        return await self._named_call("prompts", "prompts/get", params, session, sink)

    async def _named_call(self, kind: str, method: str, params: dict[str, Any], session: ClientSession,
                          sink: Any) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RPCError(INVALID_PARAMS, f"{method}: 'name' must be a string")
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise RPCError(INVALID_PARAMS, f"{method}: 'arguments' must be an object")
        entry = self.catalog.lookup(kind, name)
        if kind == "tools" and self.settings.context.enabled:  # counted for ranking; the search tool answered
            answer = self.context.on_call(name, entry, arguments, session)
            if answer is not None:
                return answer
        if entry is None:
            self._raise_if_owner_down(name)
            raise RPCError(INVALID_PARAMS, f"Unknown {kind[:-1]}: {name}")
        if entry.upstream_name != name:
            params = {**params, "name": entry.upstream_name}
        return await self.calls.call(method, entry, params, session, sink)

    def _raise_if_owner_down(self, name: str) -> None:
        namespace = name.split(SEPARATOR, 1)[0] if SEPARATOR in name else ""
        for server in self.settings.servers:
            if server.namespace == namespace and namespace and self.pools[server.name].any_ready() is None:
                raise UpstreamUnavailable(server.name, "no ready replica; its tools are unavailable until it returns")

    async def _resources_list(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        names = list(self.pools)
        position, upstream_cursor = 0, None
        if params.get("cursor") is not None:
            position, upstream_cursor = decode_cursor("resources", params["cursor"])
        while position < len(names):
            pool = self.pools[names[position]]
            if not self.serves(pool.name, "resources"):
                position, upstream_cursor = position + 1, None
                continue
            forwarded = {"cursor": upstream_cursor} if upstream_cursor is not None else {}
            try:
                result = await pool.call("resources/list", forwarded, RouteRequest(pool.name, "resources/list"))
            except UpstreamError as exc:
                log.warning("resources/list skipped %s: %s", pool.name, exc)
                position, upstream_cursor = position + 1, None
                continue
            resources = result.get("resources") or []
            self.learn_uris(pool.name, resources)
            if result.get("nextCursor") is not None:
                return {"resources": resources, "nextCursor": encode_cursor("resources", position, result["nextCursor"])}
            position, upstream_cursor = position + 1, None
            if resources:
                more = any(self.serves(n, "resources") for n in names[position:])
                return {"resources": resources, **({"nextCursor": encode_cursor("resources", position)} if more else {})}
        return {"resources": []}

    async def _resource_call(self, params: dict[str, Any], session: ClientSession, sink: Any,
                             method: str = "resources/read") -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RPCError(INVALID_PARAMS, f"{method}: 'uri' must be a string")
        owners = self.uri_owners(uri)
        if not owners:
            raise RPCError(RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})
        last: RPCError | None = None
        for server in owners:  # an unknown URI is tried on each resource server in order
            try:
                return await self.pools[server].call(method, self.upstream_params(params),
                                                     RouteRequest(server, method, uri, session.id), sink=sink)
            except RPCError as exc:
                last = exc
        assert last is not None
        raise last

    async def _subscribe(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        result = await self._resource_call(params, session, sink, "resources/subscribe")
        session.subscriptions.add(params["uri"])
        return result

    async def _unsubscribe(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        if not isinstance(params.get("uri"), str):  # before the set lookups: a list or object is unhashable
            raise RPCError(INVALID_PARAMS, "resources/unsubscribe: 'uri' must be a string")
        session.subscriptions.discard(params["uri"])
        if any(params.get("uri") in s.subscriptions for s in self.sessions):
            return {}  # another client still wants updates for it
        return await self._resource_call(params, session, sink, "resources/unsubscribe")

    async def _complete(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise RPCError(INVALID_PARAMS, "completion/complete: 'ref' must be an object")
        if ref.get("type") == "ref/prompt":
            entry = self.catalog.lookup("prompts", str(ref.get("name")))
            if entry is None:
                raise RPCError(INVALID_PARAMS, f"Unknown prompt: {ref.get('name')}")
            server, params = entry.server, {**params, "ref": {**ref, "name": entry.upstream_name}}
        elif ref.get("type") == "ref/resource":
            owners = self.uri_owners(str(ref.get("uri")), template=True)
            if not owners:
                raise RPCError(INVALID_PARAMS, f"Unknown resource template: {ref.get('uri')}")
            server = owners[0]
        else:
            raise RPCError(INVALID_PARAMS, "completion/complete: ref.type must be ref/prompt or ref/resource")
        route = RouteRequest(server, "completion/complete", None, session.id)
        return await self.pools[server].call("completion/complete", self.upstream_params(params), route)

    def _session_ended(self, session: ClientSession) -> None:
        if self.prefetch is not None:  # a session's memory goes with it (DELETE, expiry)
            self.prefetch.end_session(session)
        self.sessions_changed()

    async def _set_level(self, params: dict[str, Any], session: ClientSession, sink: Any) -> dict[str, Any]:
        level = params.get("level")
        if not isinstance(level, str) or level not in LOG_LEVELS:
            raise RPCError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
        session.log_level = level
        self.fan_out_level()
        return {}
