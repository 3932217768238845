"""tools/call and prompts/get through the traffic pipeline: the response cache for read-only
tools, the per-tool timeout and retry safety, and the decision record of every call.

Safety comes from the tool's annotations unless ``[servers.tools.NAME] safe`` overrides
them: ``readOnlyHint`` tools may be cached and retried, ``idempotentHint`` tools retried
only, every other tool is sent exactly once.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from only1mcp.proxy.cache import cache_key, make_cache
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
EXPLANATIONS_KEPT = 10_000  # routed calls explained by request id; the oldest are forgotten first


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

    def invalidate(self, server: str) -> None:
        if self.cache is not None:
            self.cache.invalidate(server)

    async def call(self, method: str, entry: Entry, params: dict[str, Any], session: ClientSession,
                   sink: Any) -> dict[str, Any]:
        gateway = self.gateway
        pool = gateway.pools[entry.server]
        override = pool.settings.tools.get(entry.upstream_name) if method == "tools/call" else None
        safe = override.safe if override is not None and override.safe is not None else None
        retry_safe = safe if safe is not None else (entry.read_only or entry.idempotent)
        cache_safe = safe if safe is not None else entry.read_only
        ttl = (override.cache_ttl if override is not None and override.cache_ttl else
               gateway.settings.cache.default_ttl) if cache_safe else 0.0
        arguments = params.get("arguments") or {}
        key = None
        loop = asyncio.get_running_loop()
        context = call_context.get()
        if context is not None:
            context.tool, context.server = entry.exposed, entry.server
            context.args_hash = gateway.telemetry.hash(arguments)
        if ttl > 0 and self.cache is not None:
            key = cache_key(entry.server, entry.upstream_name, arguments)
            hit = self.cache.get(key, loop.time())
            if hit is not None:
                self._remember(entry, method, _HIT)
                self._explain(entry, method, pool.policy.name, _NONE, True)
                if context is not None:
                    context.cache_hit = True
                return orjson.loads(hit)
        args_hash = None
        if pool.settings.hash_key == "arguments" and pool.settings.policy == "consistent_hash":
            args_hash = hashlib.blake2b(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
        route = RouteRequest(entry.server, method, entry.upstream_name, session.id, args_hash)
        record = CallRecord(entry.server, method, entry.upstream_name)
        try:
            result = await pool.call(method, gateway.upstream_params(params), route, sink=sink,
                                     timeout=override.timeout if override is not None else None,
                                     retry_safe=retry_safe, record=record)
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
            data = orjson.dumps(result)
            self.cache.put(key, data, len(data), ttl, loop.time(), entry.server)  # type: ignore[union-attr]
        return result

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
