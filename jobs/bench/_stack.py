"""The whole system for a benchmark, each part its own process, on free ports, in one folder.

What ``only1mcp up`` runs, without its terminal, its run directory or its ``.only1mcp/last-up``
record (a benchmark leaves nothing behind): the embedded broker (tansu) with every topic of
``only1mcp.events.TOPICS``, a private bundled Redis, ``only1mcp worker``, a fleet of simulated
replicas (``only1mcp sim-server --fleet``, one process, fast tools by default so that the proxy
rather than the upstream is what limits) and ``only1mcp proxy`` with events on::

    with Stack(tmp, environ) as stack:          # broker, topics, Redis, the process group
        run_interruptibly(main(stack))          # main awaits stack.start() first

Leaving the block stops the processes newest first (the proxy flushes its events before the
broker goes), then Redis and the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._procs import Managed, ProcessGroup, free_ports

__all__ = ["FAST_PROFILE", "HOST", "Stack"]

HOST = "127.0.0.1"
PY = [sys.executable, "-m", "only1mcp.cli"]
# Millisecond tools and workers enough never to queue: the proxy, not the upstream, sets the maximum.
# Two tools fail now and then, so error events flow too.
FAST_PROFILE: dict[str, Any] = {
    "workers": 64,
    "tools": {
        "search": {"median_ms": 2.0, "sigma": 0.3, "read_only": True, "error_rate": 0.02},
        "get_document": {"median_ms": 1.0, "sigma": 0.3, "read_only": True},
        "summarize": {"median_ms": 3.0, "sigma": 0.3, "read_only": True},
        "update_record": {"median_ms": 2.0, "sigma": 0.3, "read_only": False},
        "delete_record": {"median_ms": 1.5, "sigma": 0.3, "read_only": False, "error_rate": 0.1},
    },
}


class Stack:
    """Broker, Redis, worker, simulated replicas and the proxy; see the module docstring."""

    def __init__(self, tmp: Path, environ: dict[str, str] | None = None, *, replicas: int = 3,
                 profile: dict[str, Any] | None = None, policy: str = "learned", partitions: int = 4,
                 startup_timeout: float = 60.0) -> None:
        self.tmp = Path(tmp)
        self.environ = dict(os.environ if environ is None else environ)
        for name in ("KAFKA_BOOTSTRAP", "REDIS_URL"):  # set below to the stack's own
            self.environ.pop(name, None)
        self.replicas = replicas
        self.profile = profile or FAST_PROFILE
        self.policy = policy
        self.partitions = partitions
        self.startup_timeout = startup_timeout
        self.data_dir = self.tmp / "data"
        self.config = self.tmp / "only1mcp.toml"
        self.group = f"bench-{uuid.uuid4().hex[:8]}"
        self.broker: Any = None
        self.redis: Any = None
        self.procs: ProcessGroup | None = None
        self.worker: Managed | None = None
        self.sim: Managed | None = None
        self.proxy: Managed | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        from only1mcp.events import TOPICS
        from only1mcp.infra.broker import EmbeddedBroker, create_topics
        from only1mcp.commands.up import UP_WORKER_NICE
        from only1mcp.infra.redis import ensure_redis

        try:
            # The learning loop's processes at the worker's niceness, as `only1mcp up` runs them.
            self.broker = EmbeddedBroker(start_timeout_s=self.startup_timeout, nice=UP_WORKER_NICE).start()
            create_topics(self.broker.bootstrap, TOPICS.values(), self.partitions, timeout_s=30.0)
            # private: nothing shared is touched
            self.redis = ensure_redis(None, timeout_s=self.startup_timeout, nice=UP_WORKER_NICE)
            env = {**self.environ, "KAFKA_BOOTSTRAP": self.broker.bootstrap, "REDIS_URL": self.redis.url,
                   "PYTHONUNBUFFERED": "1"}
            self.procs = ProcessGroup(self.tmp, env=env)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.procs is not None:
                self.procs.stop_all()
        finally:
            if self.redis is not None:
                self.redis.stop()
            if self.broker is not None:
                self.broker.stop()

    async def start(self) -> Stack:
        """Worker, simulated replicas, proxy; ready = the proxy's /readyz is 200 and the worker's
        consumer group is stable (tansu completes a join only when a timeout runs out: seconds)."""
        assert self.procs is not None, "use the Stack as a context manager"
        procs, timeout = self.procs, self.startup_timeout
        sim_ports = free_ports(self.replicas, HOST)
        self.port = free_ports(1, HOST)[0]
        fleet = [{"port": p, "replica_id": f"r{i}", "seed": i, "profile": self.profile}
                 for i, p in enumerate(sim_ports)]
        (self.tmp / "fleet.json").write_text(json.dumps(fleet, indent=2))
        self.config.write_text(self.config_text(sim_ports))
        self.worker = procs.start("worker", [*PY, "worker", "--config", str(self.config)])
        self.sim = procs.start("sim", [*PY, "sim-server", "--fleet", str(self.tmp / "fleet.json")])
        await procs.wait_ready(self.sim, _tcp_probe(sim_ports), timeout)
        self.proxy = procs.start("proxy", [*PY, "proxy", "--config", str(self.config)])
        await procs.wait_ready(self.proxy, self._ready_probe, timeout)
        await procs.wait_ready(self.worker, self._group_probe, timeout)
        return self

    def config_text(self, sim_ports: list[int]) -> str:
        from only1mcp.commands._up_support import to_toml
        from only1mcp.commands.up import UP_WORKER_NICE

        server: dict[str, Any] = {"name": "sim", "namespace": "", "policy": self.policy, "timeout": 10.0,
                                  "replicas": [{"url": f"http://{HOST}:{p}/mcp"} for p in sim_ports]}
        if self.policy == "learned":
            server["fallback_policy"] = "p2c_ewma"  # until the worker's first weights arrive
        raw = {
            "proxy": {"listen": f"{HOST}:{self.port}"},
            "events": {"bootstrap": self.broker.bootstrap, "spool_dir": str(self.tmp / "spool"),
                       "proxy_id": "bench-proxy"},
            "worker": {"bootstrap": self.broker.bootstrap, "group": self.group, "partitions": self.partitions,
                       "nice": UP_WORKER_NICE},  # as `only1mcp up` runs it
            "store": {"redis_url": self.redis.url, "key_prefix": self.group, "data_dir": str(self.data_dir)},
            "servers": [server],
        }
        return "# Written by a benchmark (jobs/bench/_stack.py)\n" + to_toml(raw)

    # -- probes ------------------------------------------------------------------------------

    async def _ready_probe(self) -> None:
        from only1mcp.commands._up_support import _http_status

        status = await asyncio.to_thread(_http_status, f"{self.base}/readyz")
        if status != 200:
            raise RuntimeError(f"/readyz answered {status}")

    async def _group_probe(self) -> None:
        from only1mcp.infra.broker import group_state

        state = await group_state(self.broker.bootstrap, self.group)
        if state != "Stable":
            raise RuntimeError(f"consumer group {self.group!r} is {state!r}")


def _tcp_probe(ports: list[int]) -> Any:
    async def probe() -> None:
        for port in ports:
            _reader, writer = await asyncio.open_connection(HOST, port)
            writer.close()

    return probe

