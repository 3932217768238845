"""``only1mcp bench stream``: the streaming half's throughput, freshness and offline SQL speed.

One run measures three things and prints a table and the bars:

1. **Worker throughput on one core.** An embedded broker (tansu) and a private Redis
   (``ensure_redis(None)``) start, ``mcp.requests`` is created with ``--partitions`` partitions and
   filled with ``--events`` synthetic request events (a fleet of 8 replicas, lognormal latencies,
   ~3 % failures, cache hits, sessions; timestamps as a fleet sending ``--backlog-rate`` events/s
   would have made them, ending two minutes ago, so every window can close and every offset can
   be committed: the worker acknowledges an event only once its windows are closed and written),
   *then* ``only1mcp worker`` starts
   pinned to one CPU (the benchmark, broker and Redis stay on the others). Done = the consumer
   group's lag is 0 on every partition and DuckDB counts every event id in the Parquet dataset.
   Start-up (process start, imports, the group join, which tansu holds for seconds) is excluded:
   the clock starts at the worker's first flush (the first raw Parquet file's mtime), and the
   events that flush wrote are not counted. Lag 0 is seen only after Faust's next offset commit
   (every 2.8 s by default), so the figure is a slight underestimate; the rate until the Parquet
   dataset is complete is reported beside it.
2. **Event→Redis freshness.** The same worker, now caught up, gets ``--rate`` events/s for
   ``--duration`` s, each stamped ``ts`` = send time. Every ``--probe-every``-th event carries a
   session id of its own; a poller reads ``<prefix>:f:session:<id>:10s`` (the online store's key
   layout) every 10 ms, and the first time it exists is when that event is visible in Redis.
   The hash's ``updated_at`` (when the worker wrote it) is reported too.
3. **``only1mcp features sql`` over ``--sql-events`` events**, written straight to Parquet in the
   offline store's layout (one sorted file per hour partition, as after ``features compact``):
   a per-replica p99 latency query, as a subprocess (``--format csv``, wall time with Python's
   start-up) and in-process through the Python API (``connect`` + ``con.sql``: the query alone).
   The same query over ``requests_raw`` is measured too, to show what the deduplication costs;
   then the newest hour is rewritten as 300 micro-batch files with 1 % replayed rows (what the
   worker leaves between two compactions without merges) and the ``requests`` query measured
   again; then all but the newest 30 of those files are merged with the worker's own merge
   (what it leaves just before its next merge) and the query measured once more. The bar is on
   the slower of the compacted and the merged ``requests`` queries (the deduplicated view that
   queries should use); the unmerged figure is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._procs import ProcessGroup, run_interruptibly
from only1mcp.jobs.bench._report import Bar, machine_info, publish, render_bars, render_table

__all__ = ["DEFAULT_OUT", "QUERY", "add_arguments", "run"]

DEFAULT_OUT = "bench-results/stream.json"
QUERY = ("SELECT replica, count(*) AS requests, round(quantile_cont(latency_ms, 0.99), 2) AS p99_latency_ms "
         "FROM {view} WHERE replica IS NOT NULL GROUP BY replica ORDER BY replica")
_PIN = "import os,sys\nos.sched_setaffinity(0,{int(sys.argv[1])})\nos.execv(sys.argv[2],sys.argv[2:])\n"
_QUICK = {"events": 20_000, "duration": 5.0, "sql_events": 1_000_000, "repeats": 2}
_CONFIG = """\
[worker]
bootstrap = "{bootstrap}"
group = "{group}"
partitions = {partitions}

[store]
redis_url = "{redis_url}"
key_prefix = "{prefix}"
data_dir = "{data_dir}"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="backlog for the throughput run (default 200000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of mcp.requests (default 4)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the freshness run (default 1000)")
    parser.add_argument("--backlog-rate", type=float, default=None,
                        help="events/s of the fleet whose history the backlog is: sets its time span (default --rate)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the freshness run (default 20)")
    parser.add_argument("--probe-every", type=int, default=20, help="every Nth live event is a probe (default 20)")
    parser.add_argument("--sql-events", type=int, default=10_000_000, help="events in the SQL dataset (default 10M)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each SQL measurement (default 3)")
    parser.add_argument("--core", type=int, default=None, help="CPU the worker is pinned to (default: the first)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for the throughput run")
    parser.add_argument("--quick", action="store_true",
                        help="small run for tests: 20k events, 5 s of freshness, 1M events for SQL, 2 repeats")
    parser.add_argument("--profile", metavar="FILE",
                        help="py-spy record the worker during the throughput run, sampling the thread that holds "
                             "the GIL (.svg flamegraph, .json speedscope, else raw collapsed stacks)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every bar passes")


def _bars(sql_events: int) -> list[Bar]:
    size = f"{sql_events / 1e6:g}M"
    return [
        Bar("worker_events_per_s", "worker throughput on one core", ">=", 5000.0, " ev/s"),
        Bar("freshness_p99_s", "event→Redis freshness p99", "<=", 2.0, " s"),
        Bar("features_sql_query_s", f"features sql per-replica p99 over {size} events (query)", "<=", 1.0, " s"),
    ]


def run(args: argparse.Namespace) -> int:
    if args.quick:
        for name, value in _QUICK.items():
            if getattr(args, name) == _default(name):
                setattr(args, name, value)
    if args.backlog_rate is None:
        args.backlog_rate = args.rate
    if min(args.events, args.partitions, args.sql_events, args.repeats, args.probe_every) < 1 or args.rate <= 0 \
            or args.duration <= 0 or args.backlog_rate <= 0:
        print("error: counts must be >= 1, rates and --duration > 0", file=sys.stderr)
        return 2
    environ = dict(getattr(args, "environ", None) or os.environ)
    for name in ("KAFKA_BOOTSTRAP", "REDIS_URL"):  # they would override the benchmark's own addresses
        environ.pop(name, None)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info(["faust-streaming", "aiokafka", "duckdb", "pyarrow", "redis", "ddsketch", "only1mcp"])
    cpus = sorted(os.sched_getaffinity(0))
    core = cpus[0] if args.core is None else args.core
    if core not in cpus:
        print(f"error: --core {core} is not one of the usable CPUs {cpus}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        stream = _run_stream(args, environ, core, [c for c in cpus if c != core] or cpus)
        print("measuring features sql …", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="only1mcp-bench-sql-") as tmp:
            from only1mcp.jobs.bench._stream_data import merge_newest_hour, split_newest_hour, write_dataset
            from only1mcp.jobs.bench._stream_measure import sql

            dataset = write_dataset(Path(tmp), args.sql_events)
            views = {view: sql(Path(tmp), QUERY.format(view=view), args.repeats, environ)
                     for view in ("requests", "requests_raw")}
            views["floor"] = sql(Path(tmp), "SELECT 1 AS one", args.repeats, environ)
            dataset["split"] = split_newest_hour(Path(tmp))
            views["requests_split"] = sql(Path(tmp), QUERY.format(view="requests"), args.repeats, environ)
            dataset["merged"] = merge_newest_hour(Path(tmp))
            views["requests_merged"] = sql(Path(tmp), QUERY.format(view="requests"), args.repeats, environ)
    except KeyboardInterrupt:
        print("interrupted: broker, Redis and worker stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a component that did not start or a run that did not finish: say which
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report = _assemble(args, stream, {"dataset": dataset, **views}, machine, started_at, core, cpus)
    report["wall_s"] = round(time.perf_counter() - began, 2)
    return publish(report, args.out, args.strict)


def _default(name: str) -> Any:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.get_default(name)


def _run_stream(args: argparse.Namespace, environ: dict[str, str], core: int, others: list[int]) -> dict[str, Any]:
    """Parts 1 and 2: broker, Redis and the benchmark on ``others``, the worker alone on ``core``."""
    from only1mcp.events import TOPICS
    from only1mcp.infra.broker import EmbeddedBroker
    from only1mcp.infra.redis import ensure_redis

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, others)  # children (broker, Redis) inherit it
    try:
        with tempfile.TemporaryDirectory(prefix="only1mcp-bench-stream-") as tmp, EmbeddedBroker() as broker, \
                ensure_redis(None) as redis_handle, ProcessGroup(Path(tmp), env=environ) as procs:
            broker.create_topics([TOPICS["requests"], TOPICS["dead_letter"]], args.partitions)
            return run_interruptibly(_stream(args, broker.bootstrap, redis_handle.url, procs, Path(tmp), core))
    finally:
        os.sched_setaffinity(0, previous)


async def _stream(args: argparse.Namespace, bootstrap: str, redis_url: str, procs: ProcessGroup, tmp: Path,
                  core: int) -> dict[str, Any]:
    from only1mcp.jobs.bench._stream_data import backlog
    from only1mcp.jobs.bench._stream_measure import freshness, produce, throughput
    from only1mcp.streaming import WorkerSettings

    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr
    end_ts = time.time() - 120.0
    log(f"generating {args.events} events …")
    records = await asyncio.to_thread(backlog, args.events, end_ts - args.events / args.backlog_rate, end_ts)
    produce_s, ends = await produce(bootstrap, records)
    del records
    if sum(ends.values()) != args.events:
        raise RuntimeError(f"the topic holds {sum(ends.values())} records, expected {args.events}")
    group, prefix, data_dir = f"bench-stream-{uuid.uuid4().hex[:8]}", "bench", tmp / "data"
    config = tmp / "worker.toml"
    config.write_text(_CONFIG.format(bootstrap=bootstrap, group=group, partitions=args.partitions,
                                     redis_url=redis_url, prefix=prefix, data_dir=data_dir))
    argv = [sys.executable, "-c", _PIN, str(core), sys.executable, "-m", "only1mcp.cli", "worker",
            "--config", str(config)]
    log(f"{args.events} events produced in {produce_s:.2f}s; worker starting on CPU {core} …")
    spawned = time.time()
    worker = procs.start("worker", argv)
    spy = await _py_spy(args.profile, worker.pid, tmp) if args.profile else None
    try:
        try:
            rate = await throughput(bootstrap, group, data_dir, args.events, ends, spawned, worker.alive,
                                    worker.cpu_seconds, args.timeout)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
                await asyncio.to_thread(spy.wait, 60)
        log(f"throughput: {rate['events_per_s']} events/s; freshness at {args.rate:g} events/s for {args.duration:g}s …")
        fresh = await freshness(bootstrap, redis_url, prefix, args.rate, args.duration, args.probe_every)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}\nworker log:\n{worker.log_tail(30)}") from None
    if not worker.alive():
        raise RuntimeError(f"the worker exited during the freshness run:\n{worker.log_tail(30)}")
    return {"throughput": {**rate, "produce_s": round(produce_s, 3),
                           "produce_events_per_s": round(args.events / produce_s, 1), "worker_core": core,
                           "flush_interval_s": WorkerSettings().flush_interval, "group": group},
            "freshness": fresh}


async def _py_spy(path: str, pid: int, tmp: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` on ``pid`` until SIGINT (py-spy next to this Python, or on PATH), attached
    once the launchers have exec'ed into the worker (py-spy loses a process that execs)."""
    beside = Path(sys.executable).with_name("py-spy")
    binary = str(beside) if beside.exists() else shutil.which("py-spy")
    if binary is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    deadline = time.monotonic() + 10.0
    while b"only1mcp.cli" not in Path(f"/proc/{pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # the interpreter up and running
    suffix = Path(path).suffix.lower()
    form = {".svg": "flamegraph", ".json": "speedscope"}.get(suffix, "raw")
    with open(tmp / "py-spy.log", "wb") as log:
        return subprocess.Popen([binary, "record", "--pid", str(pid), "--output", path, "--format", form,
                                 "--rate", "100", "--nonblocking", "--gil"], stdout=log, stderr=subprocess.STDOUT)


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _assemble(args: argparse.Namespace, stream: dict[str, Any], sql: dict[str, Any], machine: dict[str, Any],
              started_at: datetime.datetime, core: int, cpus: list[int]) -> dict[str, Any]:
    tp, fr = stream["throughput"], stream["freshness"]
    dedup, raw, split, merged = sql["requests"], sql["requests_raw"], sql["requests_split"], sql["requests_merged"]
    bars = _bars(args.sql_events)
    bars[0].judge(tp["events_per_s"], f"{tp['measured_events']:,} events, first flush → lag 0 on all partitions")
    missing = f"{fr['probes_missing']} probes never seen" if fr["probes_missing"] else ""
    bars[1].judge(fr["visible_s"]["p99"], missing or f"{fr['probes_seen']} probes at {fr['rate_achieved']:g} ev/s")
    worst = max(dedup["query_s"]["median"], merged["query_s"]["median"])
    bars[2].judge(worst, f"view requests, the slower of compacted ({dedup['query_s']['median']:.2f} s) and newest hour "
                  f"as the worker leaves it, {sql['dataset']['merged']['files']} files ({merged['query_s']['median']:.2f} s)")
    size = f"{args.sql_events / 1e6:g}M"
    rows: list[list[str] | str] = [
        ["worker throughput, 1 core", f"{_fmt(tp['events_per_s'])} ev/s",
         f"{tp['measured_events']:,} events in {tp['measured_s']:.2f} s (first flush → lag 0)"],
        ["  until Parquet complete", f"{_fmt(tp['events_per_s_to_parquet'])} ev/s",
         f"lag 0 seen {tp['lag0_after_parquet_s']:.2f} s later (offset commits)"],
        ["  including start-up", f"{_fmt(tp['events_per_s_including_startup'])} ev/s",
         f"start-up {tp['startup_s']:.2f} s to the first flush ({tp['first_flush_events']:,} events)"],
        ["  per CPU-second", f"{_fmt(tp['events_per_cpu_s'])} ev/s",
         f"worker used {_fmt(tp['worker_cpu_pct_of_core'], '.0f')} % of CPU {core}; {tp['raw_files']} raw files"],
        ["freshness p50", f"{fr['visible_s']['p50']:.3f} s" if fr["visible_s"]["p50"] is not None else "-",
         f"{fr['probes_seen']}/{fr['probes']} probes, {fr['rate_achieved']:g} ev/s for {fr['duration_s']:g} s"],
        ["freshness p99", f"{fr['visible_s']['p99']:.3f} s" if fr["visible_s"]["p99"] is not None else "-",
         f"max {_fmt(fr['visible_s']['max'], '.3f')} s; written p99 {_fmt(fr['written_s']['p99'], '.3f')} s"],
        [f"features sql CLI ({size})", f"{dedup['cli_wall_s']['median']:.3f} s",
         f"requests view, --format csv, median of {args.repeats}, Python start-up included"],
        [f"features sql query ({size})", f"{dedup['query_s']['median']:.3f} s",
         f"requests view, in-process; connect {dedup['connect_s']:.3f} s"],
        [f"  over requests_raw ({size})", f"{raw['query_s']['median']:.3f} s",
         f"no dedupe; CLI {raw['cli_wall_s']['median']:.3f} s"],
        ["  newest hour uncompacted", f"{merged['query_s']['median']:.3f} s",
         f"requests view; that hour merged + {sql['dataset']['merged']['files'] - 1} micro-batch files with replays; "
         f"CLI {merged['cli_wall_s']['median']:.3f} s"],
        ["    without merges", f"{split['query_s']['median']:.3f} s",
         f"that hour as {sql['dataset']['split']['files']} micro-batch files (merge_interval = 0); "
         f"CLI {split['cli_wall_s']['median']:.3f} s"],
        ["  CLI floor (SELECT 1)", f"{sql['floor']['cli_wall_s']['median']:.3f} s",
         "Python start-up, imports, views over the dataset"],
    ]
    title = (f"stream benchmark: {args.events:,} events backlog, {args.partitions} partitions, worker on CPU {core} "
             f"of {cpus}, {args.rate:g} ev/s live for {args.duration:g} s, SQL over {args.sql_events:,} events "
             f"({sql['dataset']['files']} files, written in {sql['dataset']['seconds']:.1f} s), "
             f"Python {machine['python_version']}")
    title += f"; backlog produced at {_fmt(tp['produce_events_per_s'])} ev/s"
    text = "\n".join([title, "", render_table(["measurement", "value", "detail"], rows), "", render_bars(bars)])
    return {
        "benchmark": "stream",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {"events": args.events, "partitions": args.partitions, "rate": args.rate,
                     "duration_s": args.duration, "probe_every": args.probe_every, "sql_events": args.sql_events,
                     "repeats": args.repeats, "quick": args.quick, "worker_core": core, "cpus": cpus,
                     "backlog_rate": args.backlog_rate, "profile": args.profile},
        "machine": {**machine, "load_average_end": machine_info()["load_average"]},
        "throughput": tp,
        "freshness": fr,
        "sql": sql,
        "bars": [bar.to_json() for bar in bars],
        "_text": text,
    }
