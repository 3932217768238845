"""``only1mcp bench prefetch``: what prefetch costs the proxy (issue 11's costs).

- **Per-call prediction work**: what the proxy does for prefetch after every client tools/call, on the
  shipped agent traces' real results (``jobs/bench/traces``: ids flowing from results into arguments):
  the call path's hand-over (``observe``: one append) and the learning that runs once the answer is
  out (``learn``: the argument model's ``learn_one`` and the session memory's ``observe``, with the
  bounded result parse). Timed call by call in the thread's CPU time (``thread_time_ns``: work, so the
  moments another process of a shared machine holds the core do not count; the clock's own ~0.4 µs
  are included and shown), in one process, no I/O.
- **The proxy with prefetch on and nothing to prefetch**: ``only1mcp bench proxy --prefetch`` (direct
  and only1mcp arms, concurrency 8): the echo tool declared safe and cached, so every call is learned
  from in full (argument model and memory) and stored; its texts never repeat and no decision arrives,
  so nothing is prefetched nor answered from the cache. Then the same without ``--prefetch``, for what
  prefetch itself costs.

Bars: the learning's p99 < 100 µs; throughput ≥ 75 % of direct.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._report import Bar, machine_info, percentile, render_bars, render_table, write_json

__all__ = ["add_arguments", "run", "DEFAULT_OUT", "measure_learning", "measure_proxy"]

DEFAULT_OUT = "bench-results/prefetch.json"
TRACES = Path(__file__).resolve().parent / "traces"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer calls and a short proxy run (for tests)")
    parser.add_argument("--no-proxy", action="store_true", help="skip the bench proxy run with prefetch on")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every bar passes")


def _bars() -> list[Bar]:
    return [Bar("learn_p99_us", "prefetch learning per call, p99 (bar: < 100 µs)", "<=", 100.0, " µs"),
            Bar("proxy_prefetch_vs_direct", "bench proxy, [prefetch] enabled, vs direct @c8", ">=", 75.0, "%")]


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    learning = measure_learning(2 if args.quick else 10)
    proxy = None if args.no_proxy else measure_proxy(args)
    bars = _bars()
    bars[0].judge(learning["learn"]["p99_us"])
    bars[1].judge(proxy.get("prefetch_pct_of_direct") if proxy else None,
                  "skipped (--no-proxy)" if proxy is None else proxy.get("error", ""))
    report = {"machine": machine_info(["only1mcp"]), "learning": learning, "proxy": proxy,
              "bars": [b.to_json() for b in bars], "wall_s": round(time.perf_counter() - began, 2)}
    write_json(args.out, report)
    print(_render(report))
    print()
    print(render_bars(bars))
    print(f"\nwrote {args.out}")
    return 1 if args.strict and not all(b.status == "PASS" for b in bars) else 0


def _calls() -> list[tuple[str, str, str, dict[str, Any], dict[str, Any] | None]]:
    """(session, client, tool, arguments, MCP result) of the shipped traces, in time order per trace."""
    from only1mcp.jobs.sim.traces import read_trace

    calls = []
    for path in sorted(TRACES.glob("*.jsonl")):
        for call in read_trace(path):
            result = ({"content": [{"type": "text", "text": call.result}]} if call.result is not None else None)
            calls.append((f"{path.stem}/{call.session}", call.client or "", call.tool, call.args, result))
    return calls


def measure_learning(passes: int) -> dict[str, Any]:
    """The proxy's per-call prefetch work over the traces, ``passes`` times (sessions start afresh each):
    the hand-over on the call path, the learning of a call whose tool could be prefetched (argument model
    + memory: every call of the traces counted as such, the worst case) and of one whose tool could not
    (memory only: the proxy teaches the argument model only prefetchable tools)."""
    import asyncio

    from only1mcp.prefetch import PrefetchSettings
    from only1mcp.proxy.prefetch.learn import SessionLearner

    class _Session:  # what the learner reads of a ClientSession
        __slots__ = ("id", "ended", "client")

        def __init__(self, sid: str, client: str) -> None:
            self.id, self.ended, self.client = sid, False, client

    calls = _calls()
    samples: dict[str, list[int]] = {"handover": [], "learn": [], "memory_only": [], "timer": []}

    async def measure() -> None:
        clock = time.thread_time_ns
        for _ in range(len(calls)):  # what the clock itself costs, included in every row
            started = clock()
            samples["timer"].append(clock() - started)
        for n in range(passes):
            for mode in ("learn", "memory_only"):
                learner = SessionLearner(PrefetchSettings(enabled=True), lambda sid: sid)
                if mode == "memory_only":
                    learner.teaches = lambda tool: False
                sessions: dict[str, Any] = {}
                timed = samples[mode]
                for session_name, client, tool, args, result in calls:
                    session = sessions.get(session_name)
                    if session is None:
                        session = sessions[session_name] = _Session(f"{n}/{session_name}", client)
                    started = clock()
                    learner.observe(session, tool, args, result)  # type: ignore[arg-type]
                    samples["handover"].append(clock() - started)
                    pending, learner._pending = learner._pending, []  # what drain() would take, timed per call
                    for item in pending:
                        started = clock()
                        learner.learn(*item)
                        timed.append(clock() - started)
                if learner._armed is not None:
                    learner._armed.cancel()

    asyncio.run(measure())
    return {"calls": len(calls), "passes": passes, "traces": sorted(p.name for p in TRACES.glob("*.jsonl")),
            **{name: _stats_us(values) for name, values in samples.items()}}


def _stats_us(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {"n": len(ordered), "p50_us": round(percentile(ordered, 50) / 1e3, 2),
            "p99_us": round(percentile(ordered, 99) / 1e3, 2), "max_us": round(ordered[-1] / 1e3, 2)}


def measure_proxy(args: argparse.Namespace) -> dict[str, Any]:
    """``only1mcp bench proxy`` (direct and only1mcp arms, c8) twice, run as subprocesses: with
    ``--prefetch`` (the bar), and without (the same proxy with prefetch off, for what prefetch itself costs)."""
    out: dict[str, Any] = {}
    for label, extra in (("prefetch", ["--prefetch"]), ("plain", [])):
        cell = _bench_proxy(args, extra)
        if "error" in cell:
            return {**out, "error": f"{label}: {cell['error']}", "detail": cell}
        out.update({f"{label}_{key}": value for key, value in cell.items()})
    return out


def _bench_proxy(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    import orjson

    with tempfile.TemporaryDirectory(prefix="only1mcp-bench-prefetch-") as tmp:
        out = Path(tmp) / "proxy.json"
        duration = ["--duration", "2", "--rounds", "2", "--warmup", "0.5"] if args.quick else []
        argv = [sys.executable, "-m", "only1mcp.cli", "bench", "proxy", "--arms", "direct", "only1mcp",
                "--concurrency", "8", *extra, "--out", str(out), *duration]
        done = subprocess.run(argv, capture_output=True, text=True, env=getattr(args, "environ", None))
        if done.returncode != 0 or not out.exists():
            return {"error": f"bench proxy exited {done.returncode}", "stderr": done.stderr[-2000:]}
        report = orjson.loads(out.read_bytes())
    cells = {(c["arm"], c["concurrency"]): c for c in report.get("results", [])}
    direct, proxied = cells.get(("direct", 8)), cells.get(("only1mcp", 8))
    if not direct or not proxied:
        return {"error": "bench proxy reported no c8 cells"}
    pct = 100.0 * proxied["calls_per_s"] / direct["calls_per_s"] if direct["calls_per_s"] else None
    return {"direct_calls_per_s": direct["calls_per_s"], "calls_per_s": proxied["calls_per_s"],
            "pct_of_direct": round(pct, 2) if pct is not None else None,
            "p50_ms": proxied["latency_ms"]["p50"], "direct_p50_ms": direct["latency_ms"]["p50"]}


def _render(report: dict[str, Any]) -> str:
    learning, proxy = report["learning"], report["proxy"]
    handover, learn = learning["handover"], learning["learn"]
    rows = [["hand-over on the call path", f"{handover['p50_us']:.2f} µs", f"{handover['p99_us']:.2f} µs",
             "observe(): one append; the learning runs ~1 ms later, after the answer is written"],
            ["learning per call", f"{learn['p50_us']:.2f} µs", f"{learn['p99_us']:.2f} µs",
             f"prefetchable tool: learn_one + memory, {learning['calls']} trace calls × {learning['passes']}"],
            ["learning per call, memory only", f"{learning['memory_only']['p50_us']:.2f} µs",
             f"{learning['memory_only']['p99_us']:.2f} µs", "a tool that cannot be prefetched: memory only"]]
    rows.append(["timer overhead", f"{learning['timer']['p50_us']:.2f} µs", f"{learning['timer']['p99_us']:.2f} µs",
                 "thread CPU time clock, included in the rows above"])
    if proxy and "error" not in proxy:
        rows.append(["bench proxy @c8, prefetch on", f"{proxy['prefetch_calls_per_s']:.1f}/s",
                     f"{proxy['prefetch_pct_of_direct']:.1f} %",
                     f"vs direct {proxy['prefetch_direct_calls_per_s']:.1f}/s; every call learned in full, none "
                     f"prefetched"])
        rows.append(["bench proxy @c8, prefetch off", f"{proxy['plain_calls_per_s']:.1f}/s",
                     f"{proxy['plain_pct_of_direct']:.1f} %",
                     f"vs direct {proxy['plain_direct_calls_per_s']:.1f}/s; the same proxy without [prefetch]"])
    elif proxy:
        rows.append(["bench proxy @c8", "-", "-", proxy["error"]])
    return render_table(["measurement", "p50 / value", "p99 / value", "detail"], rows)
