"""What the health benchmark watches while a row runs: which replicas the proxy keeps out of routing
(``/admin/upstreams``) and the anomalies the worker reports (``mcp.anomalies``), on the fault clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from only1mcp.jobs.sim.health_scenarios import severity_at_least

__all__ = ["AnomalyReader", "RoutingWatcher", "first_per_burst"]

_POLL_S = 0.2  # how often /admin/upstreams is read


class RoutingWatcher:
    """Polls ``/admin/upstreams``: (time, out of routing) per replica, on the fault clock."""

    def __init__(self, proxy_url: str, epoch: float, by_port: dict[int, str]) -> None:
        self.url = proxy_url.rsplit("/", 1)[0] + "/admin/upstreams"
        self.epoch, self.by_port = epoch, by_port
        self.samples: dict[str, list[tuple[float, bool]]] = {rid: [] for rid in by_port.values()}
        self.sim_ids: dict[str, str] = {}  # the proxy's replica id → the sim replica's

    async def run(self) -> None:
        from only1mcp.jobs.bench._loadgen import new_http_client

        async with new_http_client(5.0) as http:
            while True:
                with contextlib.suppress(Exception):
                    async with http.get(self.url) as resp:
                        body = await resp.json(content_type=None)
                    t = time.time() - self.epoch
                    for server in body["servers"].values():
                        for replica in server["replicas"]:
                            rid = self.by_port.get(int(replica["target"].rsplit(":", 1)[1].split("/")[0]))
                            if rid is not None:
                                self.sim_ids[replica["id"]] = rid
                                routable = bool((replica.get("health") or {}).get("routable", True))
                                # Out of routing: unhealthy, ejected, remediated, or its connection lost.
                                out = (not routable or replica.get("state") != "ready"
                                       or bool(replica.get("remediation")))
                                self.samples[rid].append((t, out))
                await asyncio.sleep(_POLL_S)


class AnomalyReader:
    """Reads ``mcp.anomalies`` as it is written: every event, on the fault clock."""

    def __init__(self, bootstrap: str, epoch: float) -> None:
        self.bootstrap, self.epoch = bootstrap, epoch
        self.events: list[dict[str, Any]] = []

    @property
    def count(self) -> int:
        return len(self.events)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from only1mcp.events import TOPICS, AnomalyEvent

        consumer = AIOKafkaConsumer(TOPICS["anomalies"], bootstrap_servers=self.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        try:
            async for record in consumer:
                with contextlib.suppress(Exception):
                    event = AnomalyEvent.from_json(record.value)
                    self.events.append({"t": time.time() - self.epoch, "ts": event.ts - self.epoch,
                                        "replica": event.replica, "server": event.server, "tool": event.tool,
                                        "state": event.state, "severity": event.severity, "score": event.score,
                                        "kind": event.kind, "detectors": dict(event.detectors),
                                        "ttf_s": event.time_to_failure_s})
        finally:
            await consumer.stop()

    def flags(self, floor: str, sim_ids: dict[str, str]) -> dict[str, list[float]]:
        """Sim replica → times an anomaly of ``floor`` or worse was first reported (one per anomaly)."""
        out: dict[str, list[float]] = {}
        for e in self.events:
            if e["tool"] is None and e["state"] != "close" and severity_at_least(e["severity"], floor):
                out.setdefault(sim_ids.get(e["replica"], e["replica"]), []).append(e["ts"])
        return {rid: first_per_burst(times) for rid, times in out.items()}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.events:
            entry = out.setdefault(e["replica"], {"events": 0, "max_severity": "low"})
            entry["events"] += 1
            if severity_at_least(e["severity"], entry["max_severity"]):
                entry["max_severity"] = e["severity"]
        return out


def first_per_burst(times: list[float], gap_s: float = 5.0) -> list[float]:
    """Open/update events of one anomaly come every second or so: a new flag only after a quiet gap."""
    out: list[float] = []
    last = -float("inf")
    for t in sorted(times):
        if t - last > gap_s:
            out.append(t)
        last = t
    return out
