"""Routing policies: which replica of a server takes a call. Each policy module registers itself."""

from only1mcp.proxy.routing import round_robin  # noqa: F401  registers "round_robin"
from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest, RoutingPolicy, make_policy

__all__ = ["POLICIES", "Decision", "RouteRequest", "RoutingPolicy", "make_policy"]
