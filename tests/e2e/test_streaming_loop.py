"""The streaming loop end to end, with real parts only: the embedded ``tansu`` broker, a private
bundled ``redis-server``, real Parquet under a temp dir, and ``only1mcp worker``, ``only1mcp proxy``
(``[events] bootstrap = …``), ``only1mcp sim-server`` and ``only1mcp loadgen`` as subprocesses.

1. Exactly once in the store: ≥ 10,000 tools/call through the proxy; the offline store (DuckDB,
   ``requests`` view) then holds exactly the calls the load generator got an answer for, once each,
   with the same per-tool and error counts; the online features in Redis (and the closed window
   rows in Parquet) equal a batch recomputation from the Parquet rows with ``feature_store.compute``.
2. Broker outage (SIGSTOP ≥ 10 s) and a worker SIGKILL + restart during the load: still exactly the
   answered calls, once each by event id, and the proxy's latency during the outage as before it
   (events go to the proxy's disk spool and are replayed after).

   Every closed window (10 s, 30 s and 30 s/10 s here, so that the kill can come 30 s sooner),
   including those that ended while the broker was frozen, equals the batch recomputation: the
   worker holds its watermark while the broker is away and for ``outage_hold`` after, so the
   events the proxy spooled arrive before their windows close.

3. Test 1 again on Apache Kafka (one KRaft node, infra/kafka.py); and on a three-node Kafka
   cluster (replication 3, ``min.insync.replicas`` 2), the broker leading most ``mcp.requests``
   partitions SIGKILLed mid-run and restarted later: every answered call stored once, no call
   failed, and the proxy's p99 during the failure logged beside its p99 before.

Poison records and Redis outages of the worker are covered by tests/streams/test_worker.py;
several workers, one killed, by tests/e2e/test_scaleout.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from only1mcp.events import TOPICS
from only1mcp.feature_store.compute import compute
from only1mcp.feature_store.offline.duckdb import query
from only1mcp.jobs.bench._stack import FAST_PROFILE
from only1mcp.feature_store.online.redis import RedisOnlineStore
from only1mcp.feature_store.registry import FEATURES, table_name
from only1mcp.infra.broker import EmbeddedBroker, group_stable
from only1mcp.infra.kafka import KafkaCluster
from only1mcp.infra.redis import RedisHandle, ensure_redis
from only1mcp.jobs.bench._procs import Managed, ProcessGroup, free_port, free_ports

pytestmark = pytest.mark.timeout(280)

PY = [sys.executable, "-m", "only1mcp.cli"]
PARTITIONS = 2
REPLICAS = 3
CONCURRENCY = 12
FLUSH_S = 0.5
GRACE_S = 5.0  # WorkerSettings.grace
WINDOWS = ("10s", "60s", "60s/10s")
# Test 2: the long windows at half the default. The worker commits an event's offset once every window
# holding it has closed, so the kill (which must come after a commit) comes 30 s sooner.
OUTAGE_WINDOWS = ("10s", "30s", "30s/10s")
PROFILE = FAST_PROFILE  # millisecond tools (10k calls fit in well under a minute on two cores), two with errors


def _log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except Exception:
        return 0


class Loop:
    """Broker, Redis, worker, simulated upstreams and proxy, all real, on free ports."""

    def __init__(self, tmp: Path, broker: str = "embedded", windows: tuple[str, ...] = WINDOWS) -> None:
        self.tmp = tmp
        self.windows = windows
        self.data_dir = tmp / "data"
        self.spool_dir = tmp / "spool"
        self.group = f"e2e-{uuid.uuid4().hex[:8]}"
        self.prefix = f"e2e-{uuid.uuid4().hex[:8]}"
        self.nodes = {"embedded": 0, "kafka": 1, "kafka3": 3}[broker]
        self.broker: Any = KafkaCluster(self.nodes) if self.nodes else EmbeddedBroker()
        self.redis: RedisHandle | None = None
        self.procs: ProcessGroup | None = None
        self.worker: Managed | None = None
        self.proxy: Managed | None = None
        self.sim: Managed | None = None
        self.config = tmp / "only1mcp.toml"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Loop:
        started = time.monotonic()
        self.broker.start()
        self.broker.create_topics([TOPICS["requests"], TOPICS["dead_letter"]], PARTITIONS)
        self.redis = ensure_redis(None)  # a private bundled redis-server: nothing shared is touched
        env = {**os.environ, "KAFKA_BOOTSTRAP": self.broker.bootstrap, "REDIS_URL": self.redis.url,
               "PYTHONUNBUFFERED": "1"}
        self.procs = ProcessGroup(self.tmp, env=env)
        sim_ports = free_ports(REPLICAS)
        fleet = [{"port": p, "replica_id": f"r{i}", "seed": i, "profile": PROFILE} for i, p in enumerate(sim_ports)]
        (self.tmp / "fleet.json").write_text(json.dumps(fleet))
        replicas = "\n".join(f'[[servers.replicas]]\nurl = "http://127.0.0.1:{p}/mcp"' for p in sim_ports)
        tumbling = ", ".join(f'"{w}"' for w in self.windows if "/" not in w)
        hopping = ", ".join(f'"{w}"' for w in self.windows if "/" in w)
        self.config.write_text(
            f'[proxy]\nlisten = "127.0.0.1:{self.port}"\nlog_level = "info"\n\n'
            f'[[servers]]\nname = "sim"\nnamespace = ""\npolicy = "p2c_ewma"\ntimeout = 20.0\n{replicas}\n\n'
            f'[events]\nbootstrap = "{self.broker.bootstrap}"\nspool_dir = "{self.spool_dir}"\n'
            f'proxy_id = "e2e-proxy"\nhash_key = "e2e"\n\n'
            f'[worker]\nbootstrap = "{self.broker.bootstrap}"\ngroup = "{self.group}"\npartitions = {PARTITIONS}\n'
            f'flush_interval = {FLUSH_S}\ntumbling = [{tumbling}]\nhopping = [{hopping}]\n'
            f'replication = {max(1, self.nodes)}\n\n'
            f'[store]\nredis_url = "{self.redis.url}"\nkey_prefix = "{self.prefix}"\ndata_dir = "{self.data_dir}"\n')
        self.start_worker()
        self.sim = self.procs.start("sim", [*PY, "sim-server", "--fleet", str(self.tmp / "fleet.json")])
        self._wait(self.sim, lambda: all(_port_open(p) for p in sim_ports), "sim-server listening", 30)
        self.proxy = self.procs.start("proxy", [*PY, "proxy", "--config", str(self.config)])
        self._wait(self.proxy, lambda: _http_status(f"http://127.0.0.1:{self.port}/readyz") == 200, "proxy ready", 30)
        self.wait_group_stable()
        _log(f"loop up in {time.monotonic() - started:.1f}s (broker {self.broker.bootstrap}, redis {self.redis.url})")
        return self

    def start_worker(self) -> Managed:
        assert self.procs is not None
        self.worker = self.procs.start(f"worker-{int(time.time() * 1000)}",
                                       [*PY, "worker", "--config", str(self.config)])
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL, no chance to flush or commit anything."""
        assert self.procs is not None and self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.popen.wait(timeout=10)
        self.procs.stop(self.worker)  # forget it (closes its log)

    def wait_group_stable(self, timeout: float = 40.0) -> None:
        assert self.worker is not None
        self._wait(self.worker, lambda: group_stable(self.broker.bootstrap, self.group),
                   f"consumer group {self.group} stable", timeout)

    def close(self) -> None:
        if getattr(self.broker, "paused", False):
            self.broker.resume()
        if self.procs is not None:
            self.procs.stop_all()
        if self.redis is not None:
            self.redis.stop()
        self.broker.stop()

    @staticmethod
    def _wait(proc: Managed, check: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.alive(), f"{proc.name} exited (code {proc.popen.returncode}) before {what}:\n{proc.log_tail(30)}"
            try:
                if check():
                    return
            except Exception:
                pass
            assert time.monotonic() < deadline, f"not {what} after {timeout:g}s:\n{proc.log_tail(30)}"
            time.sleep(0.2)

    # -- load --------------------------------------------------------------------------------

    def loadgen(self, duration: float, seed: int, name: str, concurrency: int = CONCURRENCY) -> tuple[Managed, Path]:
        assert self.procs is not None
        out = self.tmp / f"{name}.jsonl"
        proc = self.procs.start(name, [*PY, "loadgen", "--url", self.url, "--concurrency", str(concurrency),
                                       "--duration", f"{duration:g}", "--timeout", "30", "--seed", str(seed),
                                       "--out", str(out)])
        return proc, out

    def finish_loadgen(self, proc: Managed, out: Path, timeout: float) -> list[dict[str, Any]]:
        assert self.procs is not None
        try:
            code = proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"loadgen did not finish in {timeout:g}s:\n{proc.log_tail(20)}") from None
        assert code == 0, f"loadgen exited with {code}:\n{proc.log_tail(20)}"
        _log("loadgen: " + " | ".join(line for line in proc.log_tail(10).splitlines() if line.startswith("calls ")))
        self.procs.stop(proc)
        return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]

    # -- the stores --------------------------------------------------------------------------

    def sql(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.data_dir, sql)[1]

    def stored_calls(self) -> tuple[int, int, int]:
        """(tools/call rows in the requests view, distinct event ids there, raw rows incl. replays)."""
        rows = self.sql("SELECT (SELECT count(*) FROM requests WHERE method = 'tools/call'), "
                        "(SELECT count(DISTINCT event_id) FROM requests WHERE method = 'tools/call'), "
                        "(SELECT count(*) FROM requests_raw WHERE method = 'tools/call')")
        return tuple(int(x) for x in rows[0])  # type: ignore[return-value]

    def wait_stored(self, expected: int, timeout: float) -> tuple[int, int, int]:
        """Poll until the requests view holds ``expected`` distinct tools/call events (and no more arrive)."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout
        last = (0, 0, 0)
        while True:
            assert self.worker.alive(), f"the worker died:\n{self.worker.log_tail(30)}"
            last = self.stored_calls() if any(self.data_dir.glob("requests/**/*.parquet")) else (0, 0, 0)
            if last[1] >= expected:
                time.sleep(3 * FLUSH_S)  # a few more flushes: nothing more may arrive
                return self.stored_calls()
            assert time.monotonic() < deadline, (f"only {last[1]} of {expected} events in Parquet after {timeout:g}s\n"
                                                 f"worker:\n{self.worker.log_tail(30)}")
            time.sleep(0.5)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False



@pytest.fixture
def loop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Loop]:
    """The loop on the embedded broker, or on Apache Kafka when a test asks (``indirect``)."""
    running = Loop(tmp_path, getattr(request, "param", "embedded"))
    try:
        yield running.start()
    finally:
        running.close()


@pytest.fixture
def outage_loop(tmp_path: Path) -> Iterator[Loop]:
    """The loop on the embedded broker with the shorter long windows of test 2."""
    running = Loop(tmp_path, "embedded", windows=OUTAGE_WINDOWS)
    try:
        yield running.start()
    finally:
        running.close()


# -- checks shared by both tests ------------------------------------------------------------------


def answered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls the proxy answered: a result (ok or a tool error) or a JSON-RPC error."""
    return [r for r in records if r["ok"] or str(r["error"]).startswith(("rpc ", "tool error"))]


def check_counts_match_the_log(loop: Loop, records: list[dict[str, Any]]) -> None:
    """Per tool: calls and failed calls in DuckDB equal the load generator's log."""
    calls = Counter(r["tool"] for r in records)
    failed = Counter(r["tool"] for r in records if not r["ok"])
    rows = loop.sql("SELECT tool, count(*), count(*) FILTER (WHERE status <> 'ok') FROM requests "
                    "WHERE method = 'tools/call' GROUP BY tool")
    assert {tool: n for tool, n, _ in rows} == dict(calls)
    assert {tool: e for tool, _, e in rows if e} == dict(failed)
    assert sum(failed.values()) > 0, "the profile's error rates should have produced some tool errors"


def check_duplicates_are_replays(loop: Loop) -> int:
    """Raw rows written more than once (worker replays) are the same event, byte for byte; returns how many."""
    extra = loop.sql("SELECT count(*) - count(DISTINCT event_id) FROM requests_raw")[0][0]
    conflicting = loop.sql(
        "SELECT event_id FROM requests_raw GROUP BY event_id HAVING count(*) > 1 AND ("
        "count(DISTINCT ts) > 1 OR count(DISTINCT latency_ms) > 1 OR count(DISTINCT status) > 1 "
        "OR count(DISTINCT coalesce(tool, '')) > 1 OR count(DISTINCT coalesce(replica, '')) > 1) LIMIT 5")
    assert conflicting == [], f"different events share an event_id: {conflicting}"
    return int(extra)


def batch_tables(loop: Loop) -> dict[str, list[dict[str, Any]]]:
    """Every window row, recomputed from the Parquet rows with the pure feature functions."""
    names, rows = query(loop.data_dir, "SELECT * FROM requests")
    return compute([dict(zip(names, row)) for row in rows], loop.windows)


def _same(got: float | None, want: float, feature: str) -> bool:
    if got is None:
        return False
    if feature == "count":
        return got == want
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def online_mismatches(loop: Loop, replicas: list[str]) -> list[str]:
    """Per replica and window: the Redis hash against the batch row of the same window."""
    assert loop.redis is not None
    tables = batch_tables(loop)
    store = RedisOnlineStore(loop.redis.url, prefix=loop.prefix)
    problems = []
    try:
        for replica in replicas:
            for window in loop.windows:
                stored = store.client.hgetall(store.key("replica", replica, window))
                if not stored:
                    problems.append(f"{replica}@{window}: no hash in Redis")
                    continue
                start = float(stored["window_start"])
                want = next((row for row in tables[table_name("replica", window)]
                             if row["entity_id"] == replica and row["window_start"] == start), None)
                if want is None:
                    problems.append(f"{replica}@{window}: Redis has window {start}, the batch has none such")
                    continue
                for feature in FEATURES:
                    got = float(stored[feature.name]) if feature.name in stored else None
                    if not _same(got, want[feature.name], feature.name):
                        problems.append(f"{replica}@{window} [{start}]: {feature.name} redis={got} "
                                        f"batch={want[feature.name]}")
    finally:
        store.close()
    return problems


def closed_window_mismatches(loop: Loop, replicas: list[str]) -> tuple[int, list[tuple[float, str]]]:
    """Closed replica windows in Parquet (the deduplicated views) against the batch rows: how many
    were compared, and (window end, what differs) for each that does not match."""
    tables = batch_tables(loop)
    checked, problems = 0, []
    for window in loop.windows:
        table = table_name("replica", window)
        batch = {(row["entity_id"], row["window_start"]): row for row in tables[table]}
        try:
            names, rows = query(loop.data_dir, f'SELECT * FROM "{table}"')
            stored = [dict(zip(names, row)) for row in rows]
        except Exception:  # no closed window of this size yet
            stored = []
        for row in stored:
            if row["entity_id"] not in replicas:
                continue
            where = f"{table} {row['entity_id']} [{row['window_start']:.0f}, {row['window_end']:.0f})"
            want = batch.get((row["entity_id"], row["window_start"]))
            if want is None:
                problems.append((row["window_end"], f"{where}: not in the batch"))
                continue
            checked += 1
            diffs = [f"{f.name} parquet={row[f.name]} batch={want[f.name]}" for f in FEATURES
                     if not _same(float(row[f.name]), want[f.name], f.name)]
            if diffs:
                late = arrived_after(loop, row)
                problems.append((row["window_end"], f"{where}: " + "; ".join(diffs[:3]) + f" | {late}"))
    return checked, problems


def arrived_after(loop: Loop, row: dict[str, Any]) -> str:
    """For a window row that misses events: how many of its events the worker first wrote to Parquet
    only after it computed the row (the part-<ms> file names say when), with examples."""
    glob = str(loop.data_dir / "requests" / "**" / "*.parquet")
    found = query(loop.data_dir,
                  "WITH f AS (SELECT event_id, ts, latency_ms, "
                  "min(CAST(split_part(parse_filename(filename), '-', 2) AS BIGINT)) / 1000.0 AS written "
                  "FROM read_parquet(?, hive_partitioning = true, union_by_name = true, filename = true) "
                  "WHERE replica = ? AND ts >= ? AND ts < ? GROUP BY ALL) "
                  "SELECT count(*) FILTER (WHERE written > ?), list(struct_pack(ts, latency_ms, written) ORDER BY ts) "
                  "FILTER (WHERE written > ?)[1:3] FROM f",
                  [glob, row["entity_id"], row["window_start"], row["window_end"], row["computed_at"],
                   row["computed_at"]])[1][0]
    return f"window computed at {row['computed_at']:.3f}; {found[0]} of its events first written after that: {found[1]}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# -- 1. exactly once ------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["embedded", "kafka"], indirect=True)
def test_every_answered_call_is_stored_exactly_once_and_online_equals_batch(loop: Loop) -> None:
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    seed = 0
    while len(records) < 10_000:  # rounds, so a slower machine still reaches 10k calls
        assert time.monotonic() - started < 90, f"only {len(records)} calls in 90 s"
        proc, out = loop.loadgen(duration=15.0 if not records else 8.0, seed=seed, name=f"loadgen-{seed}")
        records += loop.finish_loadgen(proc, out, timeout=90)
        seed += 1
    load_s = time.monotonic() - started
    got = answered(records)
    assert len(got) == len(records), Counter(str(r["error"])[:40] for r in records if r not in got)
    n = len(got)
    _log(f"{n} calls answered in {load_s:.1f}s ({n / load_s:.0f}/s)")

    in_view, distinct, raw = loop.wait_stored(n, timeout=60)
    _log(f"stored {distinct} events {time.monotonic() - started - load_s:.1f}s after the load")
    assert (in_view, distinct) == (n, n)
    assert raw == n, f"{raw - n} raw rows written twice without any fault"
    assert check_duplicates_are_replays(loop) == 0
    # The same count through the CLI an operator would use.
    cli = subprocess.run([*PY, "features", "--config", str(loop.config), "sql", "SELECT count(*) AS n, "
                          "count(DISTINCT event_id) AS d FROM requests WHERE method = 'tools/call'", "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == [{"n": n, "d": n}]
    check_counts_match_the_log(loop, got)

    replicas = [r for (r,) in loop.sql("SELECT DISTINCT replica FROM requests WHERE replica IS NOT NULL ORDER BY 1")]
    assert len(replicas) == REPLICAS, replicas
    # Online: the newest window of each replica, once the worker's last flushes are in Redis.
    deadline = time.monotonic() + 20
    while (problems := online_mismatches(loop, replicas)) and time.monotonic() < deadline:
        time.sleep(FLUSH_S)
    assert problems == [], "\n".join(problems[:20])
    # Offline: every closed window row in Parquet equals the batch row too.
    checked, closed_problems = closed_window_mismatches(loop, replicas)
    assert closed_problems == [], "\n".join(m for _, m in closed_problems[:20])
    assert checked >= REPLICAS, f"only {checked} closed replica windows in Parquet"
    assert loop.worker is not None and loop.worker.alive()
    _log(f"test 1 done in {time.monotonic() - started:.1f}s; {checked} closed windows compared")


# -- 2. broker outage and worker restart ----------------------------------------------------------


async def _committed(bootstrap: str, group: str) -> int:
    """Offsets the group has committed on mcp.requests, summed over partitions (read by a consumer
    that never joins the group; the admin client's OffsetFetch does not decode tansu's answer)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(TOPICS["requests"], p)) for p in range(PARTITIONS)]
    finally:
        await consumer.stop()
    return sum(o for o in offsets if o and o > 0)


def test_broker_outage_and_worker_restart_lose_and_duplicate_nothing(outage_loop: Loop) -> None:
    loop = outage_loop
    # The worker acknowledges an event only once every window holding it has closed (30 s + 5 s
    # grace with OUTAGE_WINDOWS), so the kill comes late enough (15 s after the first events could
    # be acknowledged) for the restart to resume from committed offsets with a persisted watermark,
    # not only to replay everything from the start. The outage begins half a second before a 10 s
    # boundary, so a window ends while the broker is frozen.
    duration, outage_s, kill_at, restart_after = 63.0, 12.0, 50.0, 2.0
    # Fewer sessions than test 1: the restarted worker replays everything since its last commit
    # (the traffic of the last 35-50 s), and that replay is the slow part of this test.
    proc, out = loop.loadgen(duration=duration, seed=7, name="loadgen-outage", concurrency=4)
    launched = time.time()
    pause_at = math.ceil((launched + 9.5) / 10.0) * 10.0 - 0.5
    time.sleep(pause_at - time.time())
    loop.broker.pause()
    paused_wall = time.time()
    _log(f"broker paused (SIGSTOP) {paused_wall - launched:.1f}s into the load")
    spool_bytes = 0
    while time.time() - paused_wall < outage_s:
        time.sleep(0.5)
        spool_bytes = max(spool_bytes, sum(p.stat().st_size for p in loop.spool_dir.glob("*.seg")))
        assert proc.alive() or proc.popen.returncode == 0, proc.log_tail(20)
    loop.broker.resume()
    resumed_wall = time.time()
    _log(f"broker resumed after {resumed_wall - paused_wall:.1f}s; the proxy spooled up to {spool_bytes} bytes")
    time.sleep(max(0.0, launched + kill_at - time.time()))
    committed = asyncio.run(_committed(loop.broker.bootstrap, loop.group))
    loop.kill_worker()
    killed_wall = time.time()
    _log(f"worker killed (SIGKILL) {killed_wall - launched:.1f}s into the load, {committed} offsets committed")
    time.sleep(restart_after)
    loop.start_worker()
    restarted_wall = time.time()
    _log("worker restarted")
    records = loop.finish_loadgen(proc, out, timeout=duration + 60)
    assert killed_wall < launched + duration, "the worker was killed after the load ended"
    got = answered(records)
    assert len(got) == len(records), Counter(str(r["error"])[:40] for r in records if r not in got)
    n = len(got)
    assert n >= 6_000, f"only {n} calls"
    assert spool_bytes > 0, "the proxy's spool stayed empty while the broker was frozen"
    assert committed > 0, "nothing was committed before the kill: the restart replays from the start only"

    drained = time.monotonic()
    in_view, distinct, raw = loop.wait_stored(n, timeout=90)
    assert (in_view, distinct) == (n, n), f"{distinct} distinct events in Parquet for {n} answered calls"
    replays = check_duplicates_are_replays(loop)
    _log(f"{n} calls, {distinct} events stored once each ({time.monotonic() - drained:.1f}s after the load); "
         f"{replays} raw rows written again after the restart")
    check_counts_match_the_log(loop, got)

    # Latency while the broker was away, against before it. The loadgen's clock starts at its
    # first call: find it in wall time from the earliest tools/call event the proxy stamped.
    first_ts = loop.sql("SELECT min(ts) FROM requests WHERE method = 'tools/call'")[0][0]
    t0 = first_ts - min(r["start"] for r in got)
    before = [r["latency_ms"] for r in got if 2.0 <= r["start"] + t0 - launched and r["start"] + t0 < paused_wall]
    during = [r["latency_ms"] for r in got if paused_wall <= r["start"] + t0 <= resumed_wall]
    assert len(before) > 500 and len(during) > 500, (len(before), len(during))
    stats = {name: (percentile(v, 50), percentile(v, 99)) for name, v in (("before", before), ("during", during))}
    _log("latency ms (p50, p99): " + ", ".join(f"{k} {v[0]:.2f}/{v[1]:.2f} (n={len(x)})"
                                               for (k, v), x in zip(stats.items(), (before, during))))
    (p50_before, p99_before), (p50_during, p99_during) = stats["before"], stats["during"]
    assert p50_during <= 2 * p50_before + 5.0, stats
    assert p99_during <= 2 * p99_before + 5.0, stats

    # Features survive the restart: the online values and every closed window in Parquet (those
    # the first worker closed and those closed after the restart) equal the batch recomputation.
    replicas = [r for (r,) in loop.sql("SELECT DISTINCT replica FROM requests WHERE replica IS NOT NULL ORDER BY 1")]
    deadline = time.monotonic() + 20
    while (problems := online_mismatches(loop, replicas)) and time.monotonic() < deadline:
        time.sleep(FLUSH_S)
    assert problems == [], "\n".join(problems[:20])
    checked, closed_problems = closed_window_mismatches(loop, replicas)
    assert checked >= REPLICAS * 6, f"only {checked} closed replica windows in Parquet"
    timeline = (f"unix times: load {launched:.1f}, paused {paused_wall:.1f}, resumed {resumed_wall:.1f}, "
                f"worker killed {killed_wall:.1f}, restarted {restarted_wall:.1f}")
    slow = loop.sql(f"SELECT count(*), max(latency_ms) FROM requests WHERE ts * 1000 + latency_ms > "
                    f"1000 * ((floor(ts / 10) + 1) * 10 + {GRACE_S})")[0]
    timeline += f"; {slow[0]} event(s) completed after the grace of their 10 s pane (max latency {slow[1]} ms)"
    during = sum(1 for end, _ in closed_problems if paused_wall - 1 <= end <= resumed_wall + GRACE_S + 1)
    timeline += f"; {during} of the mismatches in windows ending during the outage"
    assert closed_problems == [], timeline + "\n" + "\n".join(m for _, m in closed_problems[:20])
    assert loop.worker is not None and loop.worker.alive()


# -- 3. a Kafka broker dies -----------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["kafka3"], indirect=True)
def test_a_kafka_broker_killed_and_restarted_loses_duplicates_and_fails_nothing(loop: Loop) -> None:
    duration, kill_at, down_s = 50.0, 15.0, 15.0
    proc, out = loop.loadgen(duration=duration, seed=11, name="loadgen-failover", concurrency=4)
    launched = time.time()
    time.sleep(max(0.0, launched + kill_at - time.time()))
    leaders = loop.broker.leaders(TOPICS["requests"])
    victim, led = Counter(leaders.values()).most_common(1)[0]
    loop.broker.kill(victim)
    killed_wall = time.time()
    _log(f"broker {victim} (leader of {led} of {len(leaders)} mcp.requests partitions) SIGKILLed "
         f"{killed_wall - launched:.1f}s into the load")
    time.sleep(down_s)
    loop.broker.restart(victim)
    restarted_wall = time.time()
    _log(f"broker {victim} restarted after {restarted_wall - killed_wall:.1f}s; leaders now "
         f"{loop.broker.leaders(TOPICS['requests'])}")
    records = loop.finish_loadgen(proc, out, timeout=duration + 60)
    got = answered(records)
    assert len(got) == len(records), Counter(str(r["error"])[:40] for r in records if r not in got)
    n = len(got)
    assert n >= 3_000, f"only {n} calls"

    in_view, distinct, raw = loop.wait_stored(n, timeout=120)
    assert (in_view, distinct) == (n, n), f"{distinct} distinct events in Parquet for {n} answered calls"
    check_counts_match_the_log(loop, got)
    first_ts = loop.sql("SELECT min(ts) FROM requests WHERE method = 'tools/call'")[0][0]
    t0 = first_ts - min(r["start"] for r in got)
    before = [r["latency_ms"] for r in got if 2.0 <= r["start"] + t0 - launched and r["start"] + t0 < killed_wall]
    during = [r["latency_ms"] for r in got if killed_wall <= r["start"] + t0 <= restarted_wall]
    assert len(before) > 300 and len(during) > 300, (len(before), len(during))
    _log(f"proxy latency ms p50/p99: before the kill {percentile(before, 50):.2f}/{percentile(before, 99):.2f} "
         f"(n={len(before)}), broker down {percentile(during, 50):.2f}/{percentile(during, 99):.2f} (n={len(during)}); "
         f"{raw - n} raw rows written twice (deduplicated by the view)")
    assert loop.worker is not None and loop.worker.alive()
