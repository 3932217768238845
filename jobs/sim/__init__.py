"""A simulated MCP fleet: latency model, sim-server, load generator and the routing benchmark.

``model`` is pure code (no I/O) shared by the real ``server`` and the ``oracle``'s
discrete-event simulation, so both see the same service times, queues and faults.
``workload`` turns a seed into the call sequence the ``loadgen`` plays and the
oracle replays; ``bench`` runs ``only1mcp bench routing``.
"""

__all__: list[str] = []
