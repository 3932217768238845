"""CPU priority of the processes the project starts beside itself.

On shared cores (``only1mcp up`` on a laptop, the benchmarks on two CPUs) the learning loop — the
broker, Redis, the worker — should wait for the request path (the proxy and its upstreams): the
proxy never waits on the loop (events are queued, decisions precomputed), so running the loop at a
higher niceness costs it freshness, never a call's latency.

Niceness alone is not enough on Linux with autogroup scheduling (``kernel.sched_autogroup_enabled``,
on by default in most distributions and on this machine): the scheduler first shares the CPU fairly
between *autogroups* — one per session (``setsid``), and every process the project starts is its
own session — and only then by niceness within a group. A niced worker in its own session kept
taking 60-90 % of a core in bursts beside the proxy. So a process that leads its own session also
gets its autogroup's nice value (``/proc/<pid>/autogroup``), which weighs the whole group: itself and
the children it starts (the worker's retraining).
"""

from __future__ import annotations

import logging
import os

__all__ = ["lower_priority", "lower_own_priority"]

log = logging.getLogger("only1mcp.infra")


def lower_priority(pid: int, nice: int) -> bool:
    """Run process ``pid`` ``nice`` steps nicer than this one (as ``os.nice(nice)`` in it would: the
    worker's ``[worker] nice``), at most 19, unless it already runs nicer; and its autogroup too when
    it leads its own session (see the module doc). Whether it now does. Only ever lowers a priority,
    which needs no privilege."""
    if nice <= 0:
        return False
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < target:
            os.setpriority(os.PRIO_PROCESS, pid, target)
    except OSError as exc:  # it exited meanwhile, or the platform refuses: it runs at its priority
        log.warning("could not lower the priority of process %d to nice %d: %s", pid, target, exc)
        return False
    _lower_autogroup(pid, target)
    return True


def lower_own_priority(nice: int) -> bool:
    """This process ``nice`` steps nicer (``os.nice``), and its autogroup when it leads its own session."""
    if nice <= 0:
        return False
    try:
        target = os.nice(nice)
    except OSError as exc:
        log.warning("could not lower this process's priority by %d: %s", nice, exc)
        return False
    _lower_autogroup(os.getpid(), target)
    return True


def _lower_autogroup(pid: int, nice: int) -> None:
    """Set the autogroup nice of ``pid`` if it leads its own session: the group then holds only it and its
    descendants (another session's processes, the proxy among them, are never slowed down with it)."""
    path = f"/proc/{pid}/autogroup"
    try:
        if os.getsid(pid) != pid or not os.path.exists(path):
            return  # not a session leader (its group is its parent's), or no autogroups here
        with open(path) as fh:  # "/autogroup-123 nice 0"
            current = int(fh.read().split()[-1])
        if current < nice:
            with open(path, "w") as fh:
                fh.write(str(nice))
    except (OSError, ValueError, IndexError) as exc:  # autogroups off, the process gone: niceness alone
        log.info("could not lower the autogroup priority of process %d: %s", pid, exc)
