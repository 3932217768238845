"""CPU priority of the processes the project starts beside itself.

On shared cores (``only1mcp up`` on a laptop, the benchmarks on two CPUs) the learning loop — the
broker, Redis, the worker — should wait for the request path (the proxy and its upstreams): the
proxy never waits on the loop (events are queued, decisions precomputed), so running the loop at a
higher niceness costs it freshness, never a call's latency. Measured with ``only1mcp bench soak``:
the embedded broker alone took 60 % of a core at 285 calls/s, and with it and Redis at niceness 10
the per-minute client p99 stayed within 33-35 ms where it had wandered 31-70 ms.
"""

from __future__ import annotations

import logging
import os

__all__ = ["lower_priority"]

log = logging.getLogger("only1mcp.infra")


def lower_priority(pid: int, nice: int) -> bool:
    """Run process ``pid`` ``nice`` steps nicer than this one (as ``os.nice(nice)`` in it would: the
    worker's ``[worker] nice``), at most 19, unless it already runs nicer; whether it now does. Only
    ever lowers a priority, which needs no privilege."""
    if nice <= 0:
        return False
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < target:
            os.setpriority(os.PRIO_PROCESS, pid, target)
        return True
    except OSError as exc:  # it exited meanwhile, or the platform refuses: it runs at its priority
        log.warning("could not lower the priority of process %d to nice %d: %s", pid, nice, exc)
        return False
