"""Routing policies: which replica of a server takes a call."""

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest, RoutingPolicy, make_policy

__all__ = ["POLICIES", "Decision", "RouteRequest", "RoutingPolicy", "make_policy"]
