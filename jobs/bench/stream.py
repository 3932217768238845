"""``only1mcp bench stream``: the streaming half's throughput, freshness and offline SQL speed.

One run measures three things and prints a table and the bars:

1. **Worker throughput**, per *cell*: a broker (``--broker``: ``embedded``, the tansu broker, and/or
   ``kafka``, Apache Kafka as one KRaft node, ``infra/kafka.py``) × a worker count
   (``--workers``). Each cell gets a fresh broker, a fresh consumer group and a fresh data dir
   (topic names are fixed, so nothing is shared between cells but the generated backlog and one
   private Redis, ``ensure_redis(None)``, with a key prefix per cell). ``mcp.requests``,
   ``mcp.dead-letter`` and ``mcp.feature-events`` are created with ``--partitions`` partitions;
   ``mcp.requests`` is filled with ``--events`` synthetic request events (a fleet of 8 replicas,
   lognormal latencies, ~3 % failures, cache hits, sessions; timestamps as a fleet sending
   ``--backlog-rate`` events/s would have made them, ending two minutes before the backlog was
   generated — once per run, so later cells see it a little older, which changes nothing: every
   window can close and every offset can be committed, the worker acknowledging a record only
   once its windows are closed and written), *then* N ``only1mcp worker`` processes start. One
   worker is pinned to one CPU (the benchmark, broker and Redis stay on the others); several
   share every CPU (this machine has two: pinning one per core would leave the broker none), so
   compare their **events per CPU-second** (the workers' CPU seconds summed, from /proc) beside
   the wall-clock events/s. Done = every event id in Parquet (DuckDB), the group's lag 0 on
   ``mcp.requests`` and on ``mcp.feature-events`` (the internal topic the worker forwards events
   to, re-keyed by entity: its log end read once ``mcp.requests`` is drained), and every
   partition's watermark file past the backlog's last window (jobs/bench/_stream_measure.py has
   every figure and what it meant before the two-stage worker). Start-up (process start, imports,
   the group join, which tansu holds for seconds) is excluded: the clock starts at the first
   flush (the first raw Parquet file's mtime), and the events that flush wrote are not counted;
   with several workers the joins and rebalances after that flush are part of the figure (when
   the group was first stable with every worker is recorded). Lag 0 is seen only after an offset
   commit, so the figure is a slight underestimate; the rates until the Parquet dataset is
   complete and until the windows are written are reported beside it.
2. **Event→Redis freshness**, per cell: the same workers, now caught up, get ``--rate`` events/s
   for ``--duration`` s, each stamped ``ts`` = send time. Every ``--probe-every``-th event
   carries a session id of its own; a poller reads ``<prefix>:f:session:<id>:10s`` (the online
   store's key layout) every 10 ms, and the first time it exists is when that event is visible
   in Redis. The hash's ``updated_at`` (when the worker wrote it) is reported too, and the slowest
   probe of every second of the run (a slow stretch shows when it happened). The run starts once
   the worker's merge of small Parquet files (every ``merge_interval``, 30 s, since its start) has
   taken the files of the backlog — after a long backlog the first merge rewrites all of it and
   holds a single core for seconds — and every worker has then been quiet (under 25 % of a core)
   for a second (``--quick`` does not wait for the merge: its small backlog merges in a blink).
   The workers run with
   ``[learning] retrain_interval = 0`` unless ``--retrain``: the routing agent still learns from
   every event, but trains no latency model, whose first arming (60 s after the start) replays up
   to 50,000 stored calls in a thread and holds the loop back for seconds — with a 200k backlog
   that fell inside the freshness run, with 20k it did not.
3. **``only1mcp features sql`` over ``--sql-events`` events**, once per run, written straight to
   Parquet in the offline store's layout (one sorted file per hour partition, as after
   ``features compact``): a per-replica p99 latency query, as a subprocess (``--format csv``,
   wall time with Python's start-up) and in-process through the Python API (``connect`` +
   ``con.sql``: the query alone). The same query over ``requests_raw`` is measured too, to show
   what the deduplication costs; then the newest hour is rewritten as 300 micro-batch files with
   1 % replayed rows (what the worker leaves between two compactions without merges) and the
   ``requests`` query measured again; then all but the newest 30 of those files are merged with
   the worker's own merge (what it leaves just before its next merge) and the query measured
   once more. The bar is on the slower of the compacted and the merged ``requests`` queries (the
   deduplicated view that queries should use); the unmerged figure is printed beside them.

The bars: throughput ≥ 5000 events/s and freshness p99 ≤ 2 s on the *reference cell* — the
embedded broker with one worker when the run has it, else the first cell (the throughput bar is
skipped when that cell has several workers: it is a one-core bar) — and the SQL query ≤ 1 s. The
JSON keeps the reference cell's figures under ``throughput`` and ``freshness`` (as before cells
existed) and every cell under ``cells``. A cell that fails (a worker exits, a timeout) is
recorded with its error and the run goes on; the command then exits 1. ``--retries N`` runs a
failed cell again (a fresh broker), keeping the failures in the cell and the table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import math
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

from only1mcp.jobs.bench._procs import Managed, ProcessGroup, run_interruptibly
from only1mcp.jobs.bench._report import Bar, machine_info, publish, render_bars, render_table
from only1mcp.jobs.bench.stream_table import cell_rows, events_cell, reference_cell, scaling_between

__all__ = ["DEFAULT_OUT", "QUERY", "BROKERS", "add_arguments", "run"]

DEFAULT_OUT = "bench-results/stream.json"
QUERY = ("SELECT replica, count(*) AS requests, round(quantile_cont(latency_ms, 0.99), 2) AS p99_latency_ms "
         "FROM {view} WHERE replica IS NOT NULL GROUP BY replica ORDER BY replica")
BROKERS = ("embedded", "kafka")
_PIN = "import os,sys\nos.sched_setaffinity(0,[int(c) for c in sys.argv[1].split(',')])\nos.execv(sys.argv[2],sys.argv[2:])\n"
_QUICK = {"events": 20_000, "duration": 5.0, "sql_events": 1_000_000, "repeats": 1}
_CONFIG = """\
[worker]
bootstrap = "{bootstrap}"
group = "{group}"
partitions = {partitions}

[store]
redis_url = "{redis_url}"
key_prefix = "{prefix}"
data_dir = "{data_dir}"
{learning}"""
# Without --retrain: the routing agent learns from every event as always, but trains no latency
# model. Its first retraining (60 s after start, once the store holds 2,000 calls) arms the model by
# replaying up to 50,000 stored calls in a thread, which starves the worker's loop of the GIL for
# seconds: whether the freshness run overlaps it would depend on how long the backlog took.
_QUIET_SHARE, _QUIET_MAX_S = 0.25, 60.0  # before the freshness run: each worker under 25 % of a core for 1 s
_NO_RETRAIN = "\n[learning]\nretrain_interval = 0\n"


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # progress on stderr


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", nargs="+", choices=BROKERS, default=["embedded"], metavar="BROKER",
                        help="broker(s) to measure on, each cell with a fresh one: embedded (tansu) and/or kafka "
                             "(Apache Kafka, one KRaft node); both given = side by side in one table "
                             "(default embedded)")
    parser.add_argument("--workers", nargs="+", type=int, default=[1], metavar="N",
                        help="worker counts, a cell each per broker (default 1): one worker is pinned to one CPU, "
                             "several share every CPU")
    parser.add_argument("--events", type=int, default=200_000, help="backlog for the throughput run (default 200000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of mcp.requests (default 4)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the freshness run (default 1000)")
    parser.add_argument("--backlog-rate", type=float, default=None,
                        help="events/s of the fleet whose history the backlog is: sets its time span (default --rate)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the freshness run (default 20)")
    parser.add_argument("--probe-every", type=int, default=20, help="every Nth live event is a probe (default 20)")
    parser.add_argument("--sql-events", type=int, default=10_000_000, help="events in the SQL dataset (default 10M)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each SQL measurement (default 3)")
    parser.add_argument("--core", type=int, default=None, help="CPU a single worker is pinned to (default: the first)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for each throughput run")
    parser.add_argument("--quick", action="store_true",
                        help="small run for tests: 20k events, 5 s of freshness, 1M events for SQL, 1 repeat")
    parser.add_argument("--profile", metavar="FILE",
                        help="py-spy record the (first) worker during each throughput run, sampling the thread that "
                             "holds the GIL (.svg flamegraph, .json speedscope, else raw collapsed stacks); with "
                             "several cells, FILE gets -<broker>-<N>w before its suffix")
    parser.add_argument("--retries", type=int, default=0,
                        help="run a failed cell again up to this many times, on a fresh broker (default 0); the "
                             "failures are kept in the cell and counted in the table")
    parser.add_argument("--retrain", action="store_true",
                        help="keep the worker's retraining of the latency model (first 60 s after its start; off by "
                             "default: arming the first model replays 50,000 stored calls in a thread and holds the "
                             "worker's loop back for seconds, so freshness would depend on when that falls)")
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
    args.broker = list(dict.fromkeys(args.broker))
    args.workers = list(dict.fromkeys(args.workers))
    if min(args.events, args.partitions, args.sql_events, args.repeats, args.probe_every, *args.workers) < 1 \
            or args.retries < 0 or args.rate <= 0 or args.duration <= 0 or args.backlog_rate <= 0:
        print("error: counts (and --workers) must be >= 1, rates and --duration > 0", file=sys.stderr)
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
        cells = _run_cells(args, environ, core, [c for c in cpus if c != core] or cpus, cpus)
        _log("measuring features sql …")
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
        print("interrupted: brokers, Redis and workers stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a component that did not start or a run that did not finish: say which
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report = _assemble(args, cells, {"dataset": dataset, **views}, machine, started_at, core, cpus)
    report["wall_s"] = round(time.perf_counter() - began, 2)
    code = publish(report, args.out, args.strict)
    failed = [f"{c['broker']} × {c['workers']}" for c in cells if c.get("error")]
    if failed:
        print(f"error: {len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return code


def _default(name: str) -> Any:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.get_default(name)


def _run_cells(args: argparse.Namespace, environ: dict[str, str], core: int, others: list[int],
               cpus: list[int]) -> list[dict[str, Any]]:
    """Parts 1 and 2 for every (broker, workers) cell: the backlog generated once, one Redis; per cell
    a fresh broker, group and data dir. Brokers, Redis and the benchmark run on ``others``."""
    from only1mcp.infra.redis import ensure_redis
    from only1mcp.jobs.bench._stream_data import backlog

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, others)  # children (brokers, Redis) inherit it
    try:
        end_ts = time.time() - 120.0
        _log(f"generating {args.events} events …")
        records = backlog(args.events, end_ts - args.events / args.backlog_rate, end_ts)
        cells: list[dict[str, Any]] = []
        with ensure_redis(None) as redis_handle:
            for kind in args.broker:
                for workers in args.workers:
                    failures: list[str] = []
                    for _attempt in range(1 + args.retries):  # a failed cell again, on a fresh broker
                        cell = _run_cell(args, environ, kind, workers, records, end_ts, redis_handle.url, core,
                                         cpus, several=len(args.broker) * len(args.workers) > 1)
                        if not cell.get("error"):
                            break
                        failures.append(cell["error"])
                    if failures and not cell.get("error"):
                        cell["failed_attempts"] = failures  # shown in the table: a retried cell is not hidden
                    cells.append(cell)
        return cells
    finally:
        os.sched_setaffinity(0, previous)


def _broker(kind: str) -> Any:
    if kind == "kafka":
        from only1mcp.infra.kafka import KafkaCluster

        return KafkaCluster(1)
    from only1mcp.infra.broker import EmbeddedBroker

    return EmbeddedBroker()


def _broker_pid(broker: Any) -> int | None:
    process = getattr(broker, "process", None)  # EmbeddedBroker
    if process is None and getattr(broker, "nodes", None):  # KafkaCluster: its only node
        process = next(iter(broker.nodes.values())).process
    return None if process is None else process.pid


def _pid_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process (Linux /proc; NaN when unknown or gone)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU ``cpu`` has been busy with anything since boot (/proc/stat: all but idle and
    iowait), to show how much of the machine other work took during a cell."""
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith(f"cpu{cpu} "):
                    ticks = [int(x) for x in line.split()[1:]]
                    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def _run_cell(args: argparse.Namespace, environ: dict[str, str], kind: str, workers: int,
              records: list[tuple[bytes | None, bytes]], end_ts: float, redis_url: str, core: int,
              cpus: list[int], several: bool) -> dict[str, Any]:
    from only1mcp.events import TOPICS

    label = f"{kind}, {workers} worker{'s' if workers > 1 else ''}"
    _log(f"cell {label}: starting the broker …")
    cell: dict[str, Any] = {"broker": kind, "workers": workers}
    began = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="only1mcp-bench-stream-") as tmp, _broker(kind) as broker, \
                ProcessGroup(Path(tmp), env=environ) as procs:
            broker.create_topics([TOPICS["requests"], TOPICS["dead_letter"], TOPICS["feature_events"]],
                                 args.partitions)
            profile = _profile_path(args.profile, kind, workers) if several else args.profile
            cell.update(run_interruptibly(_cell(args, kind, workers, broker, records, end_ts, redis_url, procs,
                                                Path(tmp), core, cpus, profile)))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded; the other cells still run
        cell["error"] = f"{type(exc).__name__}: {exc}"
        _log(f"cell {label} failed: {cell['error']}")
    cell["wall_s"] = round(time.perf_counter() - began, 2)
    return cell


def _profile_path(path: str | None, kind: str, workers: int) -> str | None:
    if not path:
        return None
    target = Path(path)
    return str(target.with_name(f"{target.stem}-{kind}-{workers}w{target.suffix}"))


async def _cell(args: argparse.Namespace, kind: str, workers: int, broker: Any,
                records: list[tuple[bytes | None, bytes]], end_ts: float, redis_url: str, procs: ProcessGroup,
                tmp: Path, core: int, cpus: list[int], profile: str | None) -> dict[str, Any]:
    from only1mcp.feature_store.compute import parse_window
    from only1mcp.jobs.bench._stream_measure import freshness, produce, throughput
    from only1mcp.streaming import WorkerSettings

    bootstrap = broker.bootstrap
    produce_s, ends = await produce(bootstrap, records)
    if sum(ends.values()) != args.events:
        raise RuntimeError(f"the topic holds {sum(ends.values())} records, expected {args.events}")
    group, prefix, data_dir = f"bench-stream-{uuid.uuid4().hex[:8]}", f"bench-{kind}-{workers}", tmp / "data"
    config = tmp / "worker.toml"
    config.write_text(_CONFIG.format(bootstrap=bootstrap, group=group, partitions=args.partitions,
                                     redis_url=redis_url, prefix=prefix, data_dir=data_dir,
                                     learning="" if args.retrain else _NO_RETRAIN))
    pinned = [core] if workers == 1 else cpus
    argv = [sys.executable, "-c", _PIN, ",".join(map(str, pinned)), sys.executable, "-m", "only1mcp.cli", "worker",
            "--config", str(config)]
    settings = WorkerSettings()
    largest_ms = max(parse_window(w).size_ms for w in (*settings.tumbling, *settings.hopping))
    closed_by_ms = math.ceil(end_ts * 1000) + largest_ms  # the end of the last window holding a backlog event
    where = f"CPU {core}" if workers == 1 else f"CPUs {cpus} (shared)"
    _log(f"{args.events} events produced in {produce_s:.2f}s; {workers} worker(s) starting on {where} …")
    spawned = time.time()
    started: list[Managed] = [procs.start("worker" if workers == 1 else f"worker-{i}", argv) for i in range(workers)]
    broker_pid = _broker_pid(broker)
    spy = await _py_spy(profile, started[0].pid, tmp) if profile else None

    def tails() -> str:
        return "\n".join(f"{w.name} log:\n{w.log_tail(30)}" for w in started)

    try:
        try:
            rate = await throughput(bootstrap, group, data_dir, args.events, ends, spawned,
                                    lambda: all(w.alive() for w in started),
                                    lambda: [w.cpu_seconds() for w in started], args.timeout,
                                    entity_partitions=args.partitions, closed_by_ms=closed_by_ms, workers=workers,
                                    others_cpu={"broker": lambda: _pid_cpu_seconds(broker_pid),
                                                **{f"cpu{c}": functools.partial(_cpu_busy_seconds, c) for c in cpus}})
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
                await asyncio.to_thread(spy.wait, 60)
        _log(f"throughput: {rate['events_per_s']} events/s ({rate['events_per_cpu_s']} per CPU-second); "
             f"freshness at {args.rate:g} events/s for {args.duration:g}s …")
        merged_s = None if args.quick else await _wait_merged(data_dir, time.time(), settings.merge_interval + 15.0)
        quiet_s = await _wait_quiet(started)
        fresh_at = time.time()
        fresh = await freshness(bootstrap, redis_url, prefix, args.rate, args.duration, args.probe_every)
        fresh["waited_for_merge_s"] = merged_s  # None: --quick (a small backlog), or no merge seen in time
        fresh["waited_for_quiet_s"] = quiet_s  # None: still busy after _QUIET_MAX_S, measured anyway
        fresh["started_after_workers_s"] = round(fresh_at - spawned, 1)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}\n{tails()}") from None
    if not all(w.alive() for w in started):
        raise RuntimeError(f"a worker exited during the freshness run:\n{tails()}")
    return {"throughput": {**rate, "produce_s": round(produce_s, 3),
                           "produce_events_per_s": round(args.events / produce_s, 1),
                           "worker_core": core if workers == 1 else None, "worker_cpus": pinned,
                           "flush_interval_s": settings.flush_interval, "group": group, "broker": kind},
            "freshness": fresh, "profile": profile}


async def _wait_merged(data_dir: Path, done_at: float, timeout_s: float) -> float | None:
    """Wait until the worker's merge has taken the raw files written before ``done_at``: at most one
    of them left per hour partition (it merges every ``merge_interval`` since its start, so after a
    long backlog the first merge rewrites all of it). Seconds waited, or None after ``timeout_s``."""
    began = time.perf_counter()
    root = data_dir / "requests"
    while True:
        per_folder: dict[str, int] = {}
        for folder, _dirs, names in os.walk(root):
            for name in names:
                if name.endswith(".parquet") and not name.startswith("."):
                    try:
                        if os.stat(os.path.join(folder, name)).st_mtime <= done_at:
                            per_folder[folder] = per_folder.get(folder, 0) + 1
                    except FileNotFoundError:  # merged away meanwhile
                        continue
        if all(count <= 1 for count in per_folder.values()):
            return round(time.perf_counter() - began, 1)
        if time.perf_counter() - began >= timeout_s:
            return None
        await asyncio.sleep(0.25)


async def _wait_quiet(workers: list[Managed]) -> float | None:
    """Wait until every worker has used less than ``_QUIET_SHARE`` of a core for a whole second (its
    timers alone: marks, flushes, agent ticks), at most ``_QUIET_MAX_S``: after a long backlog a
    worker is still busy for a while (the merge of the backlog's small files, due every 30 s, then
    rewrites them all), and freshness is about a caught-up worker. Seconds waited, or None."""
    began = time.perf_counter()
    before = [w.cpu_seconds() for w in workers]
    while time.perf_counter() - began < _QUIET_MAX_S:
        await asyncio.sleep(1.0)
        now = [w.cpu_seconds() for w in workers]
        busy = [b - a for a, b in zip(before, now)]
        before = now
        if all(share < _QUIET_SHARE for share in busy):  # NaN (a worker gone) never counts as quiet
            return round(time.perf_counter() - began, 1)
    return None


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


def _assemble(args: argparse.Namespace, cells: list[dict[str, Any]], sql: dict[str, Any], machine: dict[str, Any],
              started_at: datetime.datetime, core: int, cpus: list[int]) -> dict[str, Any]:
    ref = reference_cell(cells)
    tp, fr = ref.get("throughput"), ref.get("freshness")
    dedup, raw, split, merged = sql["requests"], sql["requests_raw"], sql["requests_split"], sql["requests_merged"]
    bars = _bars(args.sql_events)
    where = f"{ref['broker']} broker"
    if tp is None or fr is None:
        bars[0].judge(None, f"{where}: {ref.get('error', 'not measured')}".splitlines()[0])
        bars[1].judge(None, f"{where}: {ref.get('error', 'not measured')}".splitlines()[0])
    else:
        if ref["workers"] == 1:
            bars[0].judge(tp["events_per_s"], f"{where}, {tp['measured_events']:,} events, first flush → lag 0 on "
                          "both topics, windows written")
        else:
            bars[0].judge(None, f"no one-worker cell in this run ({ref['workers']} workers on the {where})")
        missing = f"{fr['probes_missing']} probes never seen" if fr["probes_missing"] else ""
        bars[1].judge(fr["visible_s"]["p99"], missing or f"{where}, {ref['workers']} worker(s), {fr['probes_seen']} "
                      f"probes at {fr['rate_achieved']:g} ev/s")
    worst = max(dedup["query_s"]["median"], merged["query_s"]["median"])
    bars[2].judge(worst, f"view requests, the slower of compacted ({dedup['query_s']['median']:.2f} s) and newest hour "
                  f"as the worker leaves it, {sql['dataset']['merged']['files']} files ({merged['query_s']['median']:.2f} s)")
    size = f"{args.sql_events / 1e6:g}M"
    rows: list[list[str] | str] = []
    if tp is not None and fr is not None:
        one = ", 1 core" if ref["workers"] == 1 else f", {ref['workers']} workers"
        rows += [
            [f"worker throughput{one}", f"{events_cell(tp['events_per_s'])} ev/s",
             f"{tp['measured_events']:,} events in {tp['measured_s']:.2f} s (first flush → done: Parquet, lag 0 on "
             "both topics, windows written); " + where],
            ["  until windows written", f"{events_cell(tp['events_per_s_to_features'])} ev/s",
             f"last watermark file past the backlog {tp['to_features_s'] - tp['to_parquet_s']:.2f} s after the "
             f"last raw row; lag 0 on mcp.feature-events seen {tp['entity_lag0_after_features_s']:.2f} s later"],
            ["  stage 1 only", f"{events_cell(tp['events_per_s_stage1'])} ev/s",
             "lag 0 on mcp.requests + Parquet complete: what this row's figure meant before the two-stage worker"],
            ["  until Parquet complete", f"{events_cell(tp['events_per_s_to_parquet'])} ev/s",
             f"lag 0 on mcp.requests seen {tp['lag0_after_parquet_s']:.2f} s later (offset commits)"],
            ["  including start-up", f"{events_cell(tp['events_per_s_including_startup'])} ev/s",
             f"start-up {tp['startup_s']:.2f} s to the first flush ({tp['first_flush_events']:,} events)"],
            ["  per CPU-second", f"{events_cell(tp['events_per_cpu_s'])} ev/s",
             f"workers used {events_cell(tp['worker_cpu_pct_of_core'], '.0f')} % of "
             + (f"CPU {core}" if ref["workers"] == 1 else "a core") + f"; {tp['raw_files']} raw files"],
            ["freshness p50", f"{fr['visible_s']['p50']:.3f} s" if fr["visible_s"]["p50"] is not None else "-",
             f"{fr['probes_seen']}/{fr['probes']} probes, {fr['rate_achieved']:g} ev/s for {fr['duration_s']:g} s"],
            ["freshness p99", f"{fr['visible_s']['p99']:.3f} s" if fr["visible_s"]["p99"] is not None else "-",
             f"max {events_cell(fr['visible_s']['max'], '.3f')} s; written p99 {events_cell(fr['written_s']['p99'], '.3f')} s"],
        ]
    rows += [
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
    scaling_lines, scaling = scaling_between(cells)
    cell_table = render_table(["broker", "workers", "events/s", "per CPU-s", "worker CPU", "stage 1 ev/s",
                               "fresh p50 s", "fresh p99 s", "detail"], cell_rows(cells))
    title = (f"stream benchmark: {args.events:,} events backlog, {args.partitions} partitions, brokers "
             f"{' '.join(args.broker)}, workers {' '.join(map(str, args.workers))} (one pinned to CPU {core}, several "
             f"sharing {cpus}), {args.rate:g} ev/s live for {args.duration:g} s, SQL over {args.sql_events:,} events "
             f"({sql['dataset']['files']} files, written in {sql['dataset']['seconds']:.1f} s), "
             f"Python {machine['python_version']}")
    if tp is not None:
        title += f"; backlog produced at {events_cell(tp['produce_events_per_s'])} ev/s"
    parts = [title, "", cell_table]
    if scaling_lines:
        parts += [""] + scaling_lines
    parts += ["", render_table(["measurement", "value", "detail"], rows), "", render_bars(bars)]
    public_cells = []
    for cell in cells:
        entry = {"broker": cell["broker"], "workers": cell["workers"], "wall_s": cell.get("wall_s")}
        if cell.get("error"):
            entry["error"] = cell["error"]
        else:
            ctp = cell["throughput"]
            entry.update({"events_per_s": ctp["events_per_s"], "events_per_cpu_s": ctp["events_per_cpu_s"],
                          "freshness": cell["freshness"]["visible_s"], "throughput": ctp,
                          "freshness_run": cell["freshness"], "profile": cell.get("profile")})
        if cell.get("failed_attempts"):
            entry["failed_attempts"] = cell["failed_attempts"]
        public_cells.append(entry)
    return {
        "benchmark": "stream",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {"events": args.events, "partitions": args.partitions, "rate": args.rate,
                     "duration_s": args.duration, "probe_every": args.probe_every, "sql_events": args.sql_events,
                     "repeats": args.repeats, "quick": args.quick, "worker_core": core, "cpus": cpus,
                     "backlog_rate": args.backlog_rate, "profile": args.profile, "brokers": args.broker,
                     "workers": args.workers, "retrain": args.retrain, "retries": args.retries},
        "machine": {**machine, "load_average_end": machine_info()["load_average"]},
        "reference_cell": {"broker": ref["broker"], "workers": ref["workers"]},
        "throughput": tp,
        "freshness": fr,
        "cells": public_cells,
        "scaling": scaling,
        "sql": sql,
        "bars": [bar.to_json() for bar in bars],
        "_text": "\n".join(parts),
    }
