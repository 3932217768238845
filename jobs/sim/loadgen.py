"""The load generator's engine: play a workload against an MCP endpoint and record every call.

Open loop plays a precomputed schedule (``workload.open_loop_schedule``): each
call is sent at its planned time whether or not earlier ones have answered, so a
slow server faces a growing queue instead of a politely slowing client. Closed
loop runs ``concurrency`` sessions back to back. Both use the hand-rolled MCP
client of ``jobs/bench/_loadgen.py`` (aiohttp, one pool), extended with generic
``tools/call``.

Every call becomes a ``CallRecord`` (JSONL); ``summarize_calls`` turns records
into count, success rate and latency percentiles at a timeout: a call slower than
the timeout is a failure and its latency is censored at the timeout, so a policy
cannot look good by leaving its stragglers out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from only1mcp.jobs.bench._loadgen import McpSession, new_http_client
from only1mcp.jobs.bench._report import percentile
from only1mcp.jobs.sim.server import META_KEY
from only1mcp.jobs.sim.workload import PlannedCall, SessionChain, Workload

__all__ = ["CallRecord", "ToolSession", "run_open_loop", "run_closed_loop", "summarize_calls", "write_jsonl",
           "answered"]


@dataclass(slots=True)  # a round keeps tens of thousands: no __dict__ each, less for the collector to walk
class CallRecord:
    index: int
    session: int
    seq: int
    tool: str
    key: str
    scheduled: float | None  # planned send time (open loop), seconds from the start
    start: float  # actual send time, seconds from the start
    latency_ms: float
    ok: bool
    error: str | None = None
    replica: str | None = None
    read_only: bool | None = None


class ToolSession(McpSession):
    """An MCP session that calls any tool and reports (ok, error, replica)."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[bool, str | None, str | None]:
        message = await self._request("tools/call", {"name": name, "arguments": arguments})
        if "error" in message:
            error = message["error"]
            return False, f"rpc {error.get('code')}: {str(error.get('message'))[:160]}", None
        result = message.get("result") or {}
        replica = (result.get("_meta") or {}).get(META_KEY)
        text = next((c.get("text") for c in result.get("content") or () if c.get("type") == "text"), None)
        if replica is None and text:  # a proxy may drop _meta; the sim-server repeats it in the text
            try:
                replica = json.loads(text).get("replica")
            except (ValueError, AttributeError):
                pass
        if result.get("isError"):
            return False, f"tool error: {(text or '')[:160]}", replica
        return True, None, replica

    async def tool_hints(self) -> dict[str, bool]:
        """readOnlyHint per listed tool."""
        message = await self._request("tools/list", {})
        tools = (message.get("result") or {}).get("tools") or []
        return {t["name"]: bool((t.get("annotations") or {}).get("readOnlyHint")) for t in tools}


async def _open_sessions(http: aiohttp.ClientSession, url: str, count: int) -> list[ToolSession]:
    sessions = [ToolSession(http, url, client_name=f"only1mcp-loadgen-{i}") for i in range(count)]
    for batch in range(0, count, 32):  # a bounded burst of initializes, not hundreds at once
        await asyncio.gather(*(s.open() for s in sessions[batch:batch + 32]))
    return sessions


async def _one(session: ToolSession, call: PlannedCall, t0: float, timeout_s: float,
               hints: dict[str, bool], scheduled: float | None) -> CallRecord:
    started = time.perf_counter()
    ok, error, replica = False, None, None
    try:
        async with asyncio.timeout(timeout_s):
            ok, error, replica = await session.call_tool(call.tool, {"key": call.key})
    except TimeoutError:
        error = "timeout"
    except Exception as exc:  # a refused connection, a broken reply: the call failed, the run goes on
        error = f"{type(exc).__name__}: {exc}"[:200]
    latency = (time.perf_counter() - started) * 1000.0
    return CallRecord(call.index, call.session, call.seq, call.tool, call.key, scheduled, started - t0,
                      latency, ok, error, replica, hints.get(call.tool))


async def run_open_loop(url: str, schedule: Sequence[PlannedCall], sessions: int, timeout_s: float,
                        http: aiohttp.ClientSession | None = None, start_at: float | None = None) -> list[CallRecord]:
    """Send every planned call at its time on its session; wait for all to end or time out.

    ``start_at`` (unix time) pins the schedule's zero, e.g. to the servers' fault clock.
    """
    async with _client(http, timeout_s) as client:
        opened = await _open_sessions(client, url, sessions)
        hints = await opened[0].tool_hints()
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        # A finished call leaves only its record: holding every task of the round until the end (a gather
        # over all of them) kept tens of thousands of tasks and coroutines alive for the collector to walk,
        # and its pauses delay every call in flight, which then shows as the endpoint's latency.
        records: list[CallRecord] = []
        pending: set[asyncio.Task[CallRecord]] = set()

        def finished(task: asyncio.Task[CallRecord]) -> None:
            pending.discard(task)
            if not task.cancelled():
                records.append(task.result())

        t0 = time.perf_counter()
        for call in schedule:
            delay = t0 + call.t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(_one(opened[call.session], call, t0, timeout_s, hints, call.t))
            pending.add(task)
            task.add_done_callback(finished)
        while pending:
            await asyncio.wait(set(pending))
        await asyncio.sleep(0)  # the last done-callbacks run
        await asyncio.gather(*(s.close() for s in opened), return_exceptions=True)
    records.sort(key=lambda r: r.index)  # the schedule's order, as before
    return records


async def run_closed_loop(url: str, workload: Workload, seed: int | str, concurrency: int, duration: float,
                          timeout_s: float, http: aiohttp.ClientSession | None = None) -> list[CallRecord]:
    """``concurrency`` sessions, each calling back to back for ``duration`` seconds."""
    async with _client(http, timeout_s) as client:
        opened = await _open_sessions(client, url, concurrency)
        hints = await opened[0].tool_hints()
        records: list[CallRecord] = []
        t0 = time.perf_counter()
        deadline = t0 + duration

        async def worker(index: int) -> None:
            chain = SessionChain(workload, seed, index)
            seq = 0
            while time.perf_counter() < deadline:
                tool, key = chain.next()
                call = PlannedCall(-1, 0.0, index, seq, tool, key)
                records.append(await _one(opened[index], call, t0, timeout_s, hints, None))
                seq += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        await asyncio.gather(*(s.close() for s in opened), return_exceptions=True)
    records.sort(key=lambda r: r.start)
    for i, record in enumerate(records):
        record.index = i
    return records


class _client:
    """Use the caller's HTTP pool, or own one for the run."""

    def __init__(self, http: aiohttp.ClientSession | None, timeout_s: float) -> None:
        self.http, self.owned = http, http is None
        self.timeout_s = timeout_s

    async def __aenter__(self) -> aiohttp.ClientSession:
        if self.http is None:
            # aiohttp's own limit sits above the per-call one, which is the one that counts.
            self.http = new_http_client(self.timeout_s + 5.0)
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        if self.owned and self.http is not None:
            await self.http.close()


def answered(record: Any) -> bool:
    """Whether the server answered the call (a result, a tool error or a JSON-RPC error), as opposed to a
    timeout or a broken exchange; ``record`` is a CallRecord or its dict."""
    row = record if isinstance(record, dict) else asdict(record)
    return bool(row["ok"]) or str(row["error"]).startswith(("rpc ", "tool error"))


def summarize_calls(records: Iterable[Any], timeout_s: float | None = None) -> dict[str, Any]:
    """Count, success rate and latency (ms) of calls; records are CallRecords or their dicts.

    With ``timeout_s`` a call that took longer is a failure, and every latency is
    censored at the timeout (a call still waiting then would never have been seen).
    """
    rows = [r if isinstance(r, dict) else asdict(r) for r in records]
    cap = timeout_s * 1000.0 if timeout_s else float("inf")
    ok = [r for r in rows if r["ok"] and r["latency_ms"] <= cap]
    latencies = sorted(min(r["latency_ms"], cap) for r in rows)
    errors = Counter("timeout" if r["ok"] or r["error"] == "timeout" else str(r["error"]).split(":")[0]
                     for r in rows if not (r["ok"] and r["latency_ms"] <= cap))
    starts = [r["start"] for r in rows]
    span = max(starts) - min(starts) if len(starts) > 1 else 0.0

    def ms(q: float) -> float | None:
        return round(percentile(latencies, q), 3) if latencies else None

    return {
        "count": len(rows),
        "ok": len(ok),
        "success_rate": round(len(ok) / len(rows), 5) if rows else None,
        "timeout_s": timeout_s,
        "calls_per_s": round(len(rows) / span, 2) if span > 0 else None,
        "latency_ms": {
            "mean": round(sum(latencies) / len(latencies), 3) if latencies else None,
            "p50": ms(50), "p95": ms(95), "p99": ms(99), "max": round(latencies[-1], 3) if latencies else None,
        },
        "failures": dict(errors.most_common()),
        "by_replica": dict(sorted(Counter(str(r.get("replica")) for r in rows).items())),
    }


def write_jsonl(path: str | Path, records: Iterable[CallRecord]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for record in records:
            fh.write(orjson.dumps(asdict(record)) + b"\n")
    return path
