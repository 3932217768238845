"""Replica health: a circuit breaker and active checks per replica, outlier ejection per server.

``ServerHealth`` is what the proxy holds per server. Per call, with one clock reading ``now``:

    ready = server_health.candidates(replicas, now)   # no reservation made; sets .panic
    replica = policy.choose(ready, ...)
    server_health.begin(replica.id, now)              # takes a half-open probe slot if needed
    ... the call ...
    server_health.record(replica.id, ok, latency_s, later, timeout=timed_out)
    # or server_health.release(replica.id, later) if it ended with no outcome (cancelled)

A "replica" here is any object with an ``id`` string (the proxy passes ``Replica`` objects).
Whether its session is connected is the caller's business; this is only about its health.
Everything is pure and synchronous, with the clock passed in (seconds, monotonic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from only1mcp.proxy.health.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from only1mcp.proxy.health.checks import ActiveHealth
from only1mcp.proxy.health.outlier import OutlierDetector
from only1mcp.traffic import BreakerSettings, HealthSettings, OutlierSettings

__all__ = ["ActiveHealth", "CircuitBreaker", "OutlierDetector", "ReplicaHealth", "ServerHealth", "HasId",
           "CLOSED", "OPEN", "HALF_OPEN", "LATENCY_ALPHA"]

LATENCY_ALPHA = 0.2  # weight of the newest call in the latency moving average


class HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=HasId)


class ReplicaHealth:
    """One replica's breaker and active health, plus its view of the server's outlier detector."""

    def __init__(self, replica_id: str, detector: OutlierDetector, health: HealthSettings,
                 breaker: BreakerSettings) -> None:
        self.id = replica_id
        self.detector = detector
        self.active = ActiveHealth(health)
        self.breaker = CircuitBreaker(breaker)
        self.latency_ewma: float | None = None
        self.calls = 0
        self.failures = 0
        self.timeouts = 0

    def routable(self, now: float) -> bool:
        """Healthy by every measure: checks pass, breaker lets calls through, not ejected."""
        return (self.active.healthy and self.breaker.would_allow(now)
                and not self.detector.is_ejected(self.id, now))

    def record(self, ok: bool, latency_s: float, now: float, timeout: bool = False) -> None:
        failed = timeout or not ok
        self.calls += 1
        self.failures += failed
        self.timeouts += timeout
        self.latency_ewma = latency_s if self.latency_ewma is None else (
            LATENCY_ALPHA * latency_s + (1 - LATENCY_ALPHA) * self.latency_ewma)
        self.breaker.record(not failed, now)
        self.detector.record(self.id, not failed, now, timeout=timeout)

    def record_check(self, ok: bool, now: float) -> None:
        self.active.record_check(ok, now)

    def snapshot(self, now: float) -> dict[str, Any]:
        outlier = self.detector.snapshot(now).get(self.id, {})
        return {
            "routable": self.routable(now),
            "calls": self.calls,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "latency_ewma_s": self.latency_ewma,
            "active": self.active.snapshot(),
            "breaker": self.breaker.snapshot(),
            "outlier": outlier,
        }


class ServerHealth:
    """Health of one server's replicas, and which of them may take calls.

    ``panic`` tells whether the last ``candidates`` call had to fall back (counted in ``panics``).
    """

    def __init__(self, health: HealthSettings, outlier: OutlierSettings, breaker: BreakerSettings,
                 replicas: Iterable[str] = ()) -> None:
        self._health, self._breaker = health, breaker
        self.detector = OutlierDetector(outlier)
        self._replicas: dict[str, ReplicaHealth] = {}
        self.panic = False
        self.panics = 0
        # Replicas an outside decision holds out of routing (remediation, proxy/remediation.py): a set
        # swapped whole on each change, so the call path only tests membership. ``held_until`` is the
        # earliest end of those holds on this clock; past it ``on_held_expiry(now)`` lets them lapse.
        self.held_out: frozenset[str] = frozenset()
        self.held_until = math.inf
        self.on_held_expiry: Callable[[float], None] | None = None
        self.set_replicas(replicas)

    def set_replicas(self, ids: Iterable[str]) -> None:
        """The server's current replica ids: new ones start healthy, removed ones are forgotten."""
        wanted = list(dict.fromkeys(ids))
        self._replicas = {rid: self._replicas.get(rid) or self._new(rid) for rid in wanted}
        self.detector.set_replicas(wanted)

    def _new(self, replica_id: str) -> ReplicaHealth:
        return ReplicaHealth(replica_id, self.detector, self._health, self._breaker)

    def replica(self, replica_id: str) -> ReplicaHealth:
        """The health of one replica, created (healthy) if not yet known."""
        found = self._replicas.get(replica_id)
        if found is None:
            found = self._replicas[replica_id] = self._new(replica_id)
        return found

    def candidates(self, replicas: Sequence[R], now: float) -> list[R]:
        """The replicas fit for calls, in the given order. If none is, the least bad instead
        (those whose breaker lets calls through, else all of them) with ``panic`` set: as with
        Envoy's panic threshold, detection alone never makes a server unroutable. Held-out replicas
        are skipped like ejected ones (and, like them, come back in a panic)."""
        if now >= self.held_until and self.on_held_expiry is not None:
            self.on_held_expiry(now)
        held = self.held_out
        healthy = [r for r in replicas if r.id not in held and self.replica(r.id).routable(now)]
        if healthy or not replicas:
            self.panic = False
            return healthy
        self.panic = True
        self.panics += 1
        allowing = [r for r in replicas if self.replica(r.id).breaker.would_allow(now)]
        return allowing or list(replicas)

    def begin(self, replica_id: str, now: float) -> bool:
        """A call is about to go to this replica: reserves a half-open probe slot. False if
        the breaker refuses (possible only for a panic candidate, which may still be used)."""
        return self.replica(replica_id).breaker.allow(now)

    def release(self, replica_id: str, now: float) -> None:
        """A call ended without an outcome (cancelled): frees its probe slot, judges nothing."""
        self.replica(replica_id).breaker.release(now)

    def record(self, replica_id: str, ok: bool, latency_s: float, now: float, timeout: bool = False) -> None:
        """The outcome of a call, for the breaker and the outlier detector (a timeout is a failure)."""
        self.replica(replica_id).record(ok, latency_s, now, timeout=timeout)

    def record_check(self, replica_id: str, ok: bool, now: float) -> None:
        self.replica(replica_id).record_check(ok, now)

    def due_checks(self, now: float) -> list[str]:
        """Ids of the replicas whose next active check is due."""
        return [rid for rid, rh in self._replicas.items() if rh.active.due(now)]

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "panic": self.panic,
            "panics": self.panics,
            "outlier": self.detector.counters(),
            "ejected": sorted(self.detector.ejected(now)),
            "held_out": sorted(self.held_out),
            "replicas": {rid: rh.snapshot(now) for rid, rh in self._replicas.items()},
        }
