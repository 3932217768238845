"""The learning rows of ``only1mcp bench routing --with-learned``: the whole loop, per row.

Rows ``tool_ewma`` and ``learned`` run proxy → events → broker → worker → weights →
proxy, the way ``only1mcp up`` runs it: one embedded broker (tansu) and one Redis for
the whole benchmark (:class:`LoopInfra`, started once through ``infra/``), and per row
a fresh data dir, freshly created topics (deleted and created again, so no row reads
another's events), a worker subprocess (``only1mcp worker --config``) with a
``[learning]`` table, fresh sim-server replicas, and the proxy with ``[events]`` and
``[decisions]`` on that broker, ``policy = "learned"``, ``fallback_policy = "p2c_ewma"``.

Both learning rows of a scenario share one loop and one warm-up:

1. the loop starts and warms up on its own schedule (another seed than the measured one)
   so the learner has samples;
2. ``tool_ewma``: waits (bounded) until the worker publishes weights from the
   specialisation learner and the proxy shows them (``/admin/upstreams``); the registry
   is empty and retraining off, so nothing else can publish; then the measured schedule;
3. ``learned``: ``only1mcp train latency --config FILE --until <end of the warm-up>``
   (so it trains on the warm-up's calls only; its metrics go into the row), then the
   worker, the fleet and the proxy restart (the worker loads the live model; the fleet
   and the proxy start fresh, as for every other row), and it waits (bounded) until
   weights with source ``latency_model`` are published and shown, and cover the tools
   of ``--model-coverage`` of the traffic (bounded again: the model takes over a tool
   only once it has seen enough calls of every replica on it); then the measured schedule.
   Short rounds of settle traffic (another seed again) run while a row waits, so the
   learner sees calls;
4. a scenario with scripted faults (``drift``) gets its fleet restarted before each
   measured run, with the fault clock starting with the measured schedule, as the
   classic rows have it (during the warm-up the clock is far in the future: no fault);
5. after each measured run, what decided every call is read from the request events the
   worker wrote to Parquet (``policy`` and ``reason``: the learned weights and their
   source, or the fallback), and which weights the worker published during the run (its
   own consumer on ``mcp.routing-weights``).

When the gate refuses the model, the ``learned`` row is measured on what the loop then
serves a ``policy = "learned"`` server — the learner's weights — and says so
(``served_by``). A part that is not there (the proxy does not know ``learned``, the
worker publishes no weights, no ``train`` command) makes the row "not available" with
the reason; the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._procs import Managed, ProcessGroup, StartError, free_ports
from only1mcp.jobs.sim.loop_results import WeightsWatcher, routing_share, train_latency_job, wait_parquet

__all__ = ["LEARNING_ROWS", "LoopInfra", "run_learning_rows"]

LEARNING_ROWS = ("tool_ewma", "learned")
HOST = "127.0.0.1"
PARTITIONS = 2  # of every topic: one worker on the embedded broker, little traffic
SERVER = "sim"
_IN_FLIGHT_LEAD_S = 60.0  # calls before a hold-out read for what was in flight at its start
_FAR_FUTURE_S = 1e6  # a warm-up fleet's fault clock starts this far ahead: no scripted fault fires
_FAULT_LEAD_S = 5.0  # fleet restart and the proxy reconnecting all replicas fit in it

_CONFIG = """\
[proxy]
listen = "{host}:{port}"
call_timeout = {timeout}
log_level = "warning"

[[servers]]
name = "{server}"
namespace = ""
policy = "learned"
fallback_policy = "p2c_ewma"
timeout = {timeout}
{server_extra}{replicas}
[events]
bootstrap = "{bootstrap}"
spool_dir = "{spool}"
proxy_id = "bench-routing"
hash_key = "bench-routing"

[decisions]
bootstrap = "{bootstrap}"

[worker]
bootstrap = "{bootstrap}"
group = "{group}"
partitions = {partitions}
flush_interval = 1.0

[store]
redis_url = "{redis_url}"
key_prefix = "{prefix}"
data_dir = "{data_dir}"

[learning]
publish_interval = {publish_interval}
valid_for = {valid_for}
min_samples = {min_samples}
retrain_interval = 0
min_train_calls = {min_train_calls}
registry_dir = "{registry}"
"""


class LoopInfra:
    """The broker and Redis every learning row shares, started once, as ``only1mcp up`` starts them."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self.broker: Any = None
        self.redis: Any = None
        self.error: str | None = None
        self.rows = 0

    async def start(self) -> LoopInfra:
        from only1mcp.infra.broker import EmbeddedBroker
        from only1mcp.infra.redis import ensure_redis

        try:
            self.broker = await EmbeddedBroker(start_timeout_s=self.startup_timeout).astart()
            self.redis = await asyncio.to_thread(ensure_redis, None, None, self.startup_timeout)
        except Exception as exc:  # no tansu, no redis-server: the learning rows say so
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            await self.stop()
        return self

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    async def stop(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop(grace_s=2.0)
            self.redis = None
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.astop(grace_s=2.0)
            self.broker = None

    async def reset_topics(self) -> None:
        """Delete every topic of the contract and create it again, empty: a row never reads another's events."""
        from aiokafka.admin import AIOKafkaAdminClient

        from only1mcp.events import TOPICS
        from only1mcp.infra.broker import acreate_topics

        names = list(TOPICS.values())
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            doomed = [n for n in existing if n in names or n.startswith("bench-")]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()
        last: Exception | None = None
        for _ in range(50):  # the broker may need a moment before the names are free again
            try:
                await acreate_topics(self.bootstrap, names, PARTITIONS)
                return
            except Exception as exc:
                last = exc
                await asyncio.sleep(0.1)
        raise RuntimeError(f"could not create the topics again: {last}")


async def run_learning_rows(args: Any, scenario: Any, rows: list[str], schedule: list[Any],
                            warm_schedule: list[Any], run_dir: Path, infra: LoopInfra, settle_seed: Any,
                            mix: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The learning rows of one scenario (``tool_ewma`` and/or ``learned``) on one loop; see the module
    docstring. Returns row name → row result (status, summary, records, routing share, …)."""
    from only1mcp.cli import COMMANDS

    if infra.error:
        return {row: {"status": "not available", "reason": f"no broker/Redis for the loop: {infra.error}"}
                for row in rows}
    loop = _Loop(args, scenario, run_dir, infra, settle_seed, mix)
    out: dict[str, dict[str, Any]] = {}
    try:
        with ProcessGroup(run_dir, env=loop.env, grace_s=5.0) as procs:
            loop.procs = procs
            started = await loop.start()
            if started is not None:
                return {row: dict(started) for row in rows}
            await loop.warm_up(warm_schedule)
            warm = loop.warmup
            if "tool_ewma" in rows:
                out["tool_ewma"] = await loop.measure_row("tool_ewma", schedule)
            if "learned" in rows:
                if "train" not in COMMANDS:
                    out["learned"] = {"status": "not available",
                                      "reason": "this build has no `only1mcp train latency` command"}
                else:
                    out["learned"] = await loop.learned_row(schedule)
            for result in out.values():
                result.setdefault("warmup", warm)
            await loop.routing_shares(out)
    except Exception as exc:  # the loop broke (the broker, a topic, Parquet): the rows say so, the run goes on
        import traceback

        reason = f"the loop failed: {type(exc).__name__}: {exc}"[:300]
        for row in rows:
            if out.get(row, {}).get("status") != "ok":
                out[row] = {**loop.common, "status": "failed", "reason": reason,
                            "traceback": traceback.format_exc()[-2000:]}
    finally:
        await loop.close()
    return out


class _Loop:
    """One loop (worker, fleet, proxy on the shared broker/Redis) for the learning rows of a scenario."""

    def __init__(self, args: Any, scenario: Any, run_dir: Path, infra: LoopInfra, settle_seed: Any,
                 mix: dict[str, float]) -> None:
        import os

        self.args, self.scenario, self.run_dir, self.infra = args, scenario, run_dir, infra
        self.settle_seed, self.mix = settle_seed, mix
        run_dir.mkdir(parents=True)
        infra.rows += 1
        self.group = f"bench-routing-{infra.rows}"
        *self.replica_ports, self.proxy_port = free_ports(len(scenario.replicas) + 1, HOST)
        self.proxy_url = f"http://{HOST}:{self.proxy_port}/mcp"
        self.faulty = any(raw.get("faults") for _, raw in scenario.replicas)
        self.data_dir, self.registry = run_dir / "data", run_dir / "models"
        self.data_dir.mkdir()
        self.config = run_dir / "only1mcp.toml"
        extra = "".join(f"{key} = {value}\n" for key, value in (("exploration", args.exploration),
                                                               ("temperature", args.temperature))
                        if value is not None)
        self.config.write_text(_CONFIG.format(
            host=HOST, port=self.proxy_port, timeout=args.timeout, server=SERVER, server_extra=extra,
            replicas="".join(f'\n[[servers.replicas]]\nurl = "http://{HOST}:{p}/mcp"\n' for p in self.replica_ports),
            bootstrap=infra.bootstrap, spool=run_dir / "spool", group=self.group,
            partitions=PARTITIONS, redis_url=infra.redis.url, prefix=f"bench{infra.rows}", data_dir=self.data_dir,
            publish_interval=1.0, valid_for=args.valid_for, min_samples=args.min_samples,
            min_train_calls=args.min_train_calls, registry=self.registry))
        self.env = {**os.environ, **(getattr(args, "environ", None) or {}), "KAFKA_BOOTSTRAP": infra.bootstrap,
                    "REDIS_URL": infra.redis.url, "PYTHONUNBUFFERED": "1"}
        self.py = [sys.executable, "-m", "only1mcp.cli"]
        self.procs: ProcessGroup = None  # type: ignore[assignment]
        self.worker: Managed = None  # type: ignore[assignment]
        self.proxy: Managed = None  # type: ignore[assignment]
        self.fleet: tuple[Managed, list[dict[str, Any]]] = None  # type: ignore[assignment]
        self.watcher: WeightsWatcher | None = None
        self.warmup: dict[str, Any] = {}
        self.warm_end = 0.0
        self.generation = 0
        self.fleets = 0
        self.common = {"config": str(self.config), "run_dir": str(run_dir)}

    # -- processes -----------------------------------------------------------------------------

    async def start(self) -> dict[str, Any] | None:
        """Topics, watcher, worker, fleet, proxy; None when all is up, else the failed row."""
        from only1mcp.events import TOPICS

        began = time.perf_counter()
        await self.infra.reset_topics()
        self.watcher = await WeightsWatcher(self.infra.bootstrap, TOPICS["routing_weights"], PARTITIONS).start()
        self.worker = self._start_worker()
        failed = await self._start_fleet_and_proxy(time.time() + (_FAR_FUTURE_S if self.faulty else 0.0))
        if failed:
            return failed
        self.common["group_stable_s"] = await _wait_group(self.infra.bootstrap, self.group, self.worker,
                                                          self.args.startup_timeout)
        self.common["start_s"] = round(time.perf_counter() - began, 2)
        return None

    def _start_worker(self) -> Managed:
        self.generation += 1
        return self.procs.start(f"worker-{self.generation}",
                                [*self.py, "worker", "--config", str(self.config), "--log-level", "info"])

    async def _start_fleet_and_proxy(self, epoch: float) -> dict[str, Any] | None:
        from only1mcp.jobs.sim import bench as b

        self.fleets += 1
        self.fleet = _start_fleet(self.procs, self.run_dir, self.scenario, self.replica_ports, self.args.seed,
                                  epoch, f"fleet-{self.fleets}")
        try:
            await self.procs.wait_ready(self.fleet[0], b._replicas_probe(self.fleet[1]), self.args.startup_timeout)
        except StartError as exc:
            return {"status": "failed", "reason": f"sim-server did not start: {exc}", "log_tail": exc.log_tail}
        if self.proxy is None or not self.proxy.alive():
            self.proxy = self.procs.start(f"proxy-{self.generation}", [*self.py, "proxy", "--config", str(self.config)])
        try:
            await self.procs.wait_ready(self.proxy, b._proxy_probe(self.proxy_url, len(self.replica_ports)),
                                        self.args.startup_timeout)
        except StartError as exc:
            return b._start_failure("learned", self.proxy, exc)
        return None

    async def routing_shares(self, rows: dict[str, dict[str, Any]]) -> None:
        """Once every row ran (the worker writes Parquet a little behind): what decided each measured call."""
        measured = [r for r in rows.values() if r.get("status") == "ok" and "window_unix" in r]
        if not measured:
            return
        began = time.perf_counter()
        for r in measured:
            since, until = r["window_unix"]
            await wait_parquet(self.data_dir, r["summary"]["count"], since=since, until=until,
                                timeout_s=max(1.0, 20.0 - (time.perf_counter() - began)))
            r["routing_share"] = routing_share(self.data_dir, since, until)
            r.setdefault("phases_s", {})["collect_s"] = round(time.perf_counter() - began, 2)

    async def close(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()

    # -- phases ---------------------------------------------------------------------------------

    async def warm_up(self, warm_schedule: list[Any]) -> None:
        from only1mcp.jobs.sim.loadgen import run_open_loop, summarize_calls

        began = time.perf_counter()
        self.warm_start = time.time()
        warm = await run_open_loop(self.proxy_url, warm_schedule, self.args.sessions, self.args.timeout + 1.0)
        self.warm_end = time.time()
        self.warmup = {"calls": len(warm), "seconds": round(time.perf_counter() - began, 2),
                       "summary": summarize_calls(warm, self.args.timeout)}

    async def measure_row(self, row: str, schedule: list[Any], fresh: bool = True,
                          source: str | None = None) -> dict[str, Any]:
        """Wait for ``row``'s weights; restart the fleet and the proxy (``fresh``), so queues, breakers and
        ejections left by the warm-up do not carry over, as every classic row starts fresh (the worker keeps
        what it learned; the new proxy reads the newest weights at start); give a faulty fleet its clock
        (it starts with the measured schedule, as the oracle assumes); play the schedule."""
        from only1mcp.jobs.sim import bench as b
        from only1mcp.jobs.sim.loadgen import run_open_loop, summarize_calls, write_jsonl

        args = self.args
        phases: dict[str, float] = {}
        if not self.worker.alive():
            return {**self.common, **_died("worker", self.worker, "before the run")}
        t = time.perf_counter()
        source = source or ("latency_model" if row == "learned" else "tool_ewma")
        waited = await self._wait_weights(source)
        phases["weights_wait_s"] = time.perf_counter() - t
        result: dict[str, Any] = {**self.common, "weights_wait": waited}
        if waited["status"] != "ok":
            return {**result, "status": "not available", "reason": waited["reason"],
                    "log_tail": self.worker.log_tail(20)}
        # Fresh replicas and a fresh proxy for the measured run, as every classic row gets: queues,
        # breakers and ejections left by the warm-up do not carry over (the worker keeps what it learned,
        # and the new proxy reads the newest weights at start). A faulty fleet's scripted clock starts
        # with the measured schedule, as the oracle assumes.
        t = time.perf_counter()
        if fresh:
            for proc in (self.proxy, self.fleet[0]):
                self.procs.stop(proc)
            self.proxy = None  # type: ignore[assignment]
            failed = await self._start_fleet_and_proxy(time.time() + (_FAR_FUTURE_S if self.faulty else 0.0))
            if failed:
                return {**result, **failed}
        result["fresh_proxy_shows_weights"] = await self._wait_shown(source, budget_s=15.0)
        epoch = None
        if self.faulty:
            self.procs.stop(self.fleet[0])
            epoch = time.time() + _FAULT_LEAD_S
            failed = await self._start_fleet_and_proxy(epoch)
            if failed:
                return {**result, **failed}
        phases["fresh_proxy_s"] = time.perf_counter() - t
        meters = {"proxy": self.proxy.cpu_seconds, "worker": self.worker.cpu_seconds,
                  "sim-servers": self.fleet[0].cpu_seconds, "loadgen": time.process_time}
        cpu_before = {k: f() for k, f in meters.items()}
        began = time.perf_counter()
        began_unix = epoch if epoch is not None else time.time()
        records = await run_open_loop(self.proxy_url, schedule, args.sessions, args.timeout + 1.0, start_at=epoch)
        ended_unix = time.time()
        elapsed = time.perf_counter() - began
        cpu = {k: round(100.0 * (f() - cpu_before[k]) / elapsed, 1) for k, f in meters.items()}
        upstream = await b._upstream_stats(self.fleet[1])
        admin = await _admin_upstreams(self.proxy_url)
        for proc, name in ((self.proxy, "proxy"), (self.worker, "worker")):
            if not proc.alive():
                return {**result, **_died(name, proc, "during the run")}
        if args.keep_calls:
            write_jsonl(Path(args.out) / "routing-calls" / f"{self.run_dir.name}-{row}.jsonl", records)
        assert self.watcher is not None
        return {**result, "status": "ok", "summary": summarize_calls(records, args.timeout), "records": records,
                "window_unix": [began_unix, ended_unix + args.timeout + 1.0],
                "weights_published": self.watcher.summary(began_unix, ended_unix),
                "cpu_pct_of_one_core": cpu, "upstream": upstream, "load_s": round(elapsed, 2),
                "phases_s": {k: round(v, 2) for k, v in phases.items()}, "admin_upstreams_after": admin,
                "proxy_argv": self.proxy.argv}

    async def learned_row(self, schedule: list[Any]) -> dict[str, Any]:
        """Train on the warm-up's calls, restart worker, fleet and proxy (fresh, like every row), measure."""
        began = time.perf_counter()
        await wait_parquet(self.data_dir, self.warmup.get("calls", 0), since=self.warm_start - 1.0,
                            timeout_s=20.0)
        training = await train_latency_job(self.py, self.config, self.registry, self.procs, self.args.train_timeout,
                                until=self.warm_end + 0.5, min_rows=self.args.min_train_calls)
        training["wall_with_wait_s"] = round(time.perf_counter() - began, 2)
        training["mae_floor"], training["mae_informed"] = self._mae_oracles(training)
        if training["status"] == "refused":
            # What `policy = "learned"` serves while no model passed the gate: the learner's weights.
            # Measured as such (a fresh proxy, the same schedule) and labelled, so the bars say what ran.
            result = await self.measure_row("learned", schedule, source="tool_ewma")
            return {**result, "training": training, "served_by": "tool_ewma", "served_because": training["reason"]}
        if training["status"] != "ok":
            return {**self.common, "status": "not available", "reason": training["reason"], "training": training}
        restart = time.perf_counter()
        for proc in (self.proxy, self.fleet[0], self.worker):
            self.procs.stop(proc)
        self.proxy = None  # type: ignore[assignment]
        self.worker = self._start_worker()  # it loads the live model at start
        failed = await self._start_fleet_and_proxy(time.time() + (_FAR_FUTURE_S if self.faulty else 0.0))
        if failed:
            return {**self.common, **failed, "training": training}
        await _wait_group(self.infra.bootstrap, self.group, self.worker, self.args.startup_timeout)
        restart_s = round(time.perf_counter() - restart, 2)
        result = await self.measure_row("learned", schedule, fresh=False)  # fresh already
        result["training"] = training
        result.setdefault("phases_s", {}).update({"train_s": training["wall_with_wait_s"], "restart_s": restart_s})
        return result

    def _mae_oracles(self, training: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The oracles beside the model's hold-out P50 MAE over the same window's calls (jobs/sim/ceiling.py):
        (the wait-knowing floor, the informed oracle); None without a registered model's window or for a
        scenario with faults."""
        from only1mcp.jobs.sim.ceiling import p50_mae_floor, p50_mae_informed
        from only1mcp.jobs.train_latency import load_rows

        window = (training.get("model") or {}).get("window") or {}
        since, until = window.get("holdout_since"), window.get("data_until")
        if since is None or until is None:
            return None, None
        profiles = {f"{SERVER}/{i}": profile for i, (_, profile) in enumerate(self.scenario.profiles())}
        # A minute before the hold-out too: the informed oracle needs what was in flight at its first calls
        rows = load_rows(self.data_dir, since=since - _IN_FLIGHT_LEAD_S, until=until + 1e-3)
        holdout = [row for row in rows if row["ts"] >= since]
        return p50_mae_floor(holdout, profiles), p50_mae_informed(rows, since, profiles)

    async def _wait_weights(self, source: str) -> dict[str, Any]:
        """Until the worker publishes weights from ``source`` and the proxy shows them (bounded); for the
        latency model, also until it covers the tools of most of the traffic (bounded again).

        Rounds of settle traffic run meanwhile (the learner must keep seeing calls). The proxy counts
        as showing them when ``/admin/upstreams`` names the source; the row's routing share (from the
        events) then says what really decided each measured call.
        """
        from only1mcp.jobs.sim.loadgen import run_open_loop
        from only1mcp.jobs.sim.workload import DEFAULT_WORKLOAD, Workload, open_loop_schedule

        args, watcher = self.args, self.watcher
        assert watcher is not None
        began, since = time.perf_counter(), time.time()
        workload = Workload.from_dict(DEFAULT_WORKLOAD)
        rate = args.utilisation * self.scenario.capacity(self.mix)
        rounds, shown_at = 0, None
        coverage = 0.0
        while True:
            published = watcher.seen(source, since)
            if published is not None and shown_at is None:
                admin = json.dumps(await _admin_upstreams(self.proxy_url))
                if source in admin:
                    shown_at = time.perf_counter()
            if shown_at is not None:
                coverage = self._coverage(source, time.time() - 3.0)
                enough = source != "latency_model" or coverage >= args.model_coverage
                if enough or time.perf_counter() - shown_at > args.coverage_timeout:
                    return {"status": "ok", "after_s": round(time.perf_counter() - began, 2),
                            "shown_after_s": round(shown_at - began, 2), "settle_rounds": rounds,
                            "traffic_share_covered": round(coverage, 3), "first_record": published}
            if not self.worker.alive():
                return {"status": "failed", "reason": f"the worker exited with code {self.worker.popen.returncode}"}
            if time.perf_counter() - began > args.weights_timeout:
                others = Counter(r["source"] or "?" for r in watcher.records if r["at"] >= since)
                what = (f"published only {dict(others)}" if others else "published no routing weights")
                if published is not None:
                    what = f"published {source} weights but the proxy's /admin/upstreams never showed them"
                return {"status": "not available", "reason": f"the worker {what} within {args.weights_timeout:g}s "
                                                             f"(source {source} wanted; {rounds} settle rounds)"}
            rounds += 1  # a short round of settle traffic at the scenario's rate, then look again
            schedule = open_loop_schedule(workload, f"{self.settle_seed}:{rounds}", args.sessions, rate, 3.0)
            await run_open_loop(self.proxy_url, schedule, args.sessions, args.timeout + 1.0)

    async def _wait_shown(self, source: str, budget_s: float) -> bool:
        """Until the (new) proxy's /admin/upstreams names ``source`` (bounded); whether it did."""
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline:
            if source in json.dumps(await _admin_upstreams(self.proxy_url)):
                return True
            await asyncio.sleep(0.2)
        return False

    def _coverage(self, source: str, since: float) -> float:
        """Share of the traffic (by the workload's tool mix) whose tool ``source`` published weights for."""
        assert self.watcher is not None
        recent = [r for r in self.watcher.records if r["at"] >= since and r["source"] == source]
        if any(r["tool"] is None for r in recent):
            return 1.0
        tools = {r["tool"] for r in recent}
        total = sum(self.mix.values())
        return sum(w for t, w in self.mix.items() if t in tools) / total if total else 0.0


def _start_fleet(procs: ProcessGroup, run_dir: Path, scenario: Any, ports: list[int], seed: Any, epoch: float,
                 name: str) -> tuple[Managed, list[dict[str, Any]]]:
    specs = [{"port": port, "replica_id": rid, "profile": raw, "seed": seed, "epoch": epoch}
             for (rid, raw), port in zip(scenario.replicas, ports)]
    spec_file = run_dir / f"{name}.json"
    spec_file.write_text(json.dumps(specs))
    proc = procs.start(name, [sys.executable, "-m", "only1mcp.jobs.sim.server_cli", "--fleet", str(spec_file)])
    return proc, specs


def _died(name: str, proc: Managed, when: str) -> dict[str, Any]:
    return {"status": "died", "reason": f"{name} exited with code {proc.popen.returncode} {when}",
            "log_tail": proc.log_tail(20)}


async def _wait_group(bootstrap: str, group: str, worker: Managed, timeout_s: float) -> float | None:
    """Seconds until the worker's consumer group is stable (None: not within the timeout; we go on)."""
    from only1mcp.infra.broker import group_state

    began = time.perf_counter()
    while time.perf_counter() - began < timeout_s and worker.alive():
        with contextlib.suppress(Exception):
            if await group_state(bootstrap, group) == "Stable":
                return round(time.perf_counter() - began, 2)
        await asyncio.sleep(0.3)
    return None


async def _admin_upstreams(proxy_url: str) -> Any:
    from only1mcp.jobs.bench._loadgen import new_http_client

    try:
        async with new_http_client(5.0) as http:
            async with http.get(proxy_url.rsplit("/", 1)[0] + "/admin/upstreams") as resp:
                return await resp.json(content_type=None)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if hasattr(value, "__dict__"):
            return {k: _jsonable(v) for k, v in vars(value).items() if not k.startswith("_")}
        return str(value)
