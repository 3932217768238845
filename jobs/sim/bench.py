"""``only1mcp bench routing``: routing policies against simulated fleets, and a clairvoyant oracle.

For each scenario (``scenarios.py``) one open-loop schedule is drawn from the
seed (Poisson arrivals at ~65 % of the fleet's capacity, Markov-chain sessions,
Zipf keys); every policy then gets the very same schedule, through a fresh
proxy (``only1mcp proxy``, one server holding every replica, ``policy = NAME``,
``namespace = ""``) in front of fresh sim-server replicas, so queues and fault
clocks start clean and only the policy differs. The oracle row replays the same
schedule in the model (``oracle.py``) with perfect foresight; the ``oracle_informed``
row routes it as a perfect latency model would (profiles and queues known, not the
draws): the most any learned policy can reach.

A policy the proxy does not know yet (it exits at start-up) is reported as
"not available" and the run goes on. Results: a table per scenario, JSON and a
PNG (``report.py``), and the bar: p2c_ewma p99 <= 0.5 x round_robin p99 when one
replica is slow.

``--with-learned`` runs the learning loop too (``learned.py``): rows ``round_robin``,
``p2c_ewma``, ``tool_ewma`` (policy learned on the specialisation learner's weights),
``learned`` (policy learned with a trained latency model live) and ``oracle``, over the
classic three scenarios plus ``drift`` and ``load-sensitive``; the same measured schedule
for every row, and the same warm-up schedule (seed + 1000) for both learning rows. For
``drift`` every row's rolling p95 over time goes into the JSON and ``routing-drift.png``,
with the time the learned row takes to come back within 20 % of the oracle's (and of the
informed oracle's) after the flip.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._procs import Managed, ProcessGroup, StartError, free_ports, run_interruptibly
from only1mcp.jobs.bench._report import machine_info
from only1mcp.jobs.sim.scenarios import DEFAULT_SCENARIOS, LEARNED_SCENARIOS, SCENARIOS, Scenario, build_scenario

__all__ = ["POLICIES", "DEFAULT_OUT", "add_arguments", "run"]

POLICIES = ("round_robin", "random", "least_inflight", "p2c_ewma", "consistent_hash")
DEFAULT_OUT = "bench-results"
HOST = "127.0.0.1"
# (duration s, sessions): full keeps 15 runs under ~5 min on 2 cores, quick under a minute.
_FULL, _QUICK = (12.0, 32), (1.0, 16)
# --with-learned: (duration s, drift duration s, warm-up s, sessions); full ~25 min on 2 cores,
# quick (one scenario) one to two minutes. Drift flips a third of the way in (>= 60 s after it in full).
_LEARNED_FULL, _LEARNED_QUICK = (20.0, 120.0, 30.0, 32), (3.0, 30.0, 15.0, 16)
CLASSIC_WITH_LEARNED = ("round_robin", "p2c_ewma")
BUCKET_S = 5.0  # rolling p95 buckets (drift)
_FAULT_LEAD_S = 3.0  # start-up budget before a faulty fleet's clock starts

_PROXY_CONFIG = """\
[proxy]
listen = "{host}:{port}"
call_timeout = {timeout}
log_level = "warning"

[[servers]]
name = "sim"
namespace = ""
policy = "{policy}"
timeout = {timeout}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute in all), for tests")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for routing.json and routing.png (default %(default)s)")
    parser.add_argument("--seed", default="1", help="seed of the schedule and of the replicas' draws (default 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of load per run (default 12, quick 1; --with-learned 20, quick 3)")
    parser.add_argument("--sessions", type=int, default=None, help="client MCP sessions (default 32, quick 16)")
    parser.add_argument("--utilisation", type=float, default=0.65, help="offered load / fleet capacity (default 0.65)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds: a slower call is a failure (default 1)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=None, metavar="S",
                        help="of: %(choices)s (default: the first three; with --with-learned the first three, "
                             "drift and load-sensitive)")
    parser.add_argument("--policies", nargs="*", default=None, metavar="P",
                        help=f"classic policies (default: {' '.join(POLICIES)}; with --with-learned "
                             f"{' '.join(CLASSIC_WITH_LEARNED)})")
    learned = parser.add_argument_group("the learning loop (--with-learned)")
    learned.add_argument("--with-learned", action="store_true",
                         help="add rows tool_ewma and learned: proxy, broker, worker and weights running")
    learned.add_argument("--learning-rows", nargs="*", choices=("tool_ewma", "learned"), default=None,
                         metavar="ROW", help="which learning rows (default: tool_ewma learned)")
    learned.add_argument("--work-dir", default=None,
                         help="keep every run's folder (configs, logs, Parquet data, models) here, not in a temp dir")
    learned.add_argument("--drift-duration", type=float, default=None,
                         help="seconds of load in the drift scenario (default 120, quick 30; flip at a third)")
    learned.add_argument("--warmup", type=float, default=None,
                         help="seconds of warm-up traffic before a learning row is measured (default 30, quick 15)")
    learned.add_argument("--train-timeout", type=float, default=300.0, help="seconds for `train latency`")
    learned.add_argument("--weights-timeout", type=float, default=60.0,
                         help="seconds to wait for the wanted weights to be published and applied (default 60)")
    learned.add_argument("--model-coverage", type=float, default=0.9,
                         help="wait until the latency model publishes for the tools of this share of the traffic "
                              "(default 0.9)")
    learned.add_argument("--coverage-timeout", type=float, default=None,
                         help="... but at most this many seconds after its first weights (default 45, quick 15)")
    learned.add_argument("--min-samples", type=int, default=10, help="[learning] min_samples (default 10)")
    learned.add_argument("--min-train-calls", type=int, default=None,
                         help="[learning] min_train_calls and `train latency --min-rows` (default: half the "
                              "warm-up's calls, at least 50)")
    learned.add_argument("--valid-for", type=float, default=10.0, help="[learning] valid_for seconds (default 10)")
    learned.add_argument("--exploration", type=float, default=None, help="[[servers]] exploration (default: its own)")
    learned.add_argument("--temperature", type=float, default=None, help="[[servers]] temperature (default: its own)")
    parser.add_argument("--startup-timeout", type=float, default=30.0, help="seconds for a server to become ready")
    parser.add_argument("--keep-calls", action="store_true", help="also write every run's calls as JSONL under --out")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless the bar passes")


def run(args: argparse.Namespace) -> int:
    with_learned = getattr(args, "with_learned", False)
    if with_learned:
        full_duration, drift_duration, warmup, full_sessions = _LEARNED_QUICK if args.quick else _LEARNED_FULL
        args.drift_duration = args.drift_duration or drift_duration
        args.warmup = args.warmup or warmup
        args.coverage_timeout = args.coverage_timeout or (15.0 if args.quick else 45.0)
    else:
        (full_duration, full_sessions), args.drift_duration = (_QUICK if args.quick else _FULL), None
        args.warmup = None
    args.duration = args.duration or full_duration
    args.sessions = args.sessions or full_sessions
    args.scenarios = args.scenarios or list(LEARNED_SCENARIOS if with_learned else DEFAULT_SCENARIOS)
    if args.policies is None:
        args.policies = list(CLASSIC_WITH_LEARNED if with_learned else POLICIES)
    if args.learning_rows is None:
        args.learning_rows = ["tool_ewma", "learned"] if with_learned else []
    if with_learned and (args.drift_duration <= 0 or args.warmup <= 0):
        print("error: --drift-duration and --warmup must be > 0", file=sys.stderr)
        return 2
    if args.duration <= 0 or args.sessions < 1 or args.timeout <= 0 or not 0 < args.utilisation < 2:
        print("error: --duration, --timeout > 0, --sessions >= 1, 0 < --utilisation < 2", file=sys.stderr)
        return 2
    args.seed = int(args.seed) if str(args.seed).lstrip("-").isdigit() else args.seed
    from only1mcp.jobs.sim import report as rep

    began = time.perf_counter()
    try:
        if getattr(args, "work_dir", None):
            work = Path(args.work_dir).resolve() / time.strftime("routing-%Y%m%dT%H%M%S")
            work.mkdir(parents=True)
            result = run_interruptibly(_bench(args, work), _uvloop())
        else:
            with tempfile.TemporaryDirectory(prefix="only1mcp-routing-") as tmp:
                result = run_interruptibly(_bench(args, Path(tmp)), _uvloop())
    except KeyboardInterrupt:
        print("interrupted: benchmark servers stopped", file=sys.stderr)
        return 130
    result["wall_s"] = round(time.perf_counter() - began, 2)
    bars = rep.judge_bars(result)
    result["bars"] = [bar.to_json() for bar in bars]
    print(rep.render(result, bars))
    out = Path(args.out)
    json_path = rep.write_json(out / "routing.json", result)
    png = rep.plot(result, out / "routing.png")
    print(f"\nresults: {json_path}" + (f"\nplot: {png}" if png else "\nplot: skipped (matplotlib not installed)"))
    drift_png = rep.plot_drift(result, out / "routing-drift.png")
    if drift_png:
        print(f"drift plot: {drift_png}")
    return 1 if args.strict and any(bar.status != "PASS" for bar in bars) else 0


def _uvloop() -> Any:
    try:
        import uvloop  # the in-process load generator should cost as little CPU as possible
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from only1mcp.jobs.sim.workload import DEFAULT_WORKLOAD, Workload

    started_at = datetime.datetime.now(datetime.timezone.utc)
    workload = Workload.from_dict(DEFAULT_WORKLOAD)
    mix = workload.stationary_mix()
    unavailable: dict[str, str] = {}  # a policy missing once is missing everywhere: no need to retry
    scenarios: dict[str, Any] = {}
    with_learned = getattr(args, "with_learned", False)
    infra = None
    if with_learned:
        from only1mcp.jobs.sim.learned import LoopInfra

        print("routing: starting the embedded broker and Redis for the learning rows ...", file=sys.stderr)
        infra = await LoopInfra(args.startup_timeout).start()
    try:
        for name in args.scenarios:
            scenarios[name] = await _scenario(args, name, workload, mix, unavailable, infra, tmp)
    finally:
        if infra is not None:
            await infra.stop()
    try:
        from only1mcp.proxy.routing import POLICIES as registered
        available = sorted(registered)
    except Exception as exc:  # the proxy package is being edited: say so, the rows speak anyway
        available = [f"unknown: {exc!r}"]
    return {
        "benchmark": "routing", "started_at": started_at.isoformat(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {
            "seed": args.seed, "quick": args.quick, "duration_s": args.duration, "sessions": args.sessions,
            "with_learned": with_learned, "drift_duration_s": args.drift_duration, "warmup_s": args.warmup,
            "warmup_seed": _warmup_seed(args.seed) if with_learned else None, "bucket_s": BUCKET_S,
            "utilisation": args.utilisation, "timeout_s": args.timeout, "policies": list(args.policies),
            "learning_rows": list(args.learning_rows),
            "scenarios": list(args.scenarios), "workload": DEFAULT_WORKLOAD, "tool_mix": mix,
            "latency": "ms over all calls, each censored at the timeout; success = ok reply within the timeout",
        },
        "machine": machine_info(["mcp", "aiohttp", "uvicorn", "only1mcp"]),
        "proxy_policies_registered": available,
        "scenarios": scenarios,
    }


def _warmup_seed(seed: Any) -> Any:
    return seed + 1000 if isinstance(seed, int) else f"{seed}+1000"


async def _scenario(args: argparse.Namespace, name: str, workload: Any, mix: dict[str, float],
                    unavailable: dict[str, str], infra: Any, tmp: Path) -> dict[str, Any]:
    """Every row of one scenario on the same schedule, then the oracle; the drift timeline if it flips."""
    from only1mcp.jobs.sim import report as rep
    from only1mcp.jobs.sim.loadgen import summarize_calls
    from only1mcp.jobs.sim.oracle import simulate
    from only1mcp.jobs.sim.workload import open_loop_schedule

    duration = args.drift_duration if name == "drift" and args.drift_duration else args.duration
    scenario = build_scenario(name, duration)
    cap = scenario.capacity(mix)
    rate = args.utilisation * cap
    schedule = open_loop_schedule(workload, args.seed, args.sessions, rate, duration)
    learning = tuple(args.learning_rows) if infra is not None else ()
    rows: dict[str, Any] = {}
    records: dict[str, list[Any]] = {}
    extra: dict[str, Any] = {}
    if learning:
        warm_schedule = open_loop_schedule(workload, _warmup_seed(args.seed), args.sessions, rate, args.warmup)
        extra["warmup_calls"] = len(warm_schedule)
    for policy in args.policies:
        if policy in unavailable:
            rows[policy] = {"status": "not available", "reason": unavailable[policy]}
            continue
        print(f"routing: {name} / {policy}: {len(schedule)} calls at {rate:.1f}/s ...", file=sys.stderr)
        began = time.perf_counter()
        row = await _run_policy(args, scenario, policy, schedule, tmp / f"{name}-{policy}")
        _add_row(rows, records, name, policy, row, began)
        if row["status"] == "not available":
            unavailable[policy] = row["reason"]
    if learning:
        from only1mcp.jobs.sim.learned import run_learning_rows

        print(f"routing: {name} / {' + '.join(learning)}: the loop, warm-up {len(warm_schedule)} calls, then "
              f"{len(schedule)} calls at {rate:.1f}/s each ...", file=sys.stderr)
        ns = argparse.Namespace(**vars(args))
        ns.min_train_calls = args.min_train_calls or max(50, len(warm_schedule) // 2)
        began = time.perf_counter()
        got = await run_learning_rows(ns, scenario, list(learning), schedule, warm_schedule, tmp / f"{name}-loop",
                                      infra, settle_seed=_warmup_seed(_warmup_seed(args.seed)), mix=mix)
        for policy in learning:
            _add_row(rows, records, name, policy, got.get(policy, {"status": "failed", "reason": "not run"}), began)
    profiles = scenario.profiles()
    for row, pick in (("oracle_informed", "informed"), ("oracle", "oracle")):
        records[row] = simulate(schedule, profiles, args.seed, pick)
        rows[row] = {"status": "ok", "summary": summarize_calls(records[row], args.timeout)}
    model_rr = summarize_calls(simulate(schedule, profiles, args.seed, "round_robin"), args.timeout)
    out = {
        "description": scenario.description, "capacity_calls_per_s": round(cap, 2), "rate": round(rate, 2),
        "calls": len(schedule), "duration_s": duration, "replicas": dict(scenario.replicas), "rows": rows,
        "model_round_robin": model_rr,  # the model's own round robin: how close the real stack is to it
        **extra,
    }
    if scenario.flip_s is not None:
        out["drift"] = rep.drift_timeline(records, scenario.flip_s, duration, BUCKET_S, args.timeout)
    return out


def _add_row(rows: dict[str, Any], records: dict[str, Any], scenario: str, policy: str, row: dict[str, Any],
             began: float) -> None:
    row["wall_s"] = round(time.perf_counter() - began, 2)
    if "records" in row:
        records[policy] = row.pop("records")
    rows[policy] = row
    print(f"routing: {scenario} / {policy}: {row['status']} after {row['wall_s']:.0f}s"
          + (f" - {row.get('reason')}" if row["status"] != "ok" else ""), file=sys.stderr)


async def _run_policy(args: argparse.Namespace, scenario: Scenario, policy: str, schedule: list[Any],
                      run_dir: Path) -> dict[str, Any]:
    """One run: fresh replicas and proxy, the schedule through it, everything stopped after."""
    from only1mcp.jobs.sim.loadgen import run_open_loop, summarize_calls, write_jsonl

    run_dir.mkdir(parents=True)
    *replica_ports, proxy_port = free_ports(len(scenario.replicas) + 1, HOST)
    # The replicas' fault clock (kept across restarts). With faults it starts a little
    # ahead, once everything is up, and the schedule starts with it, as the oracle assumes.
    faulty = any(raw.get("faults") for _, raw in scenario.replicas)
    epoch, t_start = time.time() + (_FAULT_LEAD_S if faulty else 0.0), time.perf_counter()
    specs = [{"port": port, "replica_id": rid, "profile": raw, "seed": args.seed, "epoch": epoch}
             for (rid, raw), port in zip(scenario.replicas, replica_ports)]
    # One process for the whole fleet (the SDK costs ~1 CPU-s to start), unless a replica
    # must be able to crash alone.
    groups = [[s] for s in specs] if scenario.needs_processes else [specs]
    with ProcessGroup(run_dir, env=getattr(args, "environ", None), grace_s=3.0) as procs:
        fleet: list[tuple[Managed, list[dict[str, Any]], list[str]]] = []
        for i, group in enumerate(groups):
            spec_file = run_dir / f"fleet{i}.json"
            spec_file.write_text(json.dumps(group))
            argv = [sys.executable, "-m", "only1mcp.jobs.sim.server_cli", "--fleet", str(spec_file)]
            fleet.append((procs.start(f"fleet{i}", argv), group, argv))
        try:
            await asyncio.gather(*(procs.wait_ready(p, _replicas_probe(g), args.startup_timeout) for p, g, _ in fleet))
        except StartError as exc:
            return {"status": "failed", "reason": f"sim-server did not start: {exc}", "log_tail": exc.log_tail}
        fleet_ready_s = time.perf_counter() - t_start
        config = run_dir / "proxy.toml"
        config.write_text(_PROXY_CONFIG.format(host=HOST, port=proxy_port, timeout=args.timeout, policy=policy)
                          + "".join(f'\n[[servers.replicas]]\nurl = "http://{HOST}:{p}/mcp"\n' for p in replica_ports))
        proxy = procs.start("proxy", [sys.executable, "-m", "only1mcp.cli", "proxy", "--config", str(config)])
        proxy_url = f"http://{HOST}:{proxy_port}/mcp"
        try:
            await procs.wait_ready(proxy, _proxy_probe(proxy_url, len(replica_ports)), args.startup_timeout)
        except StartError as exc:
            return _start_failure(policy, proxy, exc)
        restarts: list[dict[str, Any]] = []
        supervisor = asyncio.create_task(_supervise(procs, fleet, restarts))
        meters = {"proxy": proxy.cpu_seconds, "sim-servers": lambda: sum(p.cpu_seconds() for p, _, _ in fleet),
                  "loadgen": time.process_time}
        cpu_before = {k: f() for k, f in meters.items()}
        began = time.perf_counter()
        startup = {"fleet_s": round(fleet_ready_s, 2), "proxy_s": round(began - t_start - fleet_ready_s, 2),
                   "fault_clock_s": round(time.time() - epoch, 2)}  # < 0: the clock starts as the load does
        try:
            records = await run_open_loop(proxy_url, schedule, args.sessions, args.timeout + 1.0,
                                          start_at=epoch if faulty else None)
        finally:
            supervisor.cancel()
        elapsed = time.perf_counter() - began
        cpu = {k: round(100.0 * (f() - cpu_before[k]) / elapsed, 1) for k, f in meters.items()}
        upstream = await _upstream_stats(specs)
        if not proxy.alive():
            return {"status": "died", "reason": f"proxy exited with code {proxy.popen.returncode} during the run",
                    "log_tail": proxy.log_tail(20)}
    if args.keep_calls:
        write_jsonl(Path(args.out) / "routing-calls" / f"{run_dir.name}.jsonl", records)
    return {"status": "ok", "summary": summarize_calls(records, args.timeout), "records": records,
            "cpu_pct_of_one_core": cpu,
            "upstream": upstream, "restarts": restarts, "startup": startup, "load_s": round(elapsed, 2),
            "proxy_argv": proxy.argv}


def _start_failure(policy: str, proxy: Managed, exc: StartError) -> dict[str, Any]:
    """"not available" when the proxy refused the policy's name, "failed" for anything else."""
    lines = [line.strip() for line in exc.log_tail.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else str(exc)
    exited = proxy.popen.poll() is not None
    # Two ways to not know a policy: the configuration check names it, or the registry lookup fails.
    match = re.search(r"unknown policy '[^']*'", exc.log_tail)
    if exited and match:
        return {"status": "not available", "reason": match.group(0), "log_tail": exc.log_tail}
    if exited and last.startswith("KeyError") and policy in last:
        return {"status": "not available", "reason": f"the proxy has no policy {policy!r} ({last})",
                "log_tail": exc.log_tail}
    return {"status": "failed", "reason": last, "log_tail": exc.log_tail}


def _replicas_probe(group: list[dict[str, Any]]) -> Any:
    from only1mcp.jobs.bench._loadgen import McpError, new_http_client
    from only1mcp.jobs.sim.loadgen import ToolSession

    async def check() -> None:  # every replica answers sim_stats with its own id
        async with new_http_client(5.0) as http:
            for spec in group:
                session = ToolSession(http, f"http://{HOST}:{spec['port']}/mcp", client_name="routing-probe")
                await session.open()
                ok, error, replica = await session.call_tool("sim_stats", {})
                await session.close()
                if not ok or replica != spec["replica_id"]:
                    raise McpError(f"port {spec['port']}: expected replica {spec['replica_id']}, got {replica} {error}")

    return check


def _proxy_probe(url: str, replicas: int) -> Any:
    from only1mcp.jobs.bench._loadgen import McpError, new_http_client
    from only1mcp.jobs.sim.loadgen import ToolSession

    async def check() -> None:  # ready means every replica connected, not just the first
        async with new_http_client(5.0) as http:
            async with http.get(url.rsplit("/", 1)[0] + "/readyz") as resp:
                body = await resp.json(content_type=None)
            states = [r.get("state") for r in (body.get("servers") or {}).get("sim", [])]
            # Without per-replica states (another /readyz format) a 200 has to do.
            if (states.count("ready") != replicas if states else resp.status != 200):
                raise McpError(f"replicas not all ready: {states}")
            session = ToolSession(http, url, client_name="routing-probe")
            await session.open()
            hints = await session.tool_hints()
            await session.close()
            if "sim_stats" not in hints:
                raise McpError(f"the proxy does not list the sim tools: {sorted(hints)}")

    return check


async def _supervise(procs: ProcessGroup, fleet: list[tuple[Managed, list[dict[str, Any]], list[str]]],
                     restarts: list[dict[str, Any]]) -> None:
    """Restart a crashed sim-server process (same port, same fault clock), as a supervisor would."""
    while True:
        await asyncio.sleep(0.05)
        for i, (proc, group, argv) in enumerate(fleet):
            if not proc.alive():
                restarts.append({"replicas": [s["replica_id"] for s in group], "exit_code": proc.popen.returncode,
                                 "at_s": round(time.time() - group[0]["epoch"], 3)})
                fleet[i] = (procs.start(f"{proc.name}-restart{len(restarts)}", argv), group, argv)


async def _upstream_stats(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Executions per replica, straight from each replica (not through the proxy)."""
    from only1mcp.jobs.bench._loadgen import new_http_client
    from only1mcp.jobs.sim.loadgen import ToolSession

    stats: dict[str, Any] = {}
    async with new_http_client(5.0) as http:
        for spec in specs:
            try:
                session = ToolSession(http, f"http://{HOST}:{spec['port']}/mcp", client_name="routing-stats")
                await session.open()
                message = await session._request("tools/call", {"name": "sim_stats", "arguments": {}})
                await session.close()
                stats[spec["replica_id"]] = json.loads(message["result"]["content"][0]["text"])
            except Exception as exc:  # a crashed replica, say: its figures are lost, not the run
                stats[spec["replica_id"]] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return stats
