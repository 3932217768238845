"""What flows between upstreams and clients outside a request/response: catalog refreshes,
list_changed and resource updates, logging, server-to-client requests, cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from only1mcp.errors import METHOD_NOT_FOUND, RPCError, UpstreamError
from only1mcp.proxy.sessions import LOG_LEVELS, ClientSession
from only1mcp.proxy.upstream.replica import Replica, ReplicaHooks

if TYPE_CHECKING:
    from only1mcp.proxy.pool import ServerPool
    from only1mcp.proxy.catalog import Catalog
    from only1mcp.proxy.sessions import SessionStore
    from only1mcp.settings import Settings

__all__ = ["Relay"]

log = logging.getLogger("only1mcp.relay")

_LISTS = {  # kind -> (list method, result key, capability, client notification)
    "tools": ("tools/list", "tools", "tools", "notifications/tools/list_changed"),
    "prompts": ("prompts/list", "prompts", "prompts", "notifications/prompts/list_changed"),
    "resourceTemplates": ("resources/templates/list", "resourceTemplates", "resources",
                          "notifications/resources/list_changed"),
}
_CHANGED = {"notifications/tools/list_changed": ("tools",), "notifications/prompts/list_changed": ("prompts",),
            "notifications/resources/list_changed": ("resourceTemplates", "resources")}
_MAX_PAGES = 100
# What a client that set no level is assumed to want while another client has set one: the level
# most servers log at by default (the protocol leaves the default to the server).
UNSET_CLIENT_LOG_LEVEL = "info"
_CLIENT_CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
                      "roots/list": "roots"}


class Relay(ReplicaHooks):
    settings: Settings
    pools: dict[str, ServerPool]
    catalog: Catalog
    sessions: SessionStore
    calls: Any

    def __init__(self) -> None:
        self._uri_owner: dict[str, str] = {}
        self._caps: dict[str, dict[str, Any]] = {}  # last known capabilities per server
        self._instructions: dict[str, str] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._refresh_locks: dict[str, asyncio.Lock] = {}
        self._upstream_level: str | None = None  # the level last set on the upstream sessions, if any

    # -- what the servers offer --------------------------------------------------
    def serves(self, server: str, capability: str) -> bool:
        return capability in self._caps.get(server, {})

    def capabilities(self) -> dict[str, Any]:
        caps: dict[str, Any] = {"tools": {"listChanged": True}}
        known = self._caps.values()
        if any("prompts" in c for c in known):
            caps["prompts"] = {"listChanged": True}
        if any("resources" in c for c in known):
            subscribe = any((c.get("resources") or {}).get("subscribe") for c in known)
            caps["resources"] = {"subscribe": bool(subscribe), "listChanged": True}
        if any("logging" in c for c in known):
            caps["logging"] = {}
        if any("completions" in c for c in known):
            caps["completions"] = {}
        return caps

    def instructions(self) -> dict[str, str]:
        return dict(self._instructions)

    def forget_server(self, server: str) -> None:
        """A server removed by a reload: nothing of it may be routed to or advertised."""
        self._caps.pop(server, None)
        self._instructions.pop(server, None)
        for uri in [u for u, owner in self._uri_owner.items() if owner == server]:
            del self._uri_owner[uri]

    def learn_uris(self, server: str, resources: list[Any]) -> None:
        for resource in resources:
            if isinstance(resource, dict) and isinstance(resource.get("uri"), str):
                self._uri_owner[resource["uri"]] = server

    def uri_owners(self, uri: str, template: bool = False) -> list[str]:
        if template:
            owners = [s for _r, t, s in self.catalog.templates if t == uri]
            if owners:
                return owners[:1]
        if uri in self._uri_owner:
            return [self._uri_owner[uri]]
        server = self.catalog.server_for_uri(uri)
        if server is not None:
            return [server]
        return [name for name in self.pools if self.serves(name, "resources")]

    @staticmethod
    def upstream_params(params: dict[str, Any]) -> dict[str, Any]:
        """Params as an upstream session should see them: stateless-era _meta keys stay at the proxy."""
        meta = params.get("_meta")
        if isinstance(meta, dict) and any(k.startswith("io.modelcontextprotocol/") for k in meta):
            meta = {k: v for k, v in meta.items() if not k.startswith("io.modelcontextprotocol/")}
            return {**params, "_meta": meta} if meta else {k: v for k, v in params.items() if k != "_meta"}
        return params

    # -- catalog -----------------------------------------------------------------
    def ready(self, replica: Replica) -> None:
        assert replica.session is not None
        self._caps[replica.server] = replica.session.capabilities
        text = replica.session.init_result.get("instructions")
        if isinstance(text, str) and text:
            self._instructions[replica.server] = text
        self.spawn(self.refresh(replica.server, list(_LISTS) + ["resources"], announce=True))
        self.spawn(self._resubscribe(replica))
        self.fan_out_level(force=True)  # a new upstream session starts at its default log level

    async def _resubscribe(self, replica: Replica) -> None:
        """A reconnected upstream session knows no subscriptions: renew those clients still hold."""
        if not (self._caps.get(replica.server, {}).get("resources") or {}).get("subscribe"):
            return
        uris = {uri for session in self.sessions for uri in session.subscriptions
                if replica.server in self.uri_owners(uri)}
        for uri in sorted(uris):
            try:
                await replica.request("resources/subscribe", {"uri": uri}, timeout=self.settings.proxy.call_timeout)
            except (UpstreamError, RPCError) as exc:
                log.warning("could not renew the subscription to %s on %s: %s", uri, replica.id, exc)

    async def settle(self) -> None:
        """Wait for catalog refreshes in flight (start-up, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def refresh(self, server: str, kinds: list[str], announce: bool) -> None:
        async with self._refresh_locks.setdefault(server, asyncio.Lock()):
            pool = self.pools.get(server)
            replica = pool.any_ready() if pool else None
            if replica is None:
                return
            for kind in kinds:
                try:
                    await self._refresh_kind(server, replica, kind, announce)
                except UpstreamError as exc:
                    log.warning("refreshing %s of %s failed: %s", kind, server, exc)
                except RPCError as exc:
                    log.info("%s does not list %s: %s", server, kind, exc.message)

    async def _refresh_kind(self, server: str, replica: Replica, kind: str, announce: bool) -> None:
        if kind == "resources":
            if self.serves(server, "resources"):
                self.learn_uris(server, await self._list_all(replica, "resources/list", "resources"))
            return
        method, key, capability, notification = _LISTS[kind]
        items = await self._list_all(replica, method, key) if self.serves(server, capability) else []
        if self.catalog.update(server, kind, items) and announce:
            self.broadcast({"jsonrpc": "2.0", "method": notification})

    async def _list_all(self, replica: Replica, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(_MAX_PAGES):
            params = {"cursor": cursor} if cursor is not None else {}
            result = await replica.request(method, params, timeout=self.settings.proxy.call_timeout)
            items.extend(i for i in result.get(key) or [] if isinstance(i, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return items

    # -- upstream to clients -----------------------------------------------------
    def notification(self, replica: Replica, message: dict[str, Any]) -> None:
        method = message.get("method", "")
        params = message.get("params") or {}
        if method in _CHANGED:
            if method == "notifications/tools/list_changed":
                self.calls.invalidate(replica.server)  # cached results may come from tools that changed
            self.spawn(self.refresh(replica.server, list(_CHANGED[method]), announce=True))
        elif method == "notifications/resources/updated":
            for session in self.sessions:
                if params.get("uri") in session.subscriptions:
                    session.push(message)
        elif method == "notifications/message":
            for session in self.sessions:
                if session.wants_log(params.get("level")):
                    session.push(message)
        else:
            log.debug("unrelated %s from %s dropped", method, replica.id)

    def broadcast(self, message: dict[str, Any]) -> None:
        for session in self.sessions:
            session.push(message)

    async def server_request(self, replica: Replica, message: dict[str, Any], sink: Any) -> Any:
        method = message.get("method", "")
        capability = _CLIENT_CAPABILITY.get(method)
        if method == "ping":
            return {}
        if capability is None:
            raise RPCError(METHOD_NOT_FOUND, f"the proxy does not relay {method}")
        if sink is not None:
            session, send = sink.session, sink.emit
        else:  # not tied to a call: ask the most recently active client that can answer
            candidates = sorted((s for s in self.sessions if s.supports(capability)), key=lambda s: s.last_seen)
            if not candidates:
                raise RPCError(METHOD_NOT_FOUND, f"no connected client supports {capability}")
            session, send = candidates[-1], candidates[-1].push
        if not session.supports(capability):
            raise RPCError(METHOD_NOT_FOUND, f"the client does not support {capability}")
        return await session.ask(method, message.get("params"), send, self.settings.proxy.call_timeout)

    # -- clients to upstreams ----------------------------------------------------
    async def client_notification(self, method: Any, params: dict[str, Any], session: ClientSession) -> None:
        if method == "notifications/cancelled":
            request_id = params.get("requestId")
            task = session.calls.get(request_id) if isinstance(request_id, (str, int)) else None
            if task is not None:
                task.cancel()  # the upstream session forwards the cancellation with its own id
        elif method == "notifications/roots/list_changed":
            for pool in self.pools.values():
                for replica in pool.ready_replicas():
                    self.spawn(replica.notify("notifications/roots/list_changed"))

    def sessions_changed(self) -> None:
        """A client session began or ended: the level the upstreams need may have changed (only once a
        client has set one; until then nothing was set and there is nothing to keep right)."""
        if self._upstream_level is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # the proxy is shutting down outside its loop: no upstream to tell
                return
            self.fan_out_level()

    def fan_out_level(self, force: bool = False) -> None:
        """Set every upstream session to the most verbose level any client needs, when it changed (or
        ``force``: a new upstream session starts at its own default). The upstream sessions are shared, so
        a client that set no level (it gets every log the upstream sends by default) counts as
        ``UNSET_CLIENT_LOG_LEVEL``: otherwise one client asking for errors only would silence the others'
        info logs. Until some client sets a level the upstreams keep their own default."""
        most_verbose, unset = None, False
        for session in self.sessions:
            wanted = session.log_level
            if wanted is None:
                unset = True
            elif most_verbose is None or LOG_LEVELS[wanted] < LOG_LEVELS[most_verbose]:
                most_verbose = wanted
        if most_verbose is None:
            return
        if unset and LOG_LEVELS[UNSET_CLIENT_LOG_LEVEL] < LOG_LEVELS[most_verbose]:
            most_verbose = UNSET_CLIENT_LOG_LEVEL
        if most_verbose == self._upstream_level and not force:
            return
        self._upstream_level = most_verbose
        for pool in self.pools.values():
            for replica in pool.ready_replicas():
                if self.serves(pool.name, "logging"):
                    self.spawn(replica.request_every_session("logging/setLevel", {"level": most_verbose},
                                                             timeout=self.settings.proxy.call_timeout))

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %s", task.exception())

    def cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()
