"""``only1mcp bench health``: failure detection and remediation against the classic checks.

Every row runs the same fleet (``health_scenarios``: one server per scenario, a faulty ``r0``
and two healthy siblings) under the same open-loop load through a real proxy:

- ``classic_active``: active MCP pings every 5 s, 2 failures take a replica out (passive
  ejection and the breaker effectively off), as the issue's classic check;
- ``passive_outlier``: the proxy's passive outlier ejection and breaker, active checks off;
- ``ensemble``: the worker's detectors on the event stream, alerts only (auto-remediation
  off): the detection figures, and the timeline each detector is replayed on alone;
- ``ensemble_remediation``: the classic active check plus the worker's remediation applied
  by the proxy through ``mcp.remediation``.

Times are on the fleet's fault clock. The proxy's ``/admin/upstreams`` is polled every 0.2 s
for each replica's ``routable`` flag (actions, and the classic rows' detections); the anomaly
topic is read as it is written (the detector rows' detections).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._procs import Managed, ProcessGroup, StartError, free_ports, run_interruptibly
from only1mcp.jobs.bench._report import Bar, machine_info, publish, render_bars, render_table
from only1mcp.jobs.sim.health_scenarios import (
    FAULTY, SCENARIO_NAMES, HealthScenario, Timing, build_fleet, episodes, false_alarm_bound_per_day, judge_scenario,
)
from only1mcp.jobs.sim.health_watch import AnomalyReader, RoutingWatcher, first_per_burst

__all__ = ["ROWS", "add_arguments", "run"]

ROWS = ("classic_active", "passive_outlier", "ensemble", "ensemble_remediation")
_LOOP_ROWS = ("ensemble", "ensemble_remediation")  # need the broker, Redis and a worker
HOST = "127.0.0.1"
_FULL, _QUICK = Timing(60.0, 120.0, 30.0), Timing(30.0, 20.0, 5.0)
_START_LEAD_S = 25.0  # the fault clock starts this long after the fleet is launched (startup fits in it)
# --quick: the test's fleet (two scenarios) was ready ~8 s after launch on 2 cores. A later start only
# shortens the warm-up: the load starts once ready, its calls are put on the fault clock (clock_late_s)
_QUICK_LEAD_S = 15.0
_OFF = 1_000_000  # a threshold never reached: the mechanism is off

_PROXY = """\
[proxy]
listen = "{host}:{port}"
call_timeout = {timeout}
log_level = "warning"
{servers}{loop}"""
_SERVER = """
[[servers]]
name = "{name}"
namespace = "{name}"
policy = "p2c_ewma"
timeout = {timeout}
[servers.health]
interval = {interval}
unhealthy_threshold = 2
healthy_threshold = 2
[servers.outlier]
consecutive_failures = {consecutive}
min_requests = {min_requests}
[servers.breaker]
failure_threshold = {breaker}
{remediation}{replicas}"""
_LOOP = """
[events]
bootstrap = "{bootstrap}"
spool_dir = "{spool}"
proxy_id = "bench-health"
hash_key = "bench-health"

[decisions]
bootstrap = "{bootstrap}"
topics = ["mcp.routing-weights", "mcp.remediation"]

[worker]
bootstrap = "{bootstrap}"
group = "{group}"
partitions = 1
flush_interval = 1.0

[store]
redis_url = "{redis_url}"
key_prefix = "{prefix}"
data_dir = "{data_dir}"

[learning]
enabled = false
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="30 s warm-up, 20 s ramps, 5 s tail (the test's form)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                        help=f"rows to run (default all: {', '.join(ROWS)})")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIO_NAMES, default=list(SCENARIO_NAMES),
                        metavar="SCENARIO", help=f"scenarios in the fleet (default all: {', '.join(SCENARIO_NAMES)})")
    parser.add_argument("--rate", type=float, default=12.0, help="calls/s per scenario server (default 12)")
    parser.add_argument("--flag-severity", default="medium", choices=("low", "medium", "high", "critical"),
                        help="an anomaly of this severity or higher counts as a detection (default medium)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-call timeout, s")
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument("--out", default="bench-results", help="folder for health.json (default bench-results)")
    parser.add_argument("--control-days", type=float, default=None, metavar="N",
                        help="the healthy control's windows resampled to N replica-days for false alarms "
                             "(default 3; 0 with --quick)")
    parser.add_argument("--keep", default="", metavar="DIR", help="keep each row's configuration and logs in DIR")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar does not pass")


def run(args: argparse.Namespace) -> int:
    timing = _QUICK if args.quick else _FULL
    if args.control_days is None:
        args.control_days = 0.0 if args.quick else 3.0
    with tempfile.TemporaryDirectory(prefix="only1mcp-health-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        report = run_interruptibly(_bench(args, timing, work))
    return publish(report, Path(args.out) / "health.json", args.strict)


async def _bench(args: argparse.Namespace, timing: Timing, tmp: Path) -> dict[str, Any]:
    from only1mcp.jobs.sim.learned import LoopInfra

    started = datetime.datetime.now(datetime.timezone.utc)
    fleet = build_fleet(timing, args.scenarios)
    infra = None
    if any(r in _LOOP_ROWS for r in args.rows):
        print("health: starting the embedded broker and Redis for the detector rows ...", file=sys.stderr)
        infra = await LoopInfra(args.startup_timeout).start()
    rows: dict[str, Any] = {}
    try:
        for i, row in enumerate(args.rows):
            print(f"health: {row}: {timing.duration:g}s of load on {len(fleet)} scenarios ...", file=sys.stderr)
            began = time.perf_counter()
            if row in _LOOP_ROWS and (infra is None or infra.error):
                rows[row] = {"status": "failed", "reason": f"no broker/Redis: {infra.error if infra else 'none'}"}
                continue
            try:
                rows[row] = await _run_row(args, row, fleet, timing, tmp / f"{i}-{row}", infra)
            except Exception as exc:  # one row failing must not lose the others
                rows[row] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
            why = f" ({rows[row].get('reason')})" if rows[row]["status"] != "ok" else ""
            print(f"health: {row}: {rows[row]['status']} after {time.perf_counter() - began:.0f}s{why}", file=sys.stderr)
    finally:
        if infra is not None:
            await infra.stop()
    report: dict[str, Any] = {
        "benchmark": "health", "started_at": started.isoformat(),
        "settings": {"quick": args.quick, "timing": dataclasses.asdict(timing),
                     "rate_per_server": args.rate, "flag_severity": args.flag_severity, "seed": args.seed,
                     "scenarios": {s.name: {"description": s.description, "faults": list(s.faults)} for s in fleet}},
        "machine": machine_info(["only1mcp", "pyod", "river"]),
        "rows": rows,
    }
    bars = _bars(rows, fleet)
    report["bars"] = [b.to_json() for b in bars]
    report["_text"] = _render(rows, fleet, timing, bars)
    png = plot_ramp(report, fleet, Path(args.out) / "health-ramp.png")
    report["_text"] += f"\nplot: {png}" if png else "\nplot: skipped (no ramp timeline, or no matplotlib)"
    return report


def plot_ramp(report: dict[str, Any], fleet: list[HealthScenario], path: Path) -> Path | None:
    """The latency ramp's faulty replica under ensemble_remediation: its latency, the ensemble's score and
    severity per window, the moment it left routing, the crash."""
    row = report["rows"].get("ensemble_remediation") or report["rows"].get("ensemble") or {}
    points = (row.get("timelines") or {}).get("latency-ramp")
    scenario = next((s for s in fleet if s.name == "latency-ramp"), None)
    if not points or scenario is None:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.6), sharex=True, height_ratios=(3, 2))
    ts = [p["t"] for p in points]
    for key, style in (("latency_p50_ms", "-"), ("latency_p95_ms", ":")):
        top.plot(ts, [p.get(key) if p.get(key) is not None else float("nan") for p in points], style, marker=".",
                 label=key.replace("latency_", "").replace("_ms", " ms"))
    top.set_yscale("log")
    top.set_ylabel("latency of its calls, ms")
    colours = {"low": "gold", "medium": "orange", "high": "red", "critical": "darkred"}
    bottom.plot(ts, [p["score"] for p in points], color="black", linewidth=1.2, label="ensemble score")
    for p in points:
        if p["severity"]:
            bottom.scatter([p["t"]], [p["score"]], color=colours[p["severity"]], s=18, zorder=3)
    for level, colour in colours.items():
        bottom.scatter([], [], color=colour, s=18, label=level)
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("score (severity)")
    bottom.set_xlabel("seconds on the fault clock")
    marks = [(scenario.fault_start, "ramp starts", "grey"), (scenario.crash_at, "crash", "black")]
    acted = (row.get("scenarios") or {}).get("latency-ramp", {}).get("acted_s")
    if acted is not None:
        marks.append((acted, "out of routing", "red"))
    for ax in (top, bottom):
        for x, _label, colour in marks:
            ax.axvline(x, color=colour, linestyle="--", linewidth=1)
    for x, label, colour in marks:
        top.text(x, 0.98, f" {label}", color=colour, va="top", fontsize=8, transform=top.get_xaxis_transform())
    top.legend(fontsize=8, loc="upper left")
    bottom.legend(fontsize=7, loc="upper left", ncol=5)
    top.set_title(f"latency-ramp: {scenario.description} (row ensemble_remediation)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- one row ---------------------------------------------------------------------------------------

async def _run_row(args: argparse.Namespace, row: str, fleet: list[HealthScenario], timing: Timing, run_dir: Path,
                   infra: Any) -> dict[str, Any]:
    from only1mcp.jobs.sim.loadgen import run_open_loop

    run_dir.mkdir(parents=True)
    loop = row in _LOOP_ROWS
    if loop:
        try:
            await infra.reset_topics()
        except Exception as exc:  # the broker went away while the classic rows ran: start it again
            print(f"health: the broker did not answer ({type(exc).__name__}: {exc}); restarting it", file=sys.stderr)
            await infra.stop()
            await infra.start()
            if infra.error:
                raise RuntimeError(f"broker/Redis restart failed: {infra.error}") from exc
            await infra.reset_topics()
    ports = free_ports(3 * len(fleet) + 1, HOST)
    proxy_port, replica_ports = ports[0], ports[1:]
    by_port: dict[int, str] = {}
    specs: list[dict[str, Any]] = []
    epoch = time.time() + (_QUICK_LEAD_S if args.quick else _START_LEAD_S)
    for scenario, chunk in zip(fleet, _chunks(replica_ports, 3)):
        for rid, port in zip(scenario.replica_ids(), chunk):
            faults = list(scenario.faults) if rid.endswith(f"-{FAULTY}") else []
            specs.append({"port": port, "replica_id": rid, "profile": _profile(faults), "seed": args.seed,
                          "epoch": epoch, "crashes": any(f["kind"] == "crash" for f in faults)})
            by_port[port] = rid
    config = run_dir / "only1mcp.toml"
    config.write_text(_config(args, row, fleet, proxy_port, replica_ports, run_dir, infra))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if loop:
        env.update({"KAFKA_BOOTSTRAP": infra.bootstrap, "REDIS_URL": infra.redis.url})
    proxy_url = f"http://{HOST}:{proxy_port}/mcp"
    with ProcessGroup(run_dir, env=env, grace_s=3.0) as procs:
        fleet_procs = _start_fleet(procs, run_dir, specs)
        worker = None
        if loop:
            worker = procs.start("worker", [sys.executable, "-m", "only1mcp.cli", "worker", "--config", str(config)])
        try:
            for proc, group, _ in fleet_procs:
                await procs.wait_ready(proc, _fleet_probe(group), args.startup_timeout)
            proxy = procs.start("proxy", [sys.executable, "-m", "only1mcp.cli", "proxy", "--config", str(config)])
            await procs.wait_ready(proxy, _ready_probe(proxy_url, len(specs)), args.startup_timeout)
        except StartError as exc:
            return {"status": "failed", "reason": str(exc), "log_tail": exc.log_tail}
        late = time.time() - epoch
        watcher = RoutingWatcher(proxy_url, epoch, by_port)
        anomalies = AnomalyReader(infra.bootstrap, epoch) if loop else None
        tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(_supervise(procs, fleet_procs))]
        if anomalies is not None:
            tasks.append(asyncio.create_task(anomalies.run()))
        try:
            schedule = _schedule(fleet, args, timing)
            offset = max(0.0, time.time() - epoch)  # > 0: the load starts late on the fault clock
            records = await run_open_loop(proxy_url, schedule, 32, args.timeout + 1.0, start_at=epoch)
            await asyncio.sleep(1.0)  # the last events and decisions land
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if loop:  # the events the detectors are replayed on, all in the store
            from only1mcp.jobs.sim.loop_results import wait_parquet

            await wait_parquet(run_dir / "data", len(records), since=epoch - 3600.0, timeout_s=30.0)
        died = [p.name for p in (proxy, worker) if p is not None and not p.alive()]
        if died:
            return {"status": "died", "reason": f"{', '.join(died)} exited during the run",
                    "log_tail": "\n".join(p.log_tail(15) for p in (proxy, worker) if p is not None)}
    calls: dict[str, list[dict[str, Any]]] = {s.server: [] for s in fleet}
    for r in records:
        server = r.tool.split("__", 1)[0]
        calls.setdefault(server, []).append({"start": r.start + offset, "ok": r.ok, "replica": r.replica})
    actions = {rid: [start for start, _ in episodes(samples)] for rid, samples in watcher.samples.items()}
    if row in ("classic_active", "passive_outlier"):
        flags = actions
    else:
        flags = anomalies.flags(args.flag_severity, watcher.sim_ids) if anomalies else {}
    if row == "ensemble":
        actions = {}  # alerts only: nothing should move (checked below)
    exposure = timing.duration - timing.warmup_s / 2  # the first half of the warm-up is the detectors' learning
    scenarios = {s.name: judge_scenario(s, flags, actions, calls[s.server], exposure) for s in fleet}
    out: dict[str, Any] = {"status": "ok", "scenarios": scenarios, "calls": len(records),
                           "out_of_routing": {rid: [[round(a, 2), None if b is None else round(b, 2)]
                                                    for a, b in episodes(v)] for rid, v in watcher.samples.items()},
                           "polls": {rid: len(v) for rid, v in watcher.samples.items()},
                           "clock_late_s": round(late, 2), "remediated_while_alert_only": None}
    if row == "ensemble":
        moved = {rid: [start for start, _ in episodes(s)] for rid, s in watcher.samples.items()}
        out["routing_changes_seen"] = {rid: len(v) for rid, v in moved.items() if v}
    if row == "ensemble":
        out["detectors_alone"] = await asyncio.to_thread(_detectors_alone, args, fleet, timing, run_dir / "data", epoch,
                                                         watcher.sim_ids, calls, exposure)
    if loop:
        out["timelines"] = await asyncio.to_thread(_timelines, args, fleet, run_dir / "data", epoch, watcher.sim_ids)
    if anomalies is not None:
        out["anomaly_events"] = anomalies.count
        out["anomalies_by_replica"] = anomalies.summary()
    return out


def _detectors_alone(args: argparse.Namespace, fleet: list[HealthScenario], timing: Timing, data_dir: Path,
                     epoch: float, sim_ids: dict[str, str], calls: dict[str, list[dict[str, Any]]], exposure: float) -> dict[str, Any]:
    """Each detector of the worker's ensemble alone (and the ensemble) replayed on this run's events."""
    from only1mcp.jobs.sim.health_replay import load_events, long_control, observe, replay
    from only1mcp.streaming import AnomalySettings

    settings = AnomalySettings()
    try:
        events = load_events(data_dir)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    observations = observe(events, tick_s=settings.tick_interval, window_s=settings.window,
                           min_calls=settings.min_calls, max_window_s=settings.max_window)
    flags = replay(observations, settings.features, args.flag_severity, timeout_ms=args.timeout * 1000.0)
    out: dict[str, Any] = {"events": len(events)}
    if args.control_days > 0:  # the healthy control's own windows, after the detectors' warm-up
        healthy = [[(t, x) for t, x in rows if t - epoch >= timing.warmup_s / 2]
                   for rid, rows in observations.items() if sim_ids.get(rid, "").startswith("healthy-")]
        out["long_control"] = long_control(healthy, settings.features, args.flag_severity, days=args.control_days,
                                           seed=args.seed, timeout_ms=args.timeout * 1000.0,
                                           close_after=settings.close_after)
    for name, by_replica in flags.items():
        on_clock = {sim_ids.get(rid, rid): first_per_burst([t - epoch for t in times], settings.close_after)
                    for rid, times in by_replica.items()}
        out[name] = {s.name: judge_scenario(s, on_clock, {}, calls[s.server], exposure) for s in fleet}
    return out


def _timelines(args: argparse.Namespace, fleet: list[HealthScenario], data_dir: Path, epoch: float,
               sim_ids: dict[str, str]) -> dict[str, Any]:
    """The faulty replica's windows and the ensemble's verdicts, per ramp scenario (the README's plot)."""
    from only1mcp.jobs.sim.health_replay import load_events, observe, timeline
    from only1mcp.streaming import AnomalySettings

    settings = AnomalySettings()
    try:
        observations = observe(load_events(data_dir), tick_s=settings.tick_interval, window_s=settings.window,
                               min_calls=settings.min_calls, max_window_s=settings.max_window)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    out = {}
    for scenario in fleet:
        if scenario.name not in ("latency-ramp", "error-ramp"):
            continue
        rid = next((r for r, sim in sim_ids.items() if sim == f"{scenario.server}-{FAULTY}"), None)
        if rid in observations:
            points = timeline(observations[rid], settings.features, args.timeout * 1000.0)
            out[scenario.name] = [{**p, "t": round(p["t"] - epoch, 3)} for p in points]
    return out


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _profile(faults: list[dict[str, Any]]) -> dict[str, Any]:
    import copy

    from only1mcp.jobs.sim.model import DEFAULT_PROFILE

    raw = copy.deepcopy(DEFAULT_PROFILE)
    raw["faults"] = faults
    return raw


def _config(args: argparse.Namespace, row: str, fleet: list[HealthScenario], proxy_port: int,
            replica_ports: list[int], run_dir: Path, infra: Any) -> str:
    active = row in ("classic_active", "ensemble", "ensemble_remediation")
    passive = row == "passive_outlier"
    remediation = ""
    if row in _LOOP_ROWS:
        remediation = f"[servers.remediation]\nauto = {'true' if row == 'ensemble_remediation' else 'false'}\n"
    servers = ""
    for scenario, chunk in zip(fleet, _chunks(replica_ports, 3)):
        servers += _SERVER.format(
            name=scenario.server, timeout=args.timeout, interval=5.0 if active else 0.0,
            consecutive=5 if passive else _OFF, min_requests=20 if passive else _OFF,
            breaker=5 if passive else _OFF, remediation=remediation,
            replicas="".join(f'\n[[servers.replicas]]\nurl = "http://{HOST}:{p}/mcp"\n' for p in chunk))
    loop = ""
    if row in _LOOP_ROWS:
        loop = _LOOP.format(bootstrap=infra.bootstrap, spool=run_dir / "spool", group=f"bench-health-{row}",
                            redis_url=infra.redis.url, prefix=f"health-{row}", data_dir=run_dir / "data")
    return _PROXY.format(host=HOST, port=proxy_port, timeout=args.timeout, servers=servers, loop=loop)


def _start_fleet(procs: ProcessGroup, run_dir: Path, specs: list[dict[str, Any]]) -> list[tuple[Managed, Any, Any]]:
    """One process for the replicas that never crash, one each for those that do."""
    steady = [s for s in specs if not s["crashes"]]
    groups = ([steady] if steady else []) + [[s] for s in specs if s["crashes"]]
    out = []
    for i, group in enumerate(groups):
        spec_file = run_dir / f"fleet{i}.json"
        spec_file.write_text(json.dumps([{k: v for k, v in s.items() if k != "crashes"} for s in group]))
        argv = [sys.executable, "-m", "only1mcp.jobs.sim.server_cli", "--fleet", str(spec_file)]
        out.append((procs.start(f"fleet{i}", argv), group, argv))
    return out


async def _supervise(procs: ProcessGroup, fleet: list[tuple[Managed, Any, Any]]) -> None:
    """Restart a crashed replica's process, as a supervisor would; it answers 503 (down) from then on."""
    while True:
        await asyncio.sleep(0.1)
        for i, (proc, group, argv) in enumerate(fleet):
            if not proc.alive():
                fleet[i] = (procs.start(f"{proc.name}-again", argv), group, argv)


def _fleet_probe(group: list[dict[str, Any]]) -> Any:
    from only1mcp.jobs.sim.bench import _replicas_probe

    return _replicas_probe(group)


def _ready_probe(url: str, replicas: int) -> Any:
    from only1mcp.jobs.bench._loadgen import McpError, new_http_client

    async def check() -> None:
        async with new_http_client(5.0) as http:
            async with http.get(url.rsplit("/", 1)[0] + "/readyz") as resp:
                body = await resp.json(content_type=None)
        states = [r.get("state") for group in (body.get("servers") or {}).values() for r in group]
        if states.count("ready") != replicas:
            raise McpError(f"{states.count('ready')} of {replicas} replicas ready")

    return check


def _schedule(fleet: list[HealthScenario], args: argparse.Namespace, timing: Timing) -> list[Any]:
    """The same Poisson load on every scenario's server (each its own seed), merged in time order."""
    from dataclasses import replace

    from only1mcp.jobs.sim.workload import DEFAULT_WORKLOAD, Workload, open_loop_schedule

    workload = Workload.from_dict(DEFAULT_WORKLOAD)
    merged = []
    for i, scenario in enumerate(fleet):
        for call in open_loop_schedule(workload, args.seed * 100 + i, 32, args.rate, timing.duration):
            merged.append(replace(call, tool=f"{scenario.server}__{call.tool}"))
    merged.sort(key=lambda c: c.t)
    return [replace(c, index=i) for i, c in enumerate(merged)]


# -- report --------------------------------------------------------------------------------------

def _total(rows: dict[str, Any], row: str, key: str, fleet: list[HealthScenario]) -> float | None:
    entry = rows.get(row) or {}
    if entry.get("status") != "ok":
        return None
    return float(sum(entry["scenarios"][s.name].get(key) or 0 for s in fleet if s.fault_start is not None))


def _bars(rows: dict[str, Any], fleet: list[HealthScenario]) -> list[Bar]:
    bars = []
    names = {s.name for s in fleet}
    for ramp in ("latency-ramp", "error-ramp"):
        bar = Bar(f"{ramp}_lead", f"{ramp}: ensemble flags r0 before the crash by", ">=", 30.0, " s")
        entry = (rows.get("ensemble") or {}).get("scenarios", {}).get(ramp) if ramp in names else None
        bar.judge(None if not entry else entry.get("lead_s"), "" if entry else "not run")
        if entry and entry.get("lead_s") is None:  # it ran and was never flagged: a miss, not a skip
            bar.status, bar.note = "FAIL", "not flagged before the crash"
        bars.append(bar)
    bar = Bar("sudden_crash_action", "sudden crash: traffic moved away (ensemble_remediation) after", "<=", 1.0, " s")
    entry = (rows.get("ensemble_remediation") or {}).get("scenarios", {}).get("sudden-crash")
    bars.append(bar.judge(None if not entry else entry.get("action_delay_s")))
    bar = Bar("false_alarms", "false alarms of the ensemble, 95% upper bound the run supports", "<=", 1.0,
              " per replica-day")
    entry = rows.get("ensemble") or {}
    if entry.get("status") == "ok":
        alarms = sum(v["false_alarms"] for v in entry["scenarios"].values())
        hours = sum(v["watched_replica_h"] for v in entry["scenarios"].values())
        note = f"live: {alarms} false alarms in {hours:.2f} replica-hours"
        long = (entry.get("detectors_alone") or {}).get("long_control") or {}
        if long.get("replica_days"):  # the healthy control's own windows, resampled long
            note += (f"; healthy control resampled: {long['false_alarms']} in {long['replica_days']:.2f} "
                     f"replica-days")
            alarms += long["false_alarms"]
            hours += 24.0 * long["replica_days"]
        bars.append(bar.judge(false_alarm_bound_per_day(alarms, hours), note))
    else:
        bars.append(bar)
    classic = _total(rows, "classic_active", "failed_after_fault", fleet)
    ours = _total(rows, "ensemble_remediation", "failed_after_fault", fleet)
    bar = Bar("failed_calls", "calls failed with remediation / with the classic check", "<=", 0.5, "x")
    ratio = None if classic is None or ours is None else (ours / classic if classic else (0.0 if not ours else 99.0))
    bars.append(bar.judge(ratio, "" if classic is None or ours is None else f"{ours:.0f} vs {classic:.0f} calls"))
    return bars


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _render(rows: dict[str, Any], fleet: list[HealthScenario], timing: Timing, bars: list[Bar]) -> str:
    lines = [f"health benchmark: warm-up {timing.warmup_s:g}s, ramps {timing.ramp_s:g}s, tail {timing.tail_s:g}s; "
             "lead = s before the crash the faulty replica was flagged; act = s after the crash it left routing"]
    headers = ["row", "scenario", "flagged at", "lead", "act after crash", "detect→moved", "failed calls",
               "false alarms"]
    table = []
    for row, entry in rows.items():
        if entry.get("status") != "ok":
            table.append(f"{row}: {entry.get('status')} - {entry.get('reason', '')}")
            continue
        for s in fleet:
            v = entry["scenarios"][s.name]
            table.append([row, s.name, _fmt(v.get("detected_s"), "s"), _fmt(v.get("lead_s"), "s"),
                          _fmt(v.get("action_delay_s"), "s"), _fmt(v.get("moved_s"), "s"),
                          f"{v['failed_after_fault']}/{v['calls']}", str(v["false_alarms"])])
        for name, by_scenario in (entry.get("detectors_alone") or {}).items():
            if name in ("events", "error", "long_control") or not isinstance(by_scenario, dict):
                continue
            for s in fleet:
                v = by_scenario.get(s.name)
                if v is None:
                    continue
                table.append([f"  {name} alone" if name != "ensemble (replay)" else f"  {name}", s.name,
                              _fmt(v.get("detected_s"), "s"), _fmt(v.get("lead_s"), "s"), "-", "-", "-",
                              str(v["false_alarms"])])
    lines.append(render_table(headers, table))
    long = ((rows.get("ensemble") or {}).get("detectors_alone") or {}).get("long_control") or {}
    if long.get("replica_days"):
        lines.append(f"healthy control resampled (the control replicas' own windows in blocks of {long.get('block')}, "
                     f"scored by the worker's ensemble): {long['false_alarms']} false alarms in "
                     f"{long['replica_days']:.2f} replica-days ({long.get('windows')} windows)")
    lines.append("")
    lines.append(render_bars(bars))
    return "\n".join(lines)
