"""A simulated MCP fleet: latency model, sim-server, load generator and the routing benchmark.

``model`` is pure code (no I/O) shared by the real ``server`` and the ``oracle``'s
discrete-event simulation, so both see the same service times, queues and faults.
``workload`` turns a seed into the call sequence the ``loadgen`` plays and the
oracle replays; ``bench`` runs ``only1mcp bench routing``. ``traces`` is the call-trace format of
``only1mcp bench cache`` (and the loadgen's sessions as a trace); ``agents`` generates agent-like
traces, with their ground truth, from the worlds in ``agent_devtools`` and ``agent_support``.
"""

__all__: list[str] = []
