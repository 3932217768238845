"""Prefetch in the proxy: the session memory that fills predicted calls, and the executor that runs
``PrefetchDecision`` records from the learning loop in the background within a budget (see
``executor.py``). Built by the gateway only when ``[prefetch] enabled``."""

from only1mcp.proxy.prefetch.budget import Budget, SlidingCount
from only1mcp.proxy.prefetch.executor import COUNTERS, PrefetchExecutor
from only1mcp.proxy.prefetch.learn import SessionLearner, result_data

__all__ = ["PrefetchExecutor", "COUNTERS", "SessionLearner", "result_data", "Budget", "SlidingCount"]
