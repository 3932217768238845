"""tools/call and prompts/get through the traffic pipeline: the response cache for read-only
tools, the per-tool timeout and retry safety, and the decision record of every call.

Safety comes from the tool's annotations unless ``[servers.tools.NAME] safe`` overrides
them: ``readOnlyHint`` tools may be cached and retried, ``idempotentHint`` tools retried
only, every other tool is sent exactly once.

A cached result answers only the client that caused it (``cache_scope = "client"``, the
default: the key carries a keyed hash of the client's identity), or every client
(``cache_scope = "shared"``). A result's own cache hints (MCP 2026-07-28, top-level fields of
the result) win over the configuration for that entry: ``cacheScope: "public"`` may be shared,
``"private"`` (or any value not understood) never is; ``ttlMs`` is the entry's TTL, capped at
``[cache] max_ttl``. Hints never make a tool cacheable that is not: only cache-safe tools with
a TTL configured are cached at all.

With ``[prefetch]`` enabled (``proxy/prefetch``), each client tools/call of a session is handed to the
prefetch executor's memory after it finishes, a cache hit on an entry a prefetch stored counts as used
(``prefetch_hit`` on its event), and a call whose answer is being prefetched right now waits for that
answer instead of calling the upstream a second time.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from only1mcp.proxy.cache import AdaptiveTTLs, cache_key, make_cache, scoped_key
from only1mcp.proxy.catalog import Entry
from only1mcp.proxy.pool import CallRecord
from only1mcp.proxy.routing import RouteRequest
from only1mcp.proxy.telemetry import call_context, request_uid

if TYPE_CHECKING:
    from only1mcp.proxy.gateway import Gateway
    from only1mcp.proxy.sessions import ClientSession

__all__ = ["Calls", "request_id_var", "EXPLANATIONS_KEPT", "frozen", "thawed"]

request_id_var: contextvars.ContextVar[Any] = contextvars.ContextVar("only1mcp_request_id", default=None)
_DECISIONS_KEPT = 10_000


def frozen(attempts: list[dict[str, Any]]) -> bytes:
    """A call's attempts as stored for /admin/decisions and /admin/explain (see Calls.explanations)."""
    return orjson.dumps(attempts, option=orjson.OPT_NON_STR_KEYS, default=str)


def thawed(attempts: bytes) -> list[dict[str, Any]]:
    return orjson.loads(attempts)


_HIT, _NONE = frozen([{"cache": "hit"}]), frozen([])
_JOINED = frozen([{"cache": "hit", "prefetch": "joined the prefetch in flight"}])
EXPLANATIONS_KEPT = 10_000  # routed calls explained by request id; the oldest are forgotten first
_CLIENTS_KEPT = 100_000  # memoised client-identity hashes; cleared (and recomputed) past this


class Calls:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        cache = gateway.settings.cache
        self.cache = make_cache(cache.policy, cache.max_bytes) if cache.max_bytes > 0 else None
        self.decisions: OrderedDict[str, list[tuple[str, str, str, bytes]]] = OrderedDict()
        # request id → (server, exposed tool, method, policy name, attempts, cache hit), formatted on demand.
        # Attempts are kept as JSON bytes: 20,000 remembered calls as nested dicts and lists were most of
        # the objects every full garbage collection walked (50–200 ms pauses under load); bytes and
        # tuples of atoms are not tracked by the collector at all.
        self.explanations: OrderedDict[str, tuple[str, str, str, str, bytes, bool]] = OrderedDict()
        self.adaptive = AdaptiveTTLs()  # learned per-tool TTLs, used while [cache] adaptive_ttl is on
        self._clients: dict[str, str] = {}  # client identity → its keyed hash, the client part of a key
        # Tools one of whose results was stored under the other scope's key (a cacheScope hint): only
        # their look-ups try both keys, so every other cached call stays one look-up.
        self._crossed: set[tuple[str, str]] = set()
        self.prefetch: Any = None  # the PrefetchExecutor while [prefetch] is enabled (proxy/prefetch)

    def invalidate(self, server: str) -> None:
        if self.cache is not None:
            self.cache.invalidate(server)
        if server not in self.gateway.pools:  # removed by a reload: what was learned about it goes too
            self.adaptive.forget(server)

    def safety(self, entry: Entry, method: str = "tools/call") -> tuple[Any, bool, bool, float]:
        """(the tool's ``[servers.tools.NAME]`` table or None, safe to repeat, safe to cache, its TTL): the one
        rule retries, the cache and prefetch eligibility all follow."""
        gateway = self.gateway
        override = gateway.pools[entry.server].settings.tools.get(entry.upstream_name) if method == "tools/call" else None
        safe = override.safe if override is not None and override.safe is not None else None
        retry_safe = safe if safe is not None else (entry.read_only or entry.idempotent)
        cache_safe = safe if safe is not None else entry.read_only
        ttl = (override.cache_ttl if override is not None and override.cache_ttl else
               gateway.settings.cache.default_ttl) if cache_safe else 0.0
        return override, retry_safe, cache_safe, ttl

    async def call(self, method: str, entry: Entry, params: dict[str, Any], session: ClientSession,
                   sink: Any) -> dict[str, Any]:
        gateway = self.gateway
        pool = gateway.pools[entry.server]
        override, retry_safe, _, ttl = self.safety(entry, method)
        arguments = params.get("arguments") or {}
        # A client's tools/call in a session feeds the prefetch memory (learned after the answer is out).
        prefetch = self.prefetch if method == "tools/call" and session.id is not None else None
        key = None
        loop = asyncio.get_running_loop()
        context = call_context.get()
        if context is not None:
            context.tool, context.server = entry.exposed, entry.server
            context.args_hash = gateway.telemetry.hash(arguments)
        shared_scope, mine, expired = False, "", None
        if ttl > 0 and self.cache is not None:
            key = cache_key(entry.server, entry.upstream_name, arguments)
            shared_scope = override is not None and override.cache_scope == "shared"
            mine = scoped_key(key, self.client_key(session))
            hit, expired = self._lookup(entry, key, mine, shared_scope, loop.time())
            if hit is not None:
                self._remember(entry, method, _HIT)
                self._explain(entry, method, pool.policy.name, _NONE, True)
                if context is not None:
                    context.cache_hit = True
                if prefetch is None:
                    return orjson.loads(hit)
                if prefetch.marked:
                    prefetch.used(mine, key, context)
                result = orjson.loads(hit)
                prefetch.observe(session, entry.exposed, arguments, result)
                return result  # type: ignore[no-any-return]
            if prefetch is not None and mine in prefetch.pending:  # being prefetched: wait for that answer
                joined = await prefetch.join(mine, context)
                if joined is not None:
                    self._remember(entry, method, _JOINED)
                    self._explain(entry, method, pool.policy.name, _NONE, True)
                    prefetch.observe(session, entry.exposed, arguments, joined)
                    return joined
        args_hash = None
        if pool.settings.hash_key == "arguments" and pool.settings.policy == "consistent_hash":
            args_hash = hashlib.blake2b(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
        route = RouteRequest(entry.server, method, entry.upstream_name, session.id, args_hash)
        record = CallRecord(entry.server, method, entry.upstream_name)
        try:
            result = await pool.call(method, gateway.upstream_params(params), route, sink=sink,
                                     timeout=override.timeout if override is not None else None,
                                     retry_safe=retry_safe, record=record)
        except BaseException:
            if prefetch is not None:  # a failed call still says what the session did
                prefetch.observe(session, entry.exposed, arguments, None)
            raise
        finally:
            attempts = frozen(record.attempts)
            self._remember(entry, method, attempts)
            self._explain(entry, method, pool.policy.name, attempts, False)
            if context is not None and record.attempts:
                last = record.attempts[-1]
                context.replica, context.policy, context.reason = last["replica"], last["policy"], last["reason"]
                context.attempts = len(record.attempts)
                context.inflight = last["inflight"].get(last["replica"])
        if key is not None and not result.get("isError"):
            self.store(entry, result, key, mine, shared_scope, ttl, loop.time(), expired)
        if prefetch is not None:
            prefetch.observe(session, entry.exposed, arguments, result)
        return result

    def client_key(self, session: ClientSession) -> str:
        """The client part of a ``client``-scoped key: the keyed hash of the session's client identity
        (a token's id, else the peer address) that request events carry as ``client_id``, so a key
        names no token nor address, and the events and the cache agree on who a client is."""
        client = session.client
        hashed = self._clients.get(client)
        if hashed is None:
            if len(self._clients) >= _CLIENTS_KEPT:
                self._clients.clear()
            hashed = self._clients[client] = self.gateway.telemetry.hash(client.encode())
        return hashed

    def _lookup(self, entry: Entry, shared: str, mine: str, shared_scope: bool, now: float) -> tuple[Any, Any]:
        """(the cached result or None, the value of an entry found expired or None)."""
        cache = self.cache
        assert cache is not None
        first, second = (shared, mine) if shared_scope else (mine, shared)
        if (entry.server, entry.upstream_name) not in self._crossed:
            return cache.get(first, now), cache.expired
        hit = cache.get(first, now, count_miss=False)
        expired = cache.expired
        if hit is None:
            hit = cache.get(second, now)
            expired = expired if expired is not None else cache.expired
        return hit, expired

    def store(self, entry: Entry, result: dict[str, Any], shared: str, mine: str, shared_scope: bool,
              base_ttl: float, now: float, expired: Any = None) -> tuple[str, float]:
        """Cache a fresh result (a client call's, or a prefetch's) under the key of its scope, for its TTL;
        learn the tool's TTL. Returns the key it went under and the TTL (0 or less: not stored)."""
        settings = self.gateway.settings.cache
        data = orjson.dumps(result)
        ttl = base_ttl
        if settings.adaptive_ttl:
            server, tool = entry.server, entry.upstream_name
            if expired is not None:  # its entry had just expired: did the result change meanwhile?
                ttl = self.adaptive.learn(server, tool, base_ttl, settings.min_ttl, settings.max_ttl,
                                          data != expired)
            else:
                ttl = self.adaptive.ttl(server, tool, base_ttl, settings.min_ttl, settings.max_ttl)
        hint = result.get("ttlMs")
        if isinstance(hint, (int, float)) and not isinstance(hint, bool) and 0 <= hint < math.inf:
            ttl = min(hint / 1000.0, settings.max_ttl)  # 0 = immediately stale: not stored
        scope = result.get("cacheScope")
        share = shared_scope if scope is None else scope == "public"  # an unknown scope is not shared
        if share != shared_scope:
            self._crossed.add((entry.server, entry.upstream_name))
        stored = shared if share else mine
        self.cache.put(stored, data, len(data), ttl, now, entry.server)  # type: ignore[union-attr]
        return stored, ttl

    def _explain(self, entry: Entry, method: str, policy: str, attempts: bytes, cache_hit: bool) -> None:
        request_id = request_uid.get()
        if request_id is None:
            return
        explanations = self.explanations
        explanations[request_id] = (entry.server, entry.exposed, method, policy, attempts, cache_hit)
        if len(explanations) > EXPLANATIONS_KEPT:
            explanations.popitem(last=False)

    def _remember(self, entry: Entry, method: str, attempts: bytes) -> None:
        request_id = request_id_var.get()
        if request_id is None:
            return
        key = str(request_id)
        entries = self.decisions.get(key)
        if entries is None:
            entries = self.decisions[key] = []
            if len(self.decisions) > _DECISIONS_KEPT:
                self.decisions.popitem(last=False)
        entries.append((entry.exposed, entry.server, method, attempts))
        if len(entries) > 8:  # the same id reused by many sessions: keep the latest
            del entries[0]
