"""Stand-in replicas for routing tests: the attributes policies read, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field

from only1mcp.proxy.routing import ReplicaStats, RouteRequest


@dataclass(eq=False)
class FakeReplica:
    id: str
    inflight: int = 0
    stats: ReplicaStats = field(default_factory=ReplicaStats)
    state: str = "ready"


def replicas(n: int, prefix: str = "r") -> list[FakeReplica]:
    return [FakeReplica(f"{prefix}{i}") for i in range(n)]


def req(session_id: str | None = None, args_hash: str | None = None, now: float = 0.0) -> RouteRequest:
    return RouteRequest("srv", "tools/call", "tool", session_id=session_id, args_hash=args_hash, now=now)


def observe(replica: FakeReplica, latency_s: float, now: float, ok: bool = True) -> None:
    """One finished call on ``replica`` at ``now``."""
    replica.stats.on_start()
    replica.stats.on_finish(latency_s, ok, now)
