"""The three measurements of ``bench stream``, each against a running stack or a data dir.

- :func:`produce`: fill ``mcp.requests`` as fast as aiokafka can, and say where each partition ends;
- :func:`throughput`: from a started worker to "every event processed": the group's committed
  offsets equal the end offsets on every partition, and the Parquet dataset holds every event
  id (checked with DuckDB). Start-up is excluded by counting from the worker's first flush
  (the mtime of the first raw Parquet file) and leaving out the events that flush wrote;
- :func:`freshness`: live events at a steady rate, each stamped ``ts`` = send time; every
  ``sample``-th event is a probe with a session id of its own, so the first time
  ``<prefix>:f:session:<probe>:<window>`` exists in Redis (the documented key layout) is the
  first time a feature reflecting that event is visible;
- :func:`sql`: ``only1mcp features sql`` as a subprocess (wall time, Python start-up included)
  and the same query in-process through the Python API (``connect`` + ``con.sql``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from only1mcp.events import TOPICS

__all__ = ["produce", "ParquetWatch", "throughput", "freshness", "sql"]

TOPIC = TOPICS["requests"]


async def produce(bootstrap: str, records: Sequence[tuple[bytes | None, bytes]]) -> tuple[float, dict[int, int]]:
    """Send every record (batched, acks gathered at the end); returns the seconds it took and the
    end offset (last offset + 1) of each partition written, from the broker's acknowledgements.

    Not ListOffsets: tansu answers it with the last record *batch*'s base offset + 1, short of the
    real end by all but one record of that batch (the highwater in fetch responses is right)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024,
                                max_request_size=8 * 1024 * 1024, acks=1)
    await producer.start()
    began = time.perf_counter()
    try:
        futures = [await producer.send(TOPIC, value, key=key) for key, value in records]
        acked = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - began
    ends: dict[int, int] = {p: 0 for p in producer_partitions(producer)}
    for meta in acked:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return seconds, ends


def producer_partitions(producer: Any) -> set[int]:
    return set(producer.client.cluster.partitions_for_topic(TOPIC) or ())


class ParquetWatch:
    """New raw-event files under ``<data_dir>/requests`` as they appear: (mtime, rows) each."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "requests"
        self.files: dict[str, tuple[float, int]] = {}

    def scan(self) -> None:
        import pyarrow.parquet as pq

        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if name.endswith(".parquet") and not name.startswith(".") and name not in self.files:
                    path = os.path.join(folder, name)
                    self.files[name] = (os.stat(path).st_mtime, pq.read_metadata(path).num_rows)

    def ordered(self) -> list[tuple[float, int]]:
        return sorted(self.files.values())

    def rows(self) -> int:
        return sum(rows for _, rows in self.files.values())


def _distinct_events(data_dir: Path) -> tuple[int, int]:
    from only1mcp.feature_store.offline.duckdb import query

    rows, distinct = query(data_dir, "SELECT count(*), count(DISTINCT event_id) FROM requests_raw")[1][0]
    return int(rows), int(distinct)


async def throughput(bootstrap: str, group: str, data_dir: Path, n: int, ends: dict[int, int], spawned: float,
                     alive: Callable[[], bool], cpu: Callable[[], float], timeout_s: float,
                     poll_s: float = 0.05) -> dict[str, Any]:
    """Watch a worker started at ``spawned`` (time.time()) until it has processed all ``n`` events."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    watch = ParquetWatch(data_dir)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    parts = [TopicPartition(TOPIC, p) for p in sorted(ends)]
    first_seen: tuple[float, float] | None = None  # (observed at, worker CPU seconds then)
    lag0_at = cpu_end = None
    lag: dict[int, int] = dict(ends)
    deadline = time.time() + timeout_s
    try:
        while True:
            watch.scan()
            now = time.time()
            if first_seen is None and watch.files:
                first_seen = (now, cpu())
            if lag0_at is None:
                committed = await admin.list_consumer_group_offsets(group, partitions=parts)
                lag = {tp.partition: ends[tp.partition] - max(0, committed[tp].offset if tp in committed else 0)
                       for tp in parts}
                if all(v <= 0 for v in lag.values()):
                    lag0_at, cpu_end = time.time(), cpu()
            if lag0_at is not None and watch.rows() >= n:
                rows, distinct = _distinct_events(data_dir)
                if distinct >= n:
                    break
            if not alive():
                raise RuntimeError("the worker exited during the throughput run")
            if now > deadline:
                raise TimeoutError(f"not done after {timeout_s:g}s: {watch.rows()} rows in Parquet, lag {lag}")
            await asyncio.sleep(poll_s)
    finally:
        await admin.close()
    files = watch.ordered()
    first_mtime, first_rows = files[0]
    total, parquet_done = 0, files[-1][0]
    for mtime, count in files:  # when the dataset first held n rows
        total += count
        if total >= n:
            parquet_done = mtime
            break
    end = max(parquet_done, lag0_at)
    counted = n - first_rows
    assert first_seen is not None and cpu_end is not None
    cpu_s = cpu_end - first_seen[1]
    return {
        "events": n, "parquet_rows": rows, "distinct_event_ids": distinct, "partitions": len(ends),
        "startup_s": round(first_mtime - spawned, 3),
        "first_flush_events": first_rows,
        "measured_events": counted,
        "measured_s": round(end - first_mtime, 3),
        "events_per_s": round(counted / (end - first_mtime), 1) if end > first_mtime else None,
        "to_parquet_s": round(parquet_done - first_mtime, 3),
        "events_per_s_to_parquet": round(counted / (parquet_done - first_mtime), 1) if parquet_done > first_mtime
        else None,
        "lag0_after_parquet_s": round(lag0_at - parquet_done, 3),
        "events_per_s_including_startup": round(n / (end - spawned), 1),
        "raw_files": len(files),
        "worker_cpu_s": round(cpu_s, 2),
        # CPU-bound ceiling: what the worker would do with the core to itself (not sharing it, not waiting)
        "events_per_cpu_s": round(counted / cpu_s, 1) if cpu_s > 0 else None,
        "worker_cpu_pct_of_core": round(100 * cpu_s / (lag0_at - first_seen[0]), 1) if lag0_at > first_seen[0]
        else None,
    }


def _quantiles(values: list[float]) -> dict[str, float | None]:
    from only1mcp.jobs.bench._report import percentile

    ordered = sorted(values)
    pick = (lambda q: round(percentile(ordered, q), 4)) if ordered else (lambda q: None)
    return {"p50": pick(50), "p90": pick(90), "p99": pick(99), "max": round(ordered[-1], 4) if ordered else None,
            "mean": round(statistics.fmean(ordered), 4) if ordered else None}


async def freshness(bootstrap: str, redis_url: str, prefix: str, rate: float, duration_s: float, sample: int,
                    window: str = "10s", poll_s: float = 0.01, settle_s: float = 15.0) -> dict[str, Any]:
    """Steady ``rate`` events/s for ``duration_s``; freshness of every ``sample``-th event (a probe)."""
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaProducer

    from only1mcp.feature_store.online.redis import feature_key
    from only1mcp.jobs.bench._stream_data import LiveEvents

    events = LiveEvents()
    run = os.urandom(4).hex()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await producer.start()
    pending: dict[str, float] = {}  # redis key → send time
    seen: list[tuple[float, float]] = []  # (visible - sent, written - sent)
    sent = errors = 0
    lateness: list[float] = []  # how far behind its schedule the sender ran, s
    stop = asyncio.Event()

    async def send() -> None:
        nonlocal sent
        began = time.perf_counter()
        total = int(rate * duration_s)
        futures = []
        while sent < total:
            due = min(total, int((time.perf_counter() - began) * rate) + 1)
            lateness.append(max(0.0, time.perf_counter() - began - sent / rate))
            while sent < due:
                probe = f"bench-probe-{run}-{sent}" if sent % sample == 0 else None
                key, value, event = events.next(probe)
                futures.append(await producer.send(TOPIC, value, key=key))
                if probe is not None:
                    pending[feature_key(prefix, "session", probe, window)] = event["ts"]
                sent += 1
            await asyncio.sleep(max(0.0, began + sent / rate - time.perf_counter()))
        await asyncio.gather(*futures)

    async def poll() -> None:
        while not (stop.is_set() and not pending):
            keys = list(pending)
            if keys:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(key, "count", "updated_at")
                answers = await pipe.execute()
                now = time.time()
                for key, (count, updated_at) in zip(keys, answers):
                    if count is not None:
                        sent_at = pending.pop(key)
                        seen.append((now - sent_at, float(updated_at) - sent_at))
            await asyncio.sleep(poll_s)

    poller = asyncio.create_task(poll())
    began = time.perf_counter()
    try:
        await send()
        elapsed = time.perf_counter() - began
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(poller), settle_s)
        except asyncio.TimeoutError:
            errors = len(pending)
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await producer.stop()
        await client.aclose()
    visible = [v for v, _ in seen]
    return {
        "rate_target": rate, "duration_s": duration_s, "events_sent": sent, "send_s": round(elapsed, 3),
        "rate_achieved": round(sent / elapsed, 1), "sender_behind_p99_s": _quantiles(lateness)["p99"],
        "probe_every": sample, "probes": len(seen) + errors, "probes_seen": len(seen), "probes_missing": errors,
        "feature": f"count@{window} of the probe's own session", "poll_interval_s": poll_s,
        "visible_s": _quantiles(visible), "written_s": _quantiles([w for _, w in seen]),
    }


def sql(data_dir: Path, query: str, repeats: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``only1mcp features sql QUERY --format csv`` wall time, and the query alone in-process."""
    from only1mcp.feature_store.offline.duckdb import arrow_table, connect

    argv = [sys.executable, "-m", "only1mcp.cli", "features", "--data-dir", str(data_dir), "sql", query,
            "--format", "csv"]
    cli: list[float] = []
    output = ""
    for _ in range(repeats):
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        cli.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"features sql exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        output = done.stdout
    began = time.perf_counter()
    con = connect(data_dir)
    connect_s = time.perf_counter() - began
    alone: list[float] = []
    try:
        for _ in range(repeats):
            began = time.perf_counter()
            table = arrow_table(con.sql(query))
            alone.append(time.perf_counter() - began)
    finally:
        con.close()
    return {
        "query": query, "repeats": repeats,
        "cli_wall_s": {"median": round(statistics.median(cli), 3), "min": round(min(cli), 3), "all": [round(x, 3) for x in cli]},
        "connect_s": round(connect_s, 3),
        "query_s": {"median": round(statistics.median(alone), 4), "min": round(min(alone), 4),
                    "all": [round(x, 4) for x in alone]},
        "rows": table.num_rows, "cli_csv_lines": len(output.strip().splitlines()), "result": table.to_pylist(),
    }
