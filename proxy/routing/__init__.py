"""Routing policies: which replica of a server takes a call. Each policy module registers itself
in ``POLICIES`` on import; importing this package registers them all."""

from only1mcp.proxy.routing import (  # noqa: F401  each registers its policy
    consistent_hash, learned, least_inflight, p2c_ewma, random_pick, round_robin, weighted,
)
from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest, RoutingPolicy, make_policy
from only1mcp.proxy.routing.factory import build_policy
from only1mcp.proxy.routing.stats import ReplicaStats
from only1mcp.proxy.routing.sticky import Sticky

__all__ = ["POLICIES", "Decision", "RouteRequest", "RoutingPolicy", "make_policy", "build_policy", "ReplicaStats",
           "Sticky"]
