"""A server's replicas: health filtering, the routing policy, retries within a budget, and the
per-call bookkeeping (latency statistics, health, metrics, decision records).

The hot path is a few dictionary look-ups and one upstream round trip: the policy, the
health state and the statistics are all in memory and updated in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from only1mcp.errors import (
    INTERNAL_ERROR, RPCError, UpstreamError, UpstreamFailed, UpstreamSaturated, UpstreamTimeout, UpstreamUnavailable,
)
from only1mcp.proxy.health import ServerHealth
from only1mcp.proxy.retry import RetryBudget
from only1mcp.proxy.routing import Decision, RouteRequest, build_policy
from only1mcp.proxy.routing.stats import ReplicaStats
from only1mcp.proxy.upstream.base import RelatedSink, SessionExpired
from only1mcp.proxy.upstream.replica import Replica, ReplicaHooks
from only1mcp.settings import ServerSettings
from only1mcp.traffic import RetrySettings

__all__ = ["ServerPool", "CallRecord", "Override"]

log = logging.getLogger("only1mcp.pool")
_REVIVE_WAIT_S = 2.0  # longest a call waits for a down replica to reconnect before it fails
_NAMED = frozenset({"tools/call", "prompts/get"})  # methods whose route name is a catalog name


class CallRecord:
    """What routing decided for one call, attempt by attempt (for the admin API)."""

    __slots__ = ("server", "method", "name", "attempts")

    def __init__(self, server: str, method: str, name: str | None) -> None:
        self.server, self.method, self.name = server, method, name
        self.attempts: list[dict[str, Any]] = []

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "method": self.method, "name": self.name, "attempts": self.attempts}


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's pin or ban of replicas for one tool; beats every policy and every learned weight.

    Applied after health filtering: ``ban`` removes replicas unless that would leave none (then it
    is ignored, and the decision says so); ``pin`` keeps only the pinned routable replicas, or, when
    none of them is routable, routes among the rest (and says so)."""

    pin: tuple[str, ...] = ()
    ban: tuple[str, ...] = ()
    origin: str = "config"  # config ([servers.tools.NAME]) | runtime (POST /admin/overrides)

    def apply(self, candidates: Sequence[Any]) -> tuple[Sequence[Any], dict[str, Any]]:
        """The candidates left, and what the override did (for the decision's reason and detail)."""
        notes: list[str] = []
        if self.ban:
            kept = [c for c in candidates if c.id not in self.ban]
            if not kept:
                notes.append(f"ban of {', '.join(self.ban)} ignored: it would leave no routable replica")
            else:
                removed = [c.id for c in candidates if c.id in self.ban]
                notes.append(f"banned {', '.join(removed)}" if removed else
                             f"ban of {', '.join(self.ban)} (none of them routable anyway)")
                candidates = kept
        if self.pin:
            pinned = [c for c in candidates if c.id in self.pin]
            if pinned:
                notes.append(f"pinned to {', '.join(c.id for c in pinned)}")
                candidates = pinned
            else:
                notes.append(f"pinned {', '.join(self.pin)} not routable; routing among the rest")
        text = f"override ({self.origin}): {'; '.join(notes)}"
        return candidates, {"origin": self.origin, "pin": list(self.pin), "ban": list(self.ban), "effect": text}


class ServerPool:
    def __init__(self, settings: ServerSettings, hooks: ReplicaHooks, http: Callable[[], aiohttp.ClientSession],
                 *, connect_timeout: float, call_timeout: float, retry: RetrySettings | None = None,
                 metrics: Any = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.timeout = settings.timeout or call_timeout
        self.policy = build_policy(settings)
        self.replicas = [Replica(settings.name, i, r, hooks, http, connect_timeout=connect_timeout)
                         for i, r in enumerate(settings.replicas)]
        for replica in self.replicas:
            replica.extra_sessions = settings.upstream_sessions - 1
            replica.stats = ReplicaStats()
        self.health = ServerHealth(settings.health, settings.outlier, settings.breaker, [r.id for r in self.replicas])
        retry = retry or RetrySettings()
        self.max_attempts = retry.max_attempts
        self.budget = RetryBudget(retry)
        self.metrics = metrics
        self.remediation: Any = None  # ServerRemediation, attached by the gateway (proxy/remediation.py)
        self._checks: asyncio.Task[None] | None = None
        # Operator overrides by upstream tool name: the file's, and the runtime ones (the gateway's
        # dict for this server, shared across reloads), which beat the file's.
        self.file_overrides = {tool: Override(t.pin, t.ban, "config") for tool, t in settings.tools.items()
                               if t.pin or t.ban}
        self.runtime_overrides: dict[str, Override] = {}
        self.max_inflight = settings.max_inflight
        self.refused = {"replica_inflight": 0}  # the gateway's shared count replaces this one
        known = {r.id for r in self.replicas}
        for tool, override in self.file_overrides.items():
            unknown = sorted(set(override.pin + override.ban) - known)
            if unknown:
                log.warning("[servers.tools.%s] of %s names unknown replicas %s (known: %s)", tool, self.name,
                            ", ".join(unknown), ", ".join(sorted(known)))

    def override_for(self, tool: str | None) -> Override | None:
        if tool is None:
            return None
        return self.runtime_overrides.get(tool) or self.file_overrides.get(tool)

    def start(self) -> None:
        for replica in self.replicas:
            replica.start()
        if self.settings.health.interval > 0:
            self._checks = asyncio.get_running_loop().create_task(self._check_loop())

    async def close(self) -> None:
        if self._checks is not None:
            self._checks.cancel()
        for replica in self.replicas:
            await replica.close()

    def ready_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.ready]

    def any_ready(self) -> Replica | None:
        return next((r for r in self.replicas if r.ready), None)

    def choose(self, route: RouteRequest, exclude: tuple[Replica, ...] = ()) -> Decision:
        ready = [r for r in self.replicas if r.ready and r not in exclude]
        if not ready:
            reasons = "; ".join(f"{r.id}: {r.state} ({r.last_error or 'starting'})" for r in self.replicas)
            raise UpstreamUnavailable(self.name, f"no ready replica ({reasons})")
        candidates = self.health.candidates(ready, route.now)
        note = None
        if (self.runtime_overrides or self.file_overrides) and route.method == "tools/call":
            override = self.override_for(route.name)
            if override is not None:
                candidates, note = override.apply(candidates)
        cap = self.max_inflight
        if cap and any(c.inflight >= cap for c in candidates):
            routable = len(candidates)
            candidates = [c for c in candidates if c.inflight < cap]
            if not candidates:
                self.refused["replica_inflight"] += 1
                raise UpstreamSaturated(self.name, cap, routable)
        if len(candidates) == 1 and not self.settings.sticky:  # a sticky policy must still pin the session
            decision = Decision(candidates[0], self.policy.name, "the only routable replica")
        else:
            decision = self.policy.choose(candidates, route)
        if note is not None:
            detail = {**decision.detail, "overrides": note} if decision.detail else {"overrides": note}
            decision = replace(decision, reason=f"{note['effect']}; {decision.reason}", detail=detail)
        if self.health.held_out:  # only while remediation holds a replica out: say which this call skipped
            decision = self._held_note(decision, ready)
        return decision

    def _held_note(self, decision: Decision, ready: list[Replica]) -> Decision:
        held = self.health.held_out
        skipped = [r.id for r in ready if r.id in held]
        if not skipped or self.remediation is None:
            return decision
        text, info = self.remediation.note(skipped)
        detail = {**decision.detail, "remediation": info} if decision.detail else {"remediation": info}
        return replace(decision, reason=f"{text}; {decision.reason}", detail=detail)

    async def call(self, method: str, params: dict[str, Any] | None, route: RouteRequest, *,
                   sink: RelatedSink | None = None, timeout: float | None = None, retry_safe: bool = False,
                   record: CallRecord | None = None, max_attempts: int | None = None) -> dict[str, Any]:
        """One call, retried on another replica only when ``retry_safe`` and the budget allows, at most
        ``max_attempts`` attempts in all when given (prefetches: 2), else ``[retry] max_attempts``."""
        loop = asyncio.get_running_loop()
        route = RouteRequest(route.server, route.method, route.name, route.session_id, route.args_hash, loop.time())
        self.budget.deposit(route.now)
        tried: tuple[Replica, ...] = ()
        attempts = (self.max_attempts if max_attempts is None else min(self.max_attempts, max_attempts)) if retry_safe else 1
        for attempt in range(1, attempts + 1):
            try:
                decision = self.choose(route, tried)
            except UpstreamUnavailable:
                if tried or not await self._revive():
                    raise
                decision = self.choose(route, tried)
            replica: Replica = decision.replica
            tried += (replica,)
            if record is not None:
                ready = [r for r in self.replicas if r.ready]
                record.attempts.append({"replica": replica.id, "policy": decision.policy, "reason": decision.reason,
                                        "candidates": [r.id for r in ready],
                                        "inflight": {r.id: r.inflight for r in ready},
                                        "detail": decision.detail})
            try:
                return await self._attempt(replica, method, params, route, sink, timeout or self.timeout)
            except (UpstreamFailed, UpstreamUnavailable) as exc:
                if attempt < attempts and len(tried) < len(self.replicas) and self.budget.try_withdraw(loop.time()):
                    log.info("retrying %s %s on another replica after %s: %s", method, _label(route), replica.id, exc)
                    if self.metrics is not None:
                        self.metrics.retry(self.name, _label(route))
                    continue
                raise
        raise AssertionError("unreachable")

    async def _revive(self) -> bool:
        """No replica is ready: have them reconnect now rather than after their backoff (an upstream
        that just restarted answers this call); True if one is ready."""
        down = [r for r in self.replicas if not r.ready]
        wait = min(_REVIVE_WAIT_S, self.timeout)
        return bool(down) and any(await asyncio.gather(*(r.reconnect_now(wait) for r in down)))

    async def _attempt(self, replica: Replica, method: str, params: dict[str, Any] | None, route: RouteRequest,
                       sink: RelatedSink | None, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stats = replica.stats
        self.health.begin(replica.id, route.now)
        stats.on_start()
        if self.metrics is not None:
            self.metrics.inflight(self.name, replica.id, 1)
        started = loop.time()
        outcome, healthy, timed_out = "error", False, False
        try:
            result = await self._request(replica, method, params, sink, timeout)
            outcome, healthy = "ok", True
            return result
        except UpstreamTimeout:
            outcome, timed_out = "timeout", True
            raise
        except UpstreamUnavailable:
            outcome = "unavailable"
            raise
        except UpstreamError:
            raise
        except RPCError as exc:
            # The upstream answered. Its own internal or server errors count against it; an error
            # about the request (unknown tool, bad params) is the caller's, not the replica's.
            healthy = not (exc.code == INTERNAL_ERROR or -32099 <= exc.code <= -32000)
            raise
        except asyncio.CancelledError:
            outcome, healthy = "cancelled", True
            raise
        finally:
            now = loop.time()
            stats.on_finish(now - started, healthy, now)
            if outcome == "cancelled":
                self.health.release(replica.id, now)
            else:
                self._record_health(replica.id, healthy, now - started, now, timed_out)
            if self.metrics is not None:
                self.metrics.call(self.name, replica.id, _label(route), now - started, outcome)
                self.metrics.inflight(self.name, replica.id, -1)

    def _record_health(self, replica_id: str, ok: bool, latency_s: float, now: float, timed_out: bool) -> None:
        health = self.health.replica(replica_id)
        state, ejections = health.breaker.state, self.health.detector.ejections
        self.health.record(replica_id, ok, latency_s, now, timeout=timed_out)
        if self.metrics is not None:  # state changes only: the common case costs two comparisons
            if health.breaker.state != state:
                self.metrics.breaker(self.name, replica_id, health.breaker.state)
            if self.health.detector.ejections != ejections:
                self.metrics.ejection(self.name, replica_id)

    async def _request(self, replica: Replica, method: str, params: dict[str, Any] | None,
                       sink: RelatedSink | None, timeout: float) -> dict[str, Any]:
        try:
            return await replica.request(method, params, timeout=timeout, sink=sink)
        except SessionExpired:
            # The upstream restarted and forgot our session before seeing this call: it was
            # never executed, so it is safe to send once more after the replica reconnects.
            log.info("replica %s lost its session; reconnecting and resending %s", replica.id, method)
            if not await replica.wait_ready(timeout):
                raise UpstreamUnavailable(self.name, "upstream session expired and did not come back") from None
            return await replica.request(method, params, timeout=timeout, sink=sink)

    async def _check_loop(self) -> None:
        """Active health: an MCP ping to each ready replica when its check is due."""
        loop = asyncio.get_running_loop()
        settings = self.settings.health
        running: set[str] = set()
        while True:
            await asyncio.sleep(min(settings.interval, 1.0) / 2)
            for replica_id in self.health.due_checks(loop.time()):
                replica = next((r for r in self.replicas if r.id == replica_id), None)
                if replica is not None and replica.ready and replica_id not in running:
                    running.add(replica_id)
                    loop.create_task(self._check(replica, settings.timeout, running))

    async def _check(self, replica: Replica, timeout: float, running: set[str]) -> None:
        try:
            await replica.request("ping", None, timeout=timeout)
            ok = True
        except RPCError as exc:
            ok = exc.code == -32601  # a server without ping still answered
        except Exception:
            ok = False
        finally:
            running.discard(replica.id)
        self.health.record_check(replica.id, ok, asyncio.get_running_loop().time())


def _label(route: RouteRequest) -> str:
    """The tool or prompt name for metrics and logs; for any other method the method itself: a resource
    URI is the client's input (a template's parameters), not a name from the catalog."""
    return route.name if route.name and route.method in _NAMED else route.method
