"""``only1mcp bench soak``: the whole stack under steady load for ten minutes; does anything leak or drift?

The stack as ``only1mcp up`` runs it, each part its own process (``_stack.Stack``): the embedded
broker, a private Redis, ``only1mcp worker`` (features to Redis and Parquet, compaction, the
learning loop, the anomaly agent), a fleet of simulated replicas with millisecond tools (so the
proxy, not the upstream, is what limits) and ``only1mcp proxy`` with events on and policy
``learned`` (the weights the worker publishes are applied).

1. **The maximum.** ``only1mcp loadgen`` in closed loop, ``--max-concurrency`` sessions calling
   back to back for ``--max-duration`` s through the proxy, everything else running: its calls/s
   is the stack's maximum on this machine (what the proxy serves with what the load generator,
   the upstream and the worker leave it of the CPU). ``--rate`` skips this.
2. **The soak.** Open loop (Poisson arrivals) at half that maximum for ``--duration`` s, in
   load-generator rounds of ``--round`` s: each round is a process of its own with 16 MCP
   sessions, started ahead and pinned to its start time (``loadgen --start-at``), so rounds follow
   each other without a gap and session set-up and tear-down are soaked too (a round keeps every
   call record in memory: bounded rounds keep the client's own garbage collection out of the
   latencies). Every ``--sample-every`` s: the proxy's and the worker's resident memory (VmRSS),
   open file descriptors (``/proc/<pid>/fd``) and CPU time; from the proxy's ``/metrics`` its
   asyncio tasks (``only1mcp_asyncio_tasks``), client sessions and event counters; and the whole
   machine's CPU (``/proc/stat``: on a shared machine, who else ran explains a latency stretch).
   An idle sample before the first round and one after the last (6 s without calls: idle
   keep-alive connections closed) show what the proxy holds without load.
3. **Accounting.** After the last round the worker gets ``--drain-timeout`` s to bring the
   ``requests`` view (DuckDB over the Parquet store) to every ``tools/call`` the proxy answered
   during the soak: calls with a result, a tool error or a JSON-RPC error, by the load
   generator's own records; rows counted by event time from the soak's start (the calls of step
   1 end before it, with a pause between).

Per window (``--window``, a minute): calls, p50/p99 from the load generator's per-call records,
the samples. The first ``--warmup`` s are warm-up, left out of the growth figures. Bars (the
proxy's): resident memory of the last window at most 10 % above the first window after warm-up
(medians of their samples); open fds (but the clients' connections, which the load generator
keeps or drops) and asyncio tasks not growing: the floor (lowest sample) of the last window at
most a small tolerance above the floor of the first window after warm-up (the floor, because
connections and request tasks come and go with the calls in flight, while a leaked one stays); p99 of the
last window within 20 % of the first window's after warm-up (the warm-up minute holds one-off start-up work —
the worker's first retraining, JIT compilation, connection pools filling — not the drift the bar is for; its
p99 is in the table); every answered call
in ``requests``. ``--quick`` is a short form for the tests (about a minute): its windows are
10 s, the bars are printed but mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import math
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson

from only1mcp.commands.up import UP_WORKER_NICE
from only1mcp.jobs.bench._procs import Managed, StartError, fd_kinds, open_fds, rss_kib, run_interruptibly
from only1mcp.jobs.bench._report import Bar, cell, machine_info, publish, render_bars
from only1mcp.jobs.bench.soak_table import LEGEND, soak_table

__all__ = ["DEFAULT_OUT", "add_arguments", "run"]

DEFAULT_OUT = "bench-results/soak.json"
RSS_GROWTH_BAR = 10.0  # %
P99_DRIFT_BAR = 20.0  # %
# Floors may move by a few without a leak. The fds counted leave out the proxy's clients' connections
# (the load generator's pool keeps every connection it ever opened warm until its round ends: its
# business, not the proxy's); what is left is the listening socket, the event loop's, the broker's
# connections, files, and the connections to the replicas: the proxy's pool reuses the newest and
# the replicas close the others after 5 s idle, so those number the calls in flight in the last
# seconds, which a burst of arrivals or a pause lifts by a few for a few seconds. The lowest of a
# window's samples is the steady set plus a few; a leak of one fd per session, per round or per
# thousand calls would pass 8 within a window or two.
FD_TOLERANCE = 8
# Tasks: the proxy's own (health checks, the event sink, the decision subscriber, …) plus one or
# two per request in flight; the floor of a window may catch a few requests.
TASK_TOLERANCE = 8
SESSIONS = 16  # MCP sessions per load-generator round
CALL_TIMEOUT_S = 5.0
_LAST_SAMPLE_LEAD_S = 0.5  # the last sample is taken this long before the load ends
IDLE_S = 6.0  # without calls for this long, the stack has closed its idle keep-alive connections (5 s)
_QUICK = {"duration": 40.0, "window": 10.0, "warmup": 10.0, "sample_every": 2.0, "round": 20.0,
          "max_duration": 4.0, "drain_timeout": 30.0, "lead": 4.0}
_METRICS = {  # /metrics sample name -> sample key
    "only1mcp_asyncio_tasks": "tasks", "only1mcp_sessions": "sessions",
    "only1mcp_events_emitted_total": "events_emitted", "only1mcp_events_dropped_total": "events_dropped",
    "only1mcp_events_queue_depth": "events_queue", "only1mcp_events_spool_depth": "events_spool",
    "only1mcp_event_loop_stalls_total": "loop_stalls", "only1mcp_event_loop_lag_max_seconds": "loop_lag_max_s",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak (default 600)")
    parser.add_argument("--rate", type=float, default=None,
                        help="calls/s of the soak (default: half the maximum measured first)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window (default 60)")
    parser.add_argument("--warmup", type=float, default=60.0, help="first seconds left out of growth (default 60)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--round", type=float, default=60.0, help="seconds per load-generator process (default 60)")
    parser.add_argument("--max-concurrency", type=int, default=8,
                        help="closed-loop sessions measuring the maximum (default 8, as bench proxy's @c8)")
    parser.add_argument("--max-duration", type=float, default=20.0, help="seconds measuring the maximum (default 20)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds the worker gets to store every event after the load (default 120)")
    parser.add_argument("--lead", type=float, default=8.0,
                        help="seconds a load-generator round is started ahead of its time (default 8)")
    parser.add_argument("--replicas", type=int, default=3, help="simulated replicas (default 3)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds for each part to be ready")
    parser.add_argument("--quick", action="store_true",
                        help="about a minute, for the tests: 40 s in 10 s windows, 10 s warm-up, 4 s maximum")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="run in DIR and keep it: every process's log, the configuration, the Parquet store, "
                             "each load-generator round's per-call records (default: a temporary folder)")
    parser.add_argument("--json", "--out", dest="out", default=DEFAULT_OUT, metavar="OUT",
                        help="JSON results file (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every bar passes")


def _default(name: str) -> Any:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.get_default(name)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        for name, value in _QUICK.items():
            if getattr(args, name) == _default(name):
                setattr(args, name, value)
    if min(args.duration, args.window, args.sample_every, args.round, args.max_duration, args.drain_timeout) <= 0 \
            or args.warmup < 0 or args.lead < 0 or args.max_concurrency < 1 or args.replicas < 1 \
            or (args.rate is not None and args.rate <= 0):
        print("error: durations, --window, --sample-every, --round and --rate must be > 0; --warmup, --lead >= 0",
              file=sys.stderr)
        return 2
    if args.duration < args.warmup + 2 * args.window:
        print("error: --duration must cover --warmup and two windows after it", file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        from only1mcp.jobs.bench._stack import Stack

        with _folder(args.keep) as tmp, Stack(
            Path(tmp), getattr(args, "environ", None), replicas=args.replicas, startup_timeout=args.startup_timeout,
        ) as stack:
            report = run_interruptibly(_bench(args, stack, Path(tmp)))
    except KeyboardInterrupt:
        print("interrupted: the stack stopped", file=sys.stderr)
        return 130
    except StartError as exc:
        print(f"error: a part of the stack did not start: {exc}", file=sys.stderr)
        print(exc.log_tail, file=sys.stderr)
        return 2
    except Exception as exc:  # the broker, Redis, a load generator that failed: say which
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report["wall_s"] = round(time.perf_counter() - began, 2)
    return publish(report, args.out, args.strict)


def _folder(keep: str | None) -> Any:
    if keep is None:
        return tempfile.TemporaryDirectory(prefix="only1mcp-soak-")
    Path(keep).mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(Path(keep).resolve()))


def _log(text: str) -> None:
    print(f"soak: {text}", file=sys.stderr, flush=True)


async def _bench(args: argparse.Namespace, stack: Any, tmp: Path) -> dict[str, Any]:
    from only1mcp.jobs.bench._loadgen import new_http_client

    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info(["aiohttp", "uvicorn", "starlette", "faust-streaming", "aiokafka", "duckdb", "only1mcp"])
    _log("starting broker, Redis, worker, simulated replicas, proxy …")
    began = time.perf_counter()
    await stack.start()
    startup_s = time.perf_counter() - began
    maximum = None
    if args.rate is None:
        _log(f"stack up in {startup_s:.1f}s; measuring the maximum: closed loop, {args.max_concurrency} sessions, "
             f"{args.max_duration:g}s …")
        maximum = await _maximum(args, stack, tmp)
        if not maximum["calls_per_s"]:
            raise RuntimeError(f"the maximum could not be measured: {maximum}")
        rate = round(maximum["calls_per_s"] / 2, 1)
    else:
        rate = args.rate
    # A pause: no call in flight across the soak's start, and connections the maximum left idle
    # closed (the replicas' uvicorn closes an idle keep-alive connection after 5 s, and so does the proxy's).
    await asyncio.sleep(IDLE_S)
    async with new_http_client(timeout_s=5.0) as http:
        sampler = _Sampler(http, stack, time.time())
        before = await sampler.sample()
        cutoff = time.time()
        t0 = sampler.t0 = cutoff + args.lead
        before["t"] = round(before["t"] - args.lead, 3)
        _log(f"soak: {rate:g} calls/s for {args.duration:g}s from {datetime.datetime.fromtimestamp(t0):%H:%M:%S} …")
        # The last sample a moment before the load ends: at its very end the last round may already have
        # closed its sessions, and the last window would show an idle proxy it never was under load.
        sampling = asyncio.create_task(sampler.every(args.sample_every, t0 + args.duration - _LAST_SAMPLE_LEAD_S))
        try:
            rounds = await _soak(args, stack, tmp, rate, t0)
            await sampling  # ended with the soak's last second
        finally:
            sampling.cancel()
        load_ended = time.monotonic()
        records = _records(rounds, t0)
        answered = sum(1 for r in records if r["answered"])
        _log(f"{len(records)} calls, {answered} answered; waiting for the worker to store them …")
        events = await _drain(args, stack, cutoff, answered, maximum)
        await asyncio.sleep(max(0.0, load_ended + IDLE_S - time.monotonic()))
        after = await sampler.sample()  # idle again: sessions closed, idle connections too
    return _assemble(args, stack, machine, started_at, startup_s, maximum, rate, t0, rounds, records,
                     sampler.samples, before, after, events)


async def _maximum(args: argparse.Namespace, stack: Any, tmp: Path) -> dict[str, Any]:
    out = tmp / "maximum.jsonl"
    argv = [sys.executable, "-m", "only1mcp.cli", "loadgen", "--url", stack.url, "--concurrency",
            str(args.max_concurrency), "--duration", f"{args.max_duration:g}", "--timeout", f"{CALL_TIMEOUT_S:g}",
            "--seed", "soak-max", "--out", str(out)]
    proc = stack.procs.start("loadgen-max", argv)
    await _wait_exit(stack, proc, args.max_duration + 60.0)
    summary = orjson.loads(Path(f"{out}.summary.json").read_bytes())
    records = [orjson.loads(line) for line in out.read_bytes().splitlines() if line.strip()]
    from only1mcp.jobs.sim.loadgen import answered

    served = sum(1 for r in records if answered(r))  # tool errors cost the proxy as much as results
    rate = (summary["calls_per_s"] or 0.0) * served / summary["count"] if summary["count"] else 0.0
    return {"concurrency": args.max_concurrency, "duration_s": args.max_duration, "calls": summary["count"],
            "ok": summary["ok"], "answered": served, "calls_per_s": round(rate, 1),
            "latency_ms": summary["latency_ms"], "failures": summary["failures"]}


async def _wait_exit(stack: Any, proc: Managed, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while proc.alive():
        if time.monotonic() > deadline:
            stack.procs.stop(proc)
            raise RuntimeError(f"{proc.name} did not finish within {timeout_s:g}s: {proc.log_tail(5)}")
        await asyncio.sleep(0.2)
    code = proc.popen.returncode
    stack.procs.stop(proc)  # forget it, close its log
    if code != 0:
        raise RuntimeError(f"{proc.name} exited with code {code}: {proc.log_tail(10)}")


async def _soak(args: argparse.Namespace, stack: Any, tmp: Path, rate: float, t0: float) -> list[dict[str, Any]]:
    """Start every round ``lead`` s before its time; wait for all of them."""
    rounds: list[dict[str, Any]] = []
    waits = []
    count = math.ceil(args.duration / args.round - 1e-9)
    for k in range(count):
        start_at = t0 + k * args.round
        seconds = min(args.round, args.duration - k * args.round)
        await asyncio.sleep(max(0.0, start_at - args.lead - time.time()))
        if not stack.proxy.alive():
            raise RuntimeError(f"the proxy exited during the soak: {stack.proxy.log_tail(10)}")
        out = tmp / f"round-{k}.jsonl"
        argv = [sys.executable, "-m", "only1mcp.cli", "loadgen", "--url", stack.url, "--rate", f"{rate:g}",
                "--sessions", str(SESSIONS), "--duration", f"{seconds:g}", "--timeout", f"{CALL_TIMEOUT_S:g}",
                "--seed", f"soak-{k}", "--start-at", f"{start_at:.3f}", "--out", str(out)]
        launched = time.time()
        proc = stack.procs.start(f"loadgen-{k}", argv)
        rounds.append({"round": k, "start_at": start_at, "duration_s": seconds, "launched_ahead_s":
                       round(start_at - launched, 2), "out": out})
        waits.append(asyncio.create_task(_wait_exit(stack, proc, start_at + seconds - time.time() + 60.0)))
    await asyncio.gather(*waits)
    return rounds


def _records(rounds: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    """Every call of the soak: sent at ``start`` s since the soak's start, latency, ok, answered by the proxy."""
    from only1mcp.jobs.sim.loadgen import answered

    records = []
    for one in rounds:
        offset = one["start_at"] - t0
        count = 0
        for line in Path(one["out"]).read_bytes().splitlines():
            if line.strip():
                r = orjson.loads(line)
                records.append({"start": offset + r["start"], "latency_ms": r["latency_ms"], "ok": r["ok"],
                                "error": r["error"], "answered": answered(r)})
                count += 1
        one["calls"] = count
        one["out"] = str(one["out"])
    records.sort(key=lambda r: r["start"])
    return records


def _host_ticks() -> dict[str, int] | None:
    """The whole machine's CPU time so far (Linux /proc/stat, clock ticks): busy and total. The stack
    shares the machine; when it is saturated, who else ran explains the latencies."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # idle and iowait apart; steal: time a hypervisor ran someone else while this machine wanted the CPU
    return {"busy": sum(values) - values[3] - values[4], "total": sum(values),
            "steal": values[7] if len(values) > 7 else 0}


class _Sampler:
    """The proxy's and the worker's resources now, and the proxy's /metrics figures."""

    def __init__(self, http: Any, stack: Any, t0: float) -> None:
        self.http, self.stack, self.t0 = http, stack, t0
        self.samples: list[dict[str, Any]] = []

    async def every(self, seconds: float, until: float) -> None:
        """A sample at t0, every ``seconds`` after, and one at ``until``."""
        due = [self.t0 + k * seconds for k in range(int((until - self.t0) / seconds + 1e-9) + 1)]
        if until - due[-1] > 1e-3:
            due.append(until)
        for when in due:
            await asyncio.sleep(max(0.0, when - time.time()))
            self.samples.append(await self.sample())

    async def sample(self) -> dict[str, Any]:
        now = time.time()
        one: dict[str, Any] = {"t": round(now - self.t0, 3), "host": _host_ticks()}
        for name in ("proxy", "worker"):
            proc: Managed = getattr(self.stack, name)
            try:
                one[name] = {"rss_kib": rss_kib(proc.pid), "fds": open_fds(proc.pid),
                             "cpu_s": round(proc.cpu_seconds(), 3)}
                if name == "proxy":  # its clients' connections apart: the load generator keeps those or not
                    kinds = fd_kinds(proc.pid, self.stack.port)
                    one[name].update(client_conns=kinds["accepted"], own_fds=one[name]["fds"] - kinds["accepted"],
                                     upstream_conns=kinds["tcp"] - kinds["accepted"])
            except (OSError, KeyError):  # it is gone
                one[name] = None
        scraped = await self._scrape()
        if one["proxy"] is not None:
            one["proxy"].update({key: scraped.get(key) for key in _METRICS.values()})
        return one

    async def _scrape(self) -> dict[str, float]:
        try:
            async with self.http.get(f"{self.stack.base}/metrics") as resp:
                text = await resp.text()
        except Exception:
            return {}
        found: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in _METRICS:
                found[_METRICS[name]] = float(value)
        return found


async def _drain(args: argparse.Namespace, stack: Any, cutoff: float, answered: int,
                 maximum: dict[str, Any] | None) -> dict[str, Any]:
    """Wait until the requests view holds every answered call of the soak (or the deadline)."""
    began = time.perf_counter()
    deadline = began + args.drain_timeout
    counts = await asyncio.to_thread(_stored, stack.data_dir, cutoff)
    while counts["distinct"] < answered and time.perf_counter() < deadline:
        if not stack.worker.alive():
            break
        await asyncio.sleep(1.0)
        counts = await asyncio.to_thread(_stored, stack.data_dir, cutoff)
    drained_s = time.perf_counter() - began
    await asyncio.sleep(2.5)  # two more flushes (1 s each): nothing more may arrive
    counts = await asyncio.to_thread(_stored, stack.data_dir, cutoff)
    out = {"answered": answered, **counts, "drain_s": round(drained_s, 2), "drain_timeout_s": args.drain_timeout,
           "cutoff_ts": round(cutoff, 3), "worker_alive": stack.worker.alive()}
    if maximum is not None:  # the maximum's calls, for information: those before the cutoff
        out["maximum_phase"] = {"answered": maximum["answered"], "stored": counts["before_cutoff"]}
    return out


def _stored(data_dir: Path, cutoff: float) -> dict[str, int]:
    from only1mcp.feature_store.offline.duckdb import query

    if not any(Path(data_dir).glob("requests/**/*.parquet")):
        return {"rows": 0, "distinct": 0, "raw_rows": 0, "before_cutoff": 0}
    sql = ("SELECT (SELECT count(*) FROM requests WHERE method = 'tools/call' AND ts >= ?), "
           "(SELECT count(DISTINCT event_id) FROM requests WHERE method = 'tools/call' AND ts >= ?), "
           "(SELECT count(*) FROM requests_raw WHERE method = 'tools/call' AND ts >= ?), "
           "(SELECT count(*) FROM requests WHERE method = 'tools/call' AND ts < ?)")
    rows = query(data_dir, sql, [cutoff] * 4)[1][0]
    return dict(zip(("rows", "distinct", "raw_rows", "before_cutoff"), (int(x) for x in rows)))


# -- the report ------------------------------------------------------------------------------


def _windows(args: argparse.Namespace, records: list[dict[str, Any]],
             samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from only1mcp.jobs.sim.loadgen import summarize_calls

    count = int(args.duration // args.window + 1e-9)
    calls: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for r in records:
        calls[min(count - 1, max(0, int(r["start"] // args.window)))].append(r)
    held: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for s in samples:
        held[min(count - 1, max(0, int(s["t"] // args.window)))].append(s)
    windows = []
    for i in range(count):
        start, end = i * args.window, (i + 1) * args.window if i < count - 1 else args.duration
        summary = summarize_calls(calls[i], CALL_TIMEOUT_S)
        row: dict[str, Any] = {
            "window": i, "start_s": start, "end_s": end, "warmup": start < args.warmup,
            "calls": summary["count"], "calls_per_s": round(summary["count"] / (end - start), 1),
            "not_ok": summary["count"] - summary["ok"], "unanswered": sum(1 for r in calls[i] if not r["answered"]),
            "latency_ms": summary["latency_ms"], "samples": len(held[i]),
        }
        for name in ("proxy", "worker"):
            row[name] = _resources([(s["t"], s[name]) for s in held[i] if s.get(name)])
        ticks = [s["host"] for s in held[i] if s.get("host")]
        spans = len(ticks) > 1 and ticks[-1]["total"] > ticks[0]["total"]
        for key, field in (("host_cpu_pct", "busy"), ("host_steal_pct", "steal")):
            row[key] = (round(100 * (os.cpu_count() or 1) * (ticks[-1][field] - ticks[0][field])
                              / (ticks[-1]["total"] - ticks[0]["total"]), 1) if spans else None)
        row["loop_stalls"], row["loop_lag_max_ms"] = _loop(samples, start, end)
        windows.append(row)
    return windows


def _loop(samples: list[dict[str, Any]], start: float, end: float) -> tuple[int | None, float | None]:
    """The proxy's event-loop stalls in [start, end) (its counter at the window's last sample minus at
    the sample before the window) and the longest lateness its samples saw (ms): a p99 that jumps with
    stalls is the proxy's own loop (or the machine descheduling it), one that jumps without is not."""
    seen = [(s["t"], s["proxy"]) for s in samples
            if s.get("proxy") and s["proxy"].get("loop_stalls") is not None]
    before = [p["loop_stalls"] for t, p in seen if t < start]
    inside = [p for t, p in seen if start <= t < end]
    if not inside:
        return None, None
    base = before[-1] if before else inside[0]["loop_stalls"]
    lags = [p["loop_lag_max_s"] for p in inside if p.get("loop_lag_max_s") is not None]
    return int(inside[-1]["loop_stalls"] - base), round(1000 * max(lags), 1) if lags else None


def _resources(got: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """min, max and median of each figure over one window's samples; CPU % of one core between
    the window's first and last sample."""
    if not got:
        return {}

    def span(key: str) -> dict[str, float] | None:
        values = [g[key] for _, g in got if g.get(key) is not None]
        return {"min": min(values), "max": max(values), "median": statistics.median(values)} if values else None

    out: dict[str, Any] = {key: span(key) for key in ("rss_kib", "fds", "own_fds", "client_conns", "upstream_conns",
                                                      "tasks", "sessions", "events_queue")}
    (t_first, first), (t_last, last) = got[0], got[-1]
    out["cpu_pct"] = round(100 * (last["cpu_s"] - first["cpu_s"]) / (t_last - t_first), 1) \
        if t_last > t_first else None
    return out


def _growth(windows: list[dict[str, Any]], key: str, stat: str) -> tuple[float, float] | None:
    """``stat`` of the proxy's ``key`` in the first window after warm-up and in the last window."""
    steady = [w for w in windows if not w["warmup"]]
    first, last = (steady[0]["proxy"] or {}).get(key), (steady[-1]["proxy"] or {}).get(key)
    return None if first is None or last is None else (first[stat], last[stat])


def _bars(windows: list[dict[str, Any]], events: dict[str, Any]) -> list[Bar]:
    bars = [
        Bar("proxy_rss_growth", "proxy RSS growth after warm-up (last window vs first, medians)", "<=",
            RSS_GROWTH_BAR, "%"),
        Bar("proxy_fds_growth", "proxy open fds but its clients' connections, growth after warm-up (floors)", "<=",
            FD_TOLERANCE, ""),
        Bar("proxy_tasks_growth", "proxy asyncio tasks growth after warm-up (floors)", "<=", TASK_TOLERANCE, ""),
        Bar("p99_drift", "client p99, last window vs first after warm-up", "<=", P99_DRIFT_BAR, "%"),
        Bar("events_accounted", "answered calls found in the requests view", ">=", 100.0, "%"),
    ]
    rss = _growth(windows, "rss_kib", "median")
    bars[0].judge(100.0 * (rss[1] - rss[0]) / rss[0] if rss and rss[0] else None,
                  f"{rss[0] / 1024:.1f} → {rss[1] / 1024:.1f} MiB" if rss else "not sampled")
    for bar, key in ((bars[1], "own_fds"), (bars[2], "tasks")):
        got = _growth(windows, key, "min")
        bar.judge(got[1] - got[0] if got else None, f"floor {got[0]:g} → {got[1]:g}" if got else "not sampled")
    steady = [w for w in windows if not w["warmup"]] or windows
    first, last = steady[0]["latency_ms"]["p99"], steady[-1]["latency_ms"]["p99"]
    bars[3].judge(100.0 * abs(last / first - 1.0) if first and last else None,
                  f"{first:.2f} → {last:.2f} ms" if first and last else "no calls")
    answered, stored = events["answered"], events["distinct"]
    note = f"{stored:,} of {answered:,}"
    if stored > answered:
        note += f"; {stored - answered} more stored than answered (calls the client gave up on)"
    if events["rows"] != events["distinct"]:
        note += f"; {events['rows'] - events['distinct']} duplicate rows in the view"
    bars[4].judge(100.0 * min(stored, answered) / answered if answered else None, note)
    return bars


def _assemble(args: argparse.Namespace, stack: Any, machine: dict[str, Any], started_at: datetime.datetime,
              startup_s: float, maximum: dict[str, Any] | None, rate: float, t0: float,
              rounds: list[dict[str, Any]], records: list[dict[str, Any]], samples: list[dict[str, Any]],
              before: dict[str, Any], after: dict[str, Any], events: dict[str, Any]) -> dict[str, Any]:
    windows = _windows(args, records, samples)
    bars = _bars(windows, events)
    first, last = samples[0].get("proxy") or {}, samples[-1].get("proxy") or {}
    emitted = dropped = None
    if first.get("events_emitted") is not None and last.get("events_emitted") is not None:
        emitted = int(last["events_emitted"] - first["events_emitted"])
        dropped = int((last.get("events_dropped") or 0) - (first.get("events_dropped") or 0))
    events = {**events, "proxy_events_emitted_during": emitted, "proxy_events_dropped_during": dropped,
              "calls": len(records)}
    source = (f"half the maximum measured first, {maximum['calls_per_s']:g} calls/s in closed loop with "
              f"{maximum['concurrency']} sessions for {maximum['duration_s']:g}s" if maximum else "--rate")
    title = (f"soak benchmark: {rate:g} calls/s for {args.duration:g}s{' (quick)' if args.quick else ''}: {source}\n"
             f"open loop in {args.round:g}s load-generator rounds of {SESSIONS} sessions; {args.replicas} simulated "
             f"replicas, policy {stack.policy}, events → worker → Redis + Parquet (the broker, "
             f"the worker and Redis {UP_WORKER_NICE} steps nicer, autogroups too, as `up` runs them); "
             f"{machine['cpus_usable']} CPUs, "
             f"Python {machine['python_version']}")
    accounting = (f"events: {events['answered']:,} calls answered during the soak ({len(records):,} sent), "
                  f"{events['distinct']:,} tools/call rows in `requests` ({events['raw_rows']:,} raw rows) "
                  f"{events['drain_s']:g}s after the load; the proxy emitted "
                  f"{cell(emitted, ',')} events meanwhile (all methods), dropped {cell(dropped, ',')}")
    text = "\n".join([title, "", soak_table(windows, before, after), textwrap.fill(LEGEND, 118), "",
                      textwrap.fill(accounting, 118), "", render_bars(bars)])
    for one in rounds:
        one.pop("out", None)
    return {
        "benchmark": "soak",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {"duration_s": args.duration, "rate": rate, "rate_source": "maximum/2" if maximum else "--rate",
                     "window_s": args.window, "warmup_s": args.warmup, "sample_every_s": args.sample_every,
                     "round_s": args.round, "sessions_per_round": SESSIONS, "call_timeout_s": CALL_TIMEOUT_S,
                     "replicas": args.replicas, "policy": stack.policy, "profile": stack.profile,
                     "quick": bool(args.quick), "fd_tolerance": FD_TOLERANCE, "task_tolerance": TASK_TOLERANCE},
        "machine": {**machine, "load_average_end": machine_info()["load_average"]},
        "startup_s": round(startup_s, 2),
        "maximum": maximum,
        "soak_started_at": datetime.datetime.fromtimestamp(t0, datetime.timezone.utc).isoformat(),
        "rounds": rounds,
        "windows": windows,
        "samples": samples,
        "before": before,
        "after": after,
        "events": events,
        "bars": [bar.to_json() for bar in bars],
        "_text": text,
    }
