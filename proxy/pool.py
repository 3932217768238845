"""A server's replicas behind its routing policy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from only1mcp.errors import UpstreamUnavailable
from only1mcp.proxy.routing import Decision, RouteRequest, make_policy
from only1mcp.proxy.upstream.base import RelatedSink, SessionExpired
from only1mcp.proxy.upstream.replica import Replica, ReplicaHooks
from only1mcp.settings import ServerSettings

__all__ = ["ServerPool"]

log = logging.getLogger("only1mcp.pool")


class ServerPool:
    def __init__(self, settings: ServerSettings, hooks: ReplicaHooks, http: Callable[[], aiohttp.ClientSession],
                 *, connect_timeout: float, call_timeout: float) -> None:
        self.settings = settings
        self.name = settings.name
        self.timeout = settings.timeout or call_timeout
        self.policy = make_policy(settings.policy)
        self.replicas = [Replica(settings.name, i, r, hooks, http, connect_timeout=connect_timeout)
                         for i, r in enumerate(settings.replicas)]
        for replica in self.replicas:
            replica.extra_sessions = settings.upstream_sessions - 1
        self.last_decision: Decision | None = None

    def start(self) -> None:
        for replica in self.replicas:
            replica.start()

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()

    def ready_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.ready]

    def any_ready(self) -> Replica | None:
        return next((r for r in self.replicas if r.ready), None)

    def choose(self, route: RouteRequest) -> Replica:
        candidates = self.ready_replicas()
        if not candidates:
            reasons = "; ".join(f"{r.id}: {r.state} ({r.last_error or 'starting'})" for r in self.replicas)
            raise UpstreamUnavailable(self.name, f"no ready replica ({reasons})")
        if len(candidates) == 1:
            return candidates[0]
        decision = self.policy.choose(candidates, route)
        self.last_decision = decision
        return decision.replica

    async def call(self, method: str, params: dict[str, Any] | None, route: RouteRequest, *,
                   sink: RelatedSink | None = None, timeout: float | None = None) -> dict[str, Any]:
        replica = self.choose(route)
        try:
            return await replica.request(method, params, timeout=timeout or self.timeout, sink=sink)
        except SessionExpired:
            # The upstream restarted and forgot our session before seeing this call: it was
            # never executed, so it is safe to send once more after the replica reconnects.
            log.info("replica %s lost its session; reconnecting and resending %s", replica.id, method)
            if not await replica.wait_ready(timeout or self.timeout):
                raise UpstreamUnavailable(self.name, "upstream session expired and did not come back") from None
            return await replica.request(method, params, timeout=timeout or self.timeout, sink=sink)
