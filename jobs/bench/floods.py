"""``only1mcp bench floods``: a well-behaved client's latency while abusive clients hit the proxy.

One run starts the faults upstream and Only1MCP in front of it, each in its own
process. A well-behaved client (its own token, one MCP session per worker) calls
``echo`` back to back: first alone, then while each offender runs in a process of its
own — a session flood, slowloris bodies, SSE readers that stop reading, thousands of
calls in flight on one session — then alone again. Its p99 during each offender is
reported as a ratio to its unloaded p99 (the two unloaded phases pooled), beside the
proxy's peak resident memory in that phase and what the offender got back (HTTP status
and JSON-RPC code). Bars: every ratio at most 2×, and the proxy's peak memory bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from only1mcp.jobs.bench._offenders import KINDS
from only1mcp.jobs.bench._procs import (
    Managed, ProcessGroup, StartError, free_ports, peak_rss_kib, rss_kib, run_interruptibly,
)
from only1mcp.jobs.bench._report import Bar, machine_info, percentile, publish, render_bars, render_table

__all__ = ["DEFAULT_OUT", "add_arguments", "run", "PHASES"]

DEFAULT_OUT = "bench-results/floods.json"
HOST = "127.0.0.1"
TOOL = "faults__echo"
GOOD = "good-client-token-0001"
TOKENS = {kind: f"{kind.replace('_', '-')}-token-0001" for kind in KINDS}
PHASES = ("unloaded", *KINDS, "unloaded_after")
RATIO_BAR = 2.0
RSS_BAR_MIB = 256.0  # the proxy's peak over the whole run; it idles near 60-70 MiB
# Shorter than the defaults (30 s) so that a phase sees offenders refused several times over.
LIMITS = {"body_timeout": 3.0, "stream_write_timeout": 5.0}
QUICK_SESSIONS_PER_CLIENT = 100
_STARTUP_S = 1.5  # the offender process imports and starts before the phase is measured

_CONFIG = """\
[proxy]
listen = "{host}:{port}"
{limits}

[auth]
tokens = [{tokens}]

[[servers]]
name = "faults"
[[servers.replicas]]
url = "{upstream}"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short phases and smaller offenders (under a minute)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per phase (default 10, "
                                                                      "--quick 3)")
    parser.add_argument("--offenders", nargs="+", choices=KINDS, default=list(KINDS), metavar="KIND",
                        help="of: %(choices)s (default: all)")
    parser.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                        help="a [proxy] setting for the run (TOML value), e.g. max_inflight_per_session=16")
    parser.add_argument("--workers", type=int, default=2, help="the well-behaved client's concurrent sessions")
    parser.add_argument("--startup-timeout", type=float, default=30.0, help="seconds for a server to become ready")
    parser.add_argument("--json", "--out", dest="out", default=DEFAULT_OUT, metavar="OUT",
                        help="JSON results file (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every bar passes")


def run(args: argparse.Namespace) -> int:
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    if duration <= 0 or args.workers < 1:
        print("error: --duration must be > 0 and --workers >= 1", file=sys.stderr)
        return 2
    args.duration = duration
    args.phases = ["unloaded", *[k for k in KINDS if k in args.offenders], "unloaded_after"]
    args.limits = dict(LIMITS)
    if args.quick:  # a 3 s phase on a busy machine fits fewer initializes than the default cap (1,000) of 429s
        args.limits["max_sessions_per_client"] = QUICK_SESSIONS_PER_CLIENT
    for item in args.limit:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --limit expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        args.limits[key.strip()] = value.strip()
    args.scale = 0.3 if args.quick else 1.0
    began = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="only1mcp-floods-") as tmp, ProcessGroup(
            Path(tmp), env=getattr(args, "environ", None)
        ) as procs:
            report = run_interruptibly(_bench(args, procs, Path(tmp)))
    except KeyboardInterrupt:
        print("interrupted: benchmark servers stopped", file=sys.stderr)
        return 130
    except StartError as exc:
        print(f"error: a server did not start: {exc}", file=sys.stderr)
        print(exc.log_tail, file=sys.stderr)
        return 2
    report["wall_s"] = round(time.perf_counter() - began, 2)
    return publish(report, args.out, args.strict)


async def _bench(args: argparse.Namespace, procs: ProcessGroup, tmp: Path) -> dict[str, Any]:
    from only1mcp.jobs.bench._loadgen import McpSession, new_http_client

    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info(["aiohttp", "uvicorn", "starlette", "only1mcp"])
    upstream_port, proxy_port = free_ports(2, HOST)
    upstream_url, url = f"http://{HOST}:{upstream_port}/mcp", f"http://{HOST}:{proxy_port}/mcp"
    upstream = procs.start("faults", [sys.executable, "-m", "only1mcp.cli", "fixture", "faults",
                                      "--port", str(upstream_port)])
    config = tmp / "only1mcp.toml"
    tokens = ", ".join(f'"{t}"' for t in (GOOD, *TOKENS.values()))
    limits = "\n".join(f"{k} = {v}" for k, v in args.limits.items())
    config.write_text(_CONFIG.format(host=HOST, port=proxy_port, limits=limits, tokens=tokens, upstream=upstream_url))
    proxy = procs.start("proxy", [sys.executable, "-m", "only1mcp.cli", "proxy", "--config", str(config)])
    async with new_http_client(timeout_s=30.0) as http:
        def session() -> McpSession:
            made = McpSession(http, url, client_name="only1mcp-bench-good")
            made._headers["Authorization"] = f"Bearer {GOOD}"
            return made

        async def probe() -> None:
            one = session()
            await one.open()
            await one.call_echo(TOOL, "ready?")
            await one.close()

        await procs.wait_ready(upstream, _port_probe(upstream_port), args.startup_timeout)
        await procs.wait_ready(proxy, probe, args.startup_timeout)
        workers = [session() for _ in range(args.workers)]
        await asyncio.gather(*(w.open() for w in workers))
        await _drive(workers, 1.0 if not args.quick else 0.5, proxy)  # warm-up, not reported
        phases: dict[str, dict[str, Any]] = {}
        for phase in args.phases:
            offender = None
            if phase in KINDS:
                out = tmp / f"{phase}.json"
                offender = procs.start(phase, [
                    sys.executable, "-m", "only1mcp.jobs.bench._offenders", phase, "--url", url,
                    "--token", TOKENS[phase], "--seconds", str(args.duration + _STARTUP_S),
                    "--scale", str(args.scale), "--out", str(out)])
                await asyncio.sleep(_STARTUP_S)
            meters = {"proxy": proxy.cpu_seconds, "upstream": upstream.cpu_seconds, "loadgen": time.process_time}
            if offender is not None:
                meters["offender"] = offender.cpu_seconds
            measured = await _drive(workers, args.duration, proxy, meters)
            if offender is not None:
                measured["offender"] = await _offender_result(procs, offender, tmp / f"{phase}.json",
                                                              args.duration + 30)
            phases[phase] = measured
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
    proxy_alive = proxy.alive()
    peak = peak_rss_kib(proxy.pid) / 1024 if proxy_alive else None
    return _assemble(args, phases, machine, started_at, peak, proxy_alive, proxy)


def _port_probe(port: int) -> Any:
    async def probe() -> None:
        _reader, writer = await asyncio.open_connection(HOST, port)
        writer.close()

    return probe


async def _drive(workers: list[Any], seconds: float, proxy: Managed,
                 meters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Back-to-back echo calls from every worker for ``seconds``, sampling the proxy's memory meanwhile."""
    from only1mcp.jobs.bench._loadgen import drive

    samples: list[int] = []

    async def sample() -> None:
        while True:
            try:
                samples.append(rss_kib(proxy.pid))
            except (OSError, KeyError):
                return
            await asyncio.sleep(0.1)

    sampler = asyncio.ensure_future(sample())
    try:
        measured = await drive(workers, TOOL, seconds, tag="good", meters=meters)
    finally:
        sampler.cancel()
    return {"slice": measured, "rss_max_mib": round(max(samples) / 1024, 1) if samples else None}


async def _offender_result(procs: ProcessGroup, offender: Managed, out: Path, timeout_s: float) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout_s
    while offender.alive() and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
    if offender.alive():
        procs.stop(offender)
        return {"error": f"the offender did not finish within {timeout_s:g} s", "outcomes": {}, "attempts": 0}
    try:
        return orjson.loads(out.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {"error": f"no result: {offender.log_tail(lines=5)}", "outcomes": {}, "attempts": 0}


def _latency(latencies: list[float]) -> dict[str, float | None]:
    ordered = sorted(latencies)

    def ms(q: float) -> float | None:
        value = percentile(ordered, q)
        return None if math.isnan(value) else round(value, 3)

    return {"p50": ms(50), "p90": ms(90), "p99": ms(99), "max": round(ordered[-1], 3) if ordered else None}


def _assemble(args: argparse.Namespace, phases: dict[str, dict[str, Any]], machine: dict[str, Any],
              started_at: datetime.datetime, peak_mib: float | None, proxy_alive: bool,
              proxy: Managed) -> dict[str, Any]:
    base = [x for p in ("unloaded", "unloaded_after") for x in phases[p]["slice"].latencies_ms]
    base_latency = _latency(base)
    results = []
    for phase in args.phases:
        piece = phases[phase]["slice"]
        latency = _latency(piece.latencies_ms)
        p99, unloaded = latency["p99"], base_latency["p99"]
        offender = phases[phase].get("offender")
        results.append({
            "phase": phase, "calls": piece.calls, "errors": piece.errors, "error_samples": piece.error_samples,
            "calls_per_s": round(piece.calls / piece.elapsed_s, 2) if piece.elapsed_s else 0.0,
            "latency_ms": latency,
            "p99_ratio": round(p99 / unloaded, 3) if p99 is not None and unloaded else None,
            "rss_max_mib": phases[phase]["rss_max_mib"], "offender": offender,
            # CPU share of one core per process during the phase: on a small machine they all compete.
            "cpu_pct": {name: round(100.0 * sec / piece.elapsed_s, 1) for name, sec in piece.cpu_s.items()
                        if piece.elapsed_s and not math.isnan(sec)},
        })
    bars = [Bar(f"p99_ratio_{kind}", f"good client p99 during {kind} / unloaded", "<=", RATIO_BAR, "x")
            for kind in KINDS]
    by_phase = {r["phase"]: r for r in results}
    for bar, kind in zip(bars, KINDS):
        row = by_phase.get(kind)
        if row is None:
            bar.judge(None, "not run")
            continue
        note = f"{row['errors']} failed calls of the good client" if row["errors"] else ""
        if row["offender"] and row["offender"].get("error"):
            note = f"offender failed: {row['offender']['error']}"
        bar.judge(row["p99_ratio"], note)
    rss_bar = Bar("proxy_peak_rss", "proxy peak resident memory over the run", "<=", RSS_BAR_MIB, " MiB")
    rss_bar.judge(peak_mib, "" if proxy_alive else f"the proxy died: {proxy.log_tail(lines=3)}")
    bars.append(rss_bar)

    rows: list[list[str] | str] = []
    for row in results:
        lat = row["latency_ms"]
        outcomes = (row["offender"] or {}).get("outcomes") or {}
        got = ", ".join(f"{k} ×{v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])) or "-"
        if row["offender"] and row["offender"].get("error"):
            got = "ERROR " + row["offender"]["error"][:80]
        rows.append([
            row["phase"], str(row["calls"]), "-" if lat["p50"] is None else f"{lat['p50']:.2f}",
            "-" if lat["p99"] is None else f"{lat['p99']:.2f}",
            "-" if row["p99_ratio"] is None else f"{row['p99_ratio']:.2f}x",
            str(row["errors"]), "-" if row["rss_max_mib"] is None else f"{row['rss_max_mib']:.0f}",
            "/".join(str(round(row["cpu_pct"].get(n, 0))) for n in ("proxy", "upstream", "offender")), got,
        ])
    headers = ["phase", "calls", "p50 ms", "p99 ms", "p99/unl", "errors", "RSS MiB", "CPU% prx/up/off",
               "offender got (HTTP/JSON-RPC)"]
    title = (f"floods benchmark: {args.workers} well-behaved sessions calling {TOOL!r} back to back, "
             f"{args.duration:g}s per phase{' (quick)' if args.quick else ''}, unloaded p99 "
             f"{base_latency['p99']} ms (both unloaded phases pooled), {machine['cpus_usable']} CPUs")
    text = "\n".join([title, "", render_table(headers, rows), "", render_bars(bars)])
    return {
        "benchmark": "floods",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {"duration_s": args.duration, "quick": bool(args.quick), "workers": args.workers,
                     "scale": args.scale, "tool": TOOL, "limits": {**args.limits, "others": "defaults"},
                     "phases": args.phases},
        "machine": {**machine, "load_average_end": machine_info()["load_average"]},
        "unloaded_latency_ms": base_latency,
        "proxy_peak_rss_mib": None if peak_mib is None else round(peak_mib, 1),
        "results": results and [{**r, "error_samples": r["error_samples"][:3]} for r in results],
        "bars": [bar.to_json() for bar in bars],
        "_text": text,
    }
