"""The sim-server: a real MCP server (Streamable HTTP) whose tools behave like the model says.

Each replica is an ``mcp`` SDK lowlevel ``Server`` (cheaper per call than
``MCPServer``: no pydantic argument models, no context injection) answering
plain JSON. A call of a modelled tool takes one of the replica's ``workers`` (an
``asyncio.Semaphore``, first come first served), so under load it waits before
its service time; service time and error are drawn from the replica's seeded
stream through ``model.Profile``, the same code the oracle runs.

Tools take a string ``key``; read-only ones are annotated ``readOnlyHint``, the
others ``destructiveHint``. Replies carry the replica id both in the text (JSON)
and in ``_meta``, so a client behind a proxy can tell who served it.
``sim_stats`` returns executions per tool, so a test can count what reached the
upstream.

Several replicas may share one process (a *fleet*: one uvicorn server, one
listening socket per replica, dispatched by local port) because starting the
SDK costs about a CPU-second per process. A ``crash`` fault ends the process, so
in a fleet it takes every replica down: give crashing replicas a process each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mcp.types as types
from mcp.server.lowlevel.server import Server

from only1mcp.jobs.sim.model import Profile, service_rng

__all__ = ["META_KEY", "STATS_TOOL", "ReplicaSpec", "SimReplica", "Fleet", "serve"]

STATS_TOOL = "sim_stats"
META_KEY = "only1mcp/replica"  # _meta key of the serving replica's id
_KEY_SCHEMA = {
    "type": "object",
    "properties": {"key": {"type": "string", "description": "what the call is about (a document id, a query)"}},
    "required": ["key"],
}


@dataclass(frozen=True)
class ReplicaSpec:
    port: int
    replica_id: str
    profile: Profile
    seed: int | str = 0
    epoch: float | None = None  # wall-clock time faults count from; None = when built


class SimReplica:
    """One simulated replica: model, workers, counters and its MCP app."""

    def __init__(self, spec: ReplicaSpec, host: str = "127.0.0.1") -> None:
        self.id = spec.replica_id
        self.profile = spec.profile
        self.epoch = time.time() if spec.epoch is None else spec.epoch
        self.rng = service_rng(spec.seed, spec.replica_id)
        self.workers = asyncio.Semaphore(spec.profile.workers)
        self.executions: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()
        self.inflight = 0
        self.waiting = 0
        self.server: Server[Any] = Server(
            "only1mcp-sim", version="1", title=f"sim replica {self.id}",
            on_list_tools=self._list_tools, on_call_tool=self._call_tool,
        )
        # Plain JSON replies: an SSE stream per call costs the server more CPU.
        self.app = self.server.streamable_http_app(json_response=True, host=host)

    def now(self) -> float:
        """Seconds since the fault clock started."""
        return time.time() - self.epoch

    def tools(self) -> list[types.Tool]:
        listed = []
        for name, spec in self.profile.tools.items():
            hints = types.ToolAnnotations(read_only_hint=spec.read_only, destructive_hint=not spec.read_only,
                                          idempotent_hint=spec.read_only, open_world_hint=False)
            kind = "reads" if spec.read_only else "changes"
            listed.append(types.Tool(name=name, description=f"Simulated tool that {kind} the record `key`.",
                                     input_schema=_KEY_SCHEMA, annotations=hints))
        stats_hints = types.ToolAnnotations(read_only_hint=True, destructive_hint=False)
        listed.append(types.Tool(name=STATS_TOOL, description="Executions per tool on this replica.",
                                 input_schema={"type": "object", "properties": {}}, annotations=stats_hints))
        return listed

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools())

    def stats(self) -> dict[str, Any]:
        return {
            "replica": self.id, "uptime_s": round(self.now(), 3), "workers": self.profile.workers,
            "executions": dict(self.executions), "errors": dict(self.errors), "cancelled": dict(self.cancelled),
            "inflight": self.inflight, "waiting": self.waiting,
        }

    def _result(self, payload: dict[str, Any], error: bool = False) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(payload))],
                                    meta={META_KEY: self.id}, is_error=error)

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        name, args = params.name, params.arguments or {}
        if name == STATS_TOOL:
            return self._result(self.stats())
        if name not in self.profile.tools:
            return self._result({"replica": self.id, "error": f"unknown tool {name!r}"}, error=True)
        key = args.get("key")
        if not isinstance(key, str):
            return self._result({"replica": self.id, "error": "argument 'key' (a string) is required"}, error=True)
        self.executions[name] += 1
        arrived = self.now()
        self.inflight += 1
        self.waiting += 1
        waiting = True
        try:
            async with self.workers:
                self.waiting, waiting = self.waiting - 1, False
                start = self.now()
                stall_end = self.profile.stall_end(name, start)
                if stall_end > start:  # the worker is held through the stall, as the model says
                    await asyncio.sleep(stall_end - start)
                    start = stall_end
                # Draw both numbers on every call, so the stream stays aligned call by call.
                z, u = self.rng.gauss(0.0, 1.0), self.rng.random()
                service = self.profile.service(name, start).at(z)
                error = u < self.profile.error_probability(name, start)
                await asyncio.sleep(service)
        except asyncio.CancelledError:  # the client (or the proxy's timeout) gave up on the call
            self.cancelled[name] += 1
            raise
        finally:
            self.inflight -= 1
            self.waiting -= 1 if waiting else 0
        payload = {"replica": self.id, "tool": name, "key": key, "wait_ms": round((start - arrived) * 1000, 3),
                   "service_ms": round(service * 1000, 3)}
        if error:
            self.errors[name] += 1
            payload["error"] = "simulated failure"
        return self._result(payload, error=error)


class Fleet:
    """An ASGI app serving several replicas, each on its own port (dispatched by local port)."""

    def __init__(self, replicas: Sequence[SimReplica], ports: Sequence[int]) -> None:
        self.by_port = dict(zip(ports, replicas))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        server = scope.get("server") or (None, None)
        replica = self.by_port.get(server[1]) or next(iter(self.by_port.values()))
        if scope["type"] == "http" and replica.profile.is_down(replica.now()):
            # Flapping: unreachable as far as an HTTP client can tell, without closing the listener.
            body = b'{"error": "replica down (simulated)"}'
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        await replica.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        # The SDK apps' own lifespans never run (they are not mounted), so their session
        # managers are entered here, in the one lifespan task, and left in it too.
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        for replica in self.by_port.values():
                            await stack.enter_async_context(replica.server.session_manager.run())
                            self._arm_crash(replica)
                    except Exception as exc:  # reported to uvicorn, which exits
                        await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await stack.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    @staticmethod
    def _arm_crash(replica: SimReplica) -> None:
        at = replica.profile.crash_at
        if at is None or replica.now() > at:  # a restarted process keeps the old clock: no second crash
            return

        def crash() -> None:
            print(f"sim-server {replica.id}: simulated crash at t={replica.now():.3f}s", file=sys.stderr, flush=True)
            os._exit(1)  # no reply, no clean shutdown, like a segfault

        asyncio.get_running_loop().call_later(at - replica.now(), crash)


def serve(specs: Sequence[ReplicaSpec], host: str = "127.0.0.1") -> None:
    """Serve the replicas over Streamable HTTP at ``http://host:PORT/mcp`` until stopped."""
    import uvicorn

    sockets = []
    for spec in specs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, spec.port))
        sockets.append(sock)
    replicas = [SimReplica(spec, host) for spec in specs]
    app = Fleet(replicas, [spec.port for spec in specs])
    # No access log and warnings only: a console write per call would be CPU the
    # benchmark measures as latency. A short graceful shutdown: calls queued on a
    # slow replica must not hold the next benchmark run back.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=1)
    from only1mcp.commands._common import freeze_startup_heap

    freeze_startup_heap()  # its collector pauses are latency the benchmarks would blame on the proxy
    uvicorn.Server(config).run(sockets=sockets)
