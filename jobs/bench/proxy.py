"""``only1mcp bench proxy``: tools/call throughput and latency, direct vs Only1MCP vs FastMCP's proxy.

One run starts the echo upstream in its own process, then each proxy arm in its
own process in front of it, and drives every (arm, concurrency) cell from this
process with a hand-rolled MCP client (one session per concurrent worker). The
cells are warmed up, then measured in interleaved slices so that drift of a
noisy machine spreads over all of them instead of landing on one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._procs import Managed, ProcessGroup, StartError, free_ports, run_interruptibly
from only1mcp.jobs.bench._report import Bar, machine_info, render_bars, publish, render_table, summarize

__all__ = ["ARMS", "DEFAULT_OUT", "add_arguments", "run"]

ARMS = ("direct", "only1mcp", "fastmcp")
DEFAULT_OUT = "bench-results/proxy.json"
HOST = "127.0.0.1"
TOOL = "echo"  # every arm exposes it unprefixed: Only1MCP via namespace = "", FastMCP by default
_SERVER_NAMES = {"fastmcp": "fastmcp-proxy"}  # serverInfo.name each arm must answer with, where known
_MIN_SLICE_S = 0.5  # shorter slices would be dominated by the calls straddling their ends

_ONLY1MCP_CONFIG = """\
[proxy]
listen = "{host}:{port}"

[[servers]]
name = "echo"
namespace = ""
policy = "{policy}"
[[servers.replicas]]
url = "{upstream}"
"""
# Policies that route by weights from outside get two replica entries (of the one upstream), so the
# policy really chooses on every call, and weights posted through the admin API.
_WEIGHTED = ("weighted", "learned")
_SECOND_REPLICA = """
[[servers.replicas]]
url = "{upstream}"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell first (default 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], metavar="N", help="default: 1 8")
    parser.add_argument(
        "--arms", nargs="+", choices=ARMS, default=list(ARMS), metavar="ARM", help="of: %(choices)s (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices per cell (default 5)")
    parser.add_argument("--startup-timeout", type=float, default=30.0, help="seconds for a server to become ready")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every bar passes")
    parser.add_argument("--prefetch", action="store_true",
                        help="the Only1MCP arm with [prefetch] enabled and echo prefetchable (safe, cached): every "
                             "call learned from in full, none repeated (bench prefetch)")
    parser.add_argument("--policy", default="p2c_ewma",
                        help="the Only1MCP arm's routing policy (default %(default)s); weighted and learned get two "
                             "replica entries of the upstream and weights posted to /admin/weights")


def _bars() -> list[Bar]:
    return [
        Bar("only1mcp_vs_direct_throughput_c8", "Only1MCP throughput vs direct @c8", ">=", 70.0, "%"),
        Bar("only1mcp_vs_fastmcp_throughput_c8", "Only1MCP throughput vs FastMCP proxy @c8", ">=", 10.0, "x"),
        Bar("only1mcp_p50_overhead_c1", "Only1MCP p50 - direct p50 @c1", "<=", 1.0, " ms"),
    ]


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or any(c < 1 for c in args.concurrency):
        print("error: --duration must be > 0, --warmup >= 0, --rounds and --concurrency >= 1", file=sys.stderr)
        return 2
    args.arms = list(dict.fromkeys(args.arms))
    args.concurrency = list(dict.fromkeys(args.concurrency))
    loop_factory, loop_name = _loop_factory()
    began = time.perf_counter()
    try:
        # Processes stop (ProcessGroup) before their log folder goes (TemporaryDirectory).
        with tempfile.TemporaryDirectory(prefix="only1mcp-bench-") as tmp, ProcessGroup(
            Path(tmp), env=getattr(args, "environ", None)
        ) as procs:
            report = run_interruptibly(_bench(args, procs, Path(tmp)), loop_factory)
    except KeyboardInterrupt:
        print("interrupted: benchmark servers stopped", file=sys.stderr)
        return 130
    except StartError as exc:
        print(f"error: the echo upstream did not start: {exc}", file=sys.stderr)
        print(exc.log_tail, file=sys.stderr)
        return 2
    report["settings"]["loadgen_event_loop"] = loop_name
    report["wall_s"] = round(time.perf_counter() - began, 2)
    return publish(report, args.out, args.strict)


def _loop_factory() -> tuple[Any, str]:
    try:
        import uvloop  # the load generator should cost as little CPU as possible
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def _arm_argv(arm: str, port: int, upstream_url: str, tmp: Path, policy: str = "p2c_ewma",
              prefetch: bool = False) -> list[str]:
    if arm == "only1mcp":
        config = tmp / "only1mcp.toml"
        body = _ONLY1MCP_CONFIG.format(host=HOST, port=port, upstream=upstream_url, policy=policy)
        if policy in _WEIGHTED:
            body += _SECOND_REPLICA.format(upstream=upstream_url)
        if prefetch:  # echo prefetchable, so every call is learned in full (the worst case); its unique
            # texts never repeat, so nothing is ever prefetched nor answered from the cache
            body += "\n[servers.tools.echo]\nsafe = true\ncache_ttl = 60.0\n\n[prefetch]\nenabled = true\n"
        config.write_text(body)
        return [sys.executable, "-m", "only1mcp.cli", "proxy", "--config", str(config)]
    if arm == "fastmcp":
        module = "only1mcp.jobs.bench._fastmcp_arm"
        return [sys.executable, "-m", module, "--upstream", upstream_url, "--host", HOST, "--port", str(port)]
    raise ValueError(arm)


async def _bench(args: argparse.Namespace, procs: ProcessGroup, tmp: Path) -> dict[str, Any]:
    from only1mcp.jobs.bench._loadgen import PROTOCOL_VERSION, new_http_client

    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info(["mcp", "fastmcp", "aiohttp", "uvicorn", "starlette", "only1mcp"])
    # All ports at once, so no two servers are handed the same one.
    upstream_port, *arm_ports = free_ports(1 + len(args.arms), HOST)
    upstream_url = f"http://{HOST}:{upstream_port}/mcp"
    echo_argv = [sys.executable, "-m", "only1mcp.jobs.servers.echo", "--host", HOST, "--port", str(upstream_port)]
    upstream = procs.start("upstream", echo_argv)
    async with new_http_client() as http:
        seen: dict[str, dict[str, Any]] = {arm: {} for arm in args.arms}
        upstream_probe = _probe(http, upstream_url, "echo", seen.setdefault("direct", {}))
        upstream_s = await procs.wait_ready(upstream, upstream_probe, args.startup_timeout)
        arms: dict[str, dict[str, Any]] = {}
        urls: dict[str, str] = {}
        started: dict[str, Managed] = {}
        for arm, port in zip(args.arms, arm_ports):
            if arm == "direct":
                urls[arm] = upstream_url
                arms[arm] = {"status": "ok", "url": upstream_url, "startup_s": round(upstream_s, 3), **seen[arm]}
            else:
                urls[arm] = f"http://{HOST}:{port}/mcp"
                started[arm] = procs.start(arm, _arm_argv(arm, port, upstream_url, tmp, args.policy,
                                                          getattr(args, "prefetch", False)))
        # Proxy arms start side by side; one that fails is skipped, not fatal.
        probes = {arm: _probe(http, urls[arm], _SERVER_NAMES.get(arm), seen[arm]) for arm in started}
        outcomes = await asyncio.gather(
            *(procs.wait_ready(proc, probes[arm], args.startup_timeout) for arm, proc in started.items()),
            return_exceptions=True,
        )
        for (arm, proc), outcome in zip(started.items(), outcomes):
            if isinstance(outcome, BaseException):
                reason, tail = f"failed to start: {outcome}", getattr(outcome, "log_tail", "")
                arms[arm] = {"status": "skipped", "reason": reason, "argv": proc.argv, "log_tail": tail}
                procs.stop(proc)
            else:
                arms[arm] = {"status": "ok", "url": urls[arm], "startup_s": round(outcome, 3), "argv": proc.argv}
                arms[arm].update(seen[arm])
                if arm == "only1mcp" and args.policy in _WEIGHTED:
                    await _post_weights(http, urls[arm])
        collected, rounds, slice_s = await _measure(args, http, arms, urls, upstream, started)
    for arm, proc in started.items():
        if arms[arm]["status"] == "ok" and not proc.alive():  # its figures are not the proxy's
            reason = f"exited during the run with code {proc.popen.returncode}"
            arms[arm] = {**arms[arm], "status": "died", "reason": reason, "log_tail": proc.log_tail(lines=20)}
            collected = {cell: v for cell, v in collected.items() if cell[0] != arm}
    return _assemble(args, arms, collected, machine, started_at, rounds, slice_s, PROTOCOL_VERSION)


async def _post_weights(http: Any, mcp_url: str) -> None:
    """Equal weights for the two replica entries, valid for the whole run."""
    body = {"weights": {"echo/0": 1.0, "echo/1": 1.0}, "valid_until": time.time() + 86_400, "model_version": "bench"}
    async with http.post(mcp_url.rsplit("/", 1)[0] + "/admin/weights/echo", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"posting weights failed: {resp.status} {await resp.text()}")


def _probe(http: Any, url: str, server_name: str | None, seen: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    from only1mcp.jobs.bench._loadgen import McpError, McpSession

    async def check() -> None:  # ready means a real session and a correct echo
        session = McpSession(http, url, client_name="only1mcp-bench-probe")
        await session.open()
        # The name guards against measuring some other server that holds the port.
        if server_name is not None and session.server_info.get("name") != server_name:
            raise McpError(f"expected server {server_name!r}, got {session.server_info}")
        await session.call_echo(TOOL, "ready?")
        seen.update(server_info=session.server_info, reply_content_type=session.last_content_type)
        await session.close()

    return check


async def _measure(
    args: argparse.Namespace, http: Any, arms: dict[str, dict[str, Any]], urls: dict[str, str],
    upstream: Managed, started: dict[str, Managed],
) -> tuple[dict[tuple[str, int], list[Any]], int, float]:
    """Warm every cell up, then measure them in rotated, interleaved slices."""
    from only1mcp.jobs.bench._loadgen import McpSession, drive

    sessions: dict[tuple[str, int], list[McpSession]] = {}
    for arm in [a for a in args.arms if arms[a]["status"] == "ok"]:
        try:
            for conc in args.concurrency:
                sessions[(arm, conc)] = [McpSession(http, urls[arm]) for _ in range(conc)]
                await asyncio.gather(*(s.open() for s in sessions[(arm, conc)]))
        except Exception as exc:
            arms[arm] = {**arms[arm], "status": "skipped", "reason": f"could not open sessions: {exc!r}"}
            for conc in args.concurrency:
                sessions.pop((arm, conc), None)
    cells = [(arm, conc) for conc in args.concurrency for arm in args.arms if (arm, conc) in sessions]
    rounds = max(1, min(args.rounds, int(args.duration / _MIN_SLICE_S)))
    slice_s = args.duration / rounds
    collected: dict[tuple[str, int], list[Any]] = {}
    for cell in cells:
        await drive(sessions[cell], TOOL, args.warmup, tag="warm")
        collected[cell] = []
    for r in range(rounds):
        shift = r % len(cells) if cells else 0
        for cell in cells[shift:] + cells[:shift]:  # rotated, so no cell always runs first
            # One unmeasured call per worker revives connections idle since the last slice.
            await asyncio.gather(*(s.call_echo(TOOL, "prime") for s in sessions[cell]), return_exceptions=True)
            meters = {"loadgen": time.process_time, "upstream": upstream.cpu_seconds}
            if cell[0] in started:
                meters["proxy"] = started[cell[0]].cpu_seconds
            collected[cell].append(await drive(sessions[cell], TOOL, slice_s, f"r{r}w", meters))
    await asyncio.gather(*(s.close() for cell in sessions.values() for s in cell))
    return collected, rounds, slice_s


def _assemble(
    args: argparse.Namespace,
    arms: dict[str, dict[str, Any]],
    collected: dict[tuple[str, int], list[Any]],
    machine: dict[str, Any],
    started_at: datetime.datetime,
    rounds: int,
    slice_s: float,
    protocol_version: str,
) -> dict[str, Any]:
    cells = {cell: summarize(slices) for cell, slices in collected.items()}
    for (_arm, conc), figures in cells.items():
        direct = cells.get(("direct", conc))
        base = direct["calls_per_s"] if direct else 0.0
        figures["pct_of_direct"] = round(100.0 * figures["calls_per_s"] / base, 2) if base else None

    def get(arm: str, conc: int, *keys: str) -> float | None:
        value: Any = cells.get((arm, conc))
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    bars = _bars()
    o8, d8, f8 = (get(a, 8, "calls_per_s") for a in ("only1mcp", "direct", "fastmcp"))
    o1, d1 = (get(a, 1, "latency_ms", "p50") for a in ("only1mcp", "direct"))

    def missing(*pairs: tuple[str, float | None]) -> str:
        gone = [name for name, v in pairs if v is None]
        return f"not measured: {', '.join(gone)}" if gone else ""

    bars[0].judge(100.0 * o8 / d8 if o8 is not None and d8 else None, missing(("only1mcp@c8", o8), ("direct@c8", d8)))
    bars[1].judge(o8 / f8 if o8 is not None and f8 else None, missing(("only1mcp@c8", o8), ("fastmcp@c8", f8)))
    overhead = o1 - d1 if o1 is not None and d1 is not None else None
    bars[2].judge(overhead, missing(("only1mcp@c1", o1), ("direct@c1", d1)))

    rows: list[list[str] | str] = []
    for arm in args.arms:
        if arms[arm]["status"] != "ok":
            reason = " ".join(str(arms[arm]["reason"]).split())
            rows.append(f"{arm:<8}  {arms[arm]['status'].upper()} - {reason[:240]}")
            continue
        for conc in args.concurrency:
            f = cells[(arm, conc)]
            lat, pct = f["latency_ms"], f["pct_of_direct"]
            rows.append([
                arm, str(conc), f"{f['calls_per_s']:.1f}",
                "-" if lat["p50"] is None else f"{lat['p50']:.2f}",
                "-" if lat["p99"] is None else f"{lat['p99']:.2f}",
                str(f["errors"]), "-" if pct is None else f"{pct:.1f}%",
            ])
    headers = ["arm", "conc", "calls/s", "p50 ms", "p99 ms", "errors", "% direct"]
    title = (
        f"proxy benchmark: tools/call {TOOL!r}, {args.duration:g}s per cell in {rounds} interleaved slices, "
        f"{args.warmup:g}s warm-up, {machine['cpus_usable']} CPUs, Python {machine['python_version']}"
    )
    text = "\n".join([title, "", render_table(headers, rows), "", render_bars(bars)])
    return {
        "benchmark": "proxy",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {
            "duration_s": args.duration, "warmup_s": args.warmup, "rounds": rounds, "slice_s": round(slice_s, 4),
            "concurrency": args.concurrency, "arms": args.arms, "tool": TOOL, "policy": args.policy,
            "prefetch": getattr(args, "prefetch", False),
            "protocol_version": protocol_version, "sessions": "one MCP session per concurrent worker",
        },
        "machine": {**machine, "load_average_end": machine_info()["load_average"]},
        "arms": arms,
        "results": [{"arm": arm, "concurrency": conc, **cells[(arm, conc)]} for arm, conc in cells],
        "bars": [bar.to_json() for bar in bars],
        "_text": text,
    }
