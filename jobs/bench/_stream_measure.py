"""The three measurements of ``bench stream``, each against a running stack or a data dir.

- :func:`produce`: fill ``mcp.requests`` as fast as aiokafka can, and say where each partition ends;
- :func:`throughput`: from started workers (one or several, one consumer group) to "every event
  processed through both stages" (the worker reads ``mcp.requests``, forwards events re-keyed by
  entity to ``mcp.feature-events`` and folds that topic into windows): the Parquet dataset holds
  every event id (DuckDB), the group's committed offsets reach the end of every partition of
  ``mcp.requests`` *and* of ``mcp.feature-events`` (its end read once the first is reached, since
  the workers' watermark marks keep it growing), and every partition's watermark file
  (``<data_dir>/_state/<group>/<partition>.json``) is past the backlog's last window. Start-up is
  excluded by counting from the first flush (the mtime of the first raw Parquet file) and
  leaving out the events that flush wrote.

  Figures and what they meant before the two-stage worker: ``events_per_s`` used to stop at lag 0
  on ``mcp.requests`` and Parquet complete — with one stage that was everything. It is now
  ``events_per_s_stage1`` (stage 1 only: read, raw rows, forwarded), and ``events_per_s`` stops
  when everything above holds. ``events_per_s_to_parquet`` is unchanged (raw rows only);
  ``events_per_s_to_features`` stops when the last watermark file passed the backlog (its
  ``saved_at``: windows written, before the acknowledgements are committed). Lag 0 is seen only
  after an offset commit, so ``events_per_s`` is a slight underestimate, as it always was.
  ``events_per_cpu_s`` divides by the workers' CPU seconds summed (/proc), first flush to done;
  ``worker_cpu_pct_of_core`` is that sum over the same wall time (over 100 with several workers);
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from only1mcp.events import TOPICS

__all__ = ["produce", "ParquetWatch", "throughput", "freshness", "sql"]

TOPIC = TOPICS["requests"]
ENTITY_TOPIC = TOPICS["feature_events"]


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
    """New raw-event files under ``<data_dir>/requests`` as they appear: (mtime, rows) each.

    The worker merges small files every ``merge_interval`` (30 s): the merged file holds rows of
    files already counted, which then vanish. A file that appears in a folder where files
    vanished, no older than them and holding about their rows, is taken for that merge's output
    and not counted again (``merges`` counts them); the vanished files stay counted at their
    own times, so the timeline of first writes is kept."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "requests"
        self.files: dict[str, tuple[float, int]] = {}
        self.folder: dict[str, str] = {}  # name → the folder it is in
        self.merged: set[str] = set()  # merge outputs: not counted
        self.gone: set[str] = set()

    def scan(self) -> None:
        import pyarrow.parquet as pq

        present: set[str] = set()
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if not name.endswith(".parquet") or name.startswith("."):
                    continue
                present.add(name)
                if name not in self.files:
                    path = os.path.join(folder, name)
                    try:
                        self.files[name] = (os.stat(path).st_mtime, pq.read_metadata(path).num_rows)
                    except FileNotFoundError:  # merged away between the listing and now
                        present.discard(name)
                        continue
                    self.folder[name] = folder
        vanished = [name for name in self.files if name not in present and name not in self.gone]
        if vanished:
            self.gone.update(vanished)
            self._mark_merges(vanished)

    def _mark_merges(self, vanished: list[str]) -> None:
        by_folder: dict[str, list[str]] = {}
        for name in vanished:
            if name not in self.merged:
                by_folder.setdefault(self.folder[name], []).append(name)
        for folder, names in by_folder.items():
            rows = sum(self.files[n][1] for n in names)
            newest = max(self.files[n][0] for n in names)
            candidates = [n for n, f in self.folder.items() if f == folder and n not in self.gone
                          and n not in self.merged and self.files[n][0] >= newest and self.files[n][1] >= 0.9 * rows]
            if candidates:  # the closest in rows: replays removed by the merge make it a little smaller
                self.merged.add(min(candidates, key=lambda n: abs(self.files[n][1] - rows)))

    def ordered(self) -> list[tuple[float, int]]:
        return sorted(v for name, v in self.files.items() if name not in self.merged)

    def rows(self) -> int:
        return sum(rows for name, (_, rows) in self.files.items() if name not in self.merged)

    @property
    def merges(self) -> int:
        return len(self.merged)


def _distinct_events(data_dir: Path) -> tuple[int, int]:
    from only1mcp.feature_store.offline.duckdb import query

    rows, distinct = query(data_dir, "SELECT count(*), count(DISTINCT event_id) FROM requests_raw")[1][0]
    return int(rows), int(distinct)


async def _committed(admin: Any, group: str, parts: list[Any]) -> dict[int, int]:
    """The group's committed offset of each partition in ``parts`` (one topic); 0 where none."""
    committed = await admin.list_consumer_group_offsets(group, partitions=parts)
    return {tp.partition: max(0, committed[tp].offset) if tp in committed else 0 for tp in parts}


async def _members(admin: Any, group: str) -> tuple[str, int]:
    """The group's state and member count, as the broker says."""
    for response in await admin.describe_consumer_groups([group]):
        for entry in response.groups:
            if entry[1] == group and not entry[0]:
                return str(entry[2]), len(entry[5])
    return "unknown", 0


def _closed_until(path: Path) -> tuple[int, float] | None:
    """A watermark file's (closed_until_ms, saved_at), or None while there is none."""
    import json

    try:
        data = json.loads(path.read_text())
        return int(data["closed_until_ms"]), float(data.get("saved_at") or os.stat(path).st_mtime)
    except (OSError, ValueError, KeyError):
        return None


async def throughput(bootstrap: str, group: str, data_dir: Path, n: int, ends: dict[int, int], spawned: float,
                     alive: Callable[[], bool], cpu: Callable[[], Sequence[float]], timeout_s: float, *,
                     entity_partitions: int, closed_by_ms: int, workers: int = 1,
                     others_cpu: Mapping[str, Callable[[], float]] | None = None,
                     poll_s: float = 0.05) -> dict[str, Any]:
    """Watch ``workers`` workers started at ``spawned`` (time.time()) until they have processed all
    ``n`` events through both stages; ``cpu`` gives each worker's CPU seconds so far.

    Done = every event id in Parquet (DuckDB), the group's lag 0 on ``mcp.requests`` (``ends``, from
    the producer's acknowledgements) and on ``mcp.feature-events`` (its log end read once the first
    is reached: by then every slice of the backlog is on the broker, while marks keep coming), and
    every partition's watermark file at or past ``closed_by_ms`` (every window of the backlog
    closed and written)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from aiokafka.errors import KafkaError

    from only1mcp.commands.worker_status import BrokerUnreachable, read_status
    from only1mcp.streams.sinks import state_path

    watch = ParquetWatch(data_dir)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    source_parts = [TopicPartition(TOPIC, p) for p in sorted(ends)]
    entity_parts = [TopicPartition(ENTITY_TOPIC, p) for p in range(entity_partitions)]
    states = {p: state_path(data_dir, group, p) for p in range(entity_partitions)}
    others_cpu = dict(others_cpu or {})
    first_seen: tuple[float, list[float], dict[str, float]] | None = None  # (observed at, CPU seconds then)
    parquet_at = stage1_at = entity_at = settled_at = None
    entity_ends: dict[int, int] | None = None
    closed_at: dict[int, float] = {}  # partition → when its watermark file first covered closed_by_ms
    lag: dict[int, int] = dict(ends)
    entity_lag: dict[int, int] | None = None
    rows = distinct = 0
    group_seen = counted_at = 0.0
    broker_error = "none"  # the last error of a broker request (retried at the next poll)
    deadline = time.time() + timeout_s
    try:
        while True:
            watch.scan()
            now = time.time()
            if first_seen is None and watch.files:
                first_seen = (now, list(cpu()), {name: read() for name, read in others_cpu.items()})
            try:
                if settled_at is None and now - group_seen >= 0.25:
                    group_seen = now
                    state, members = await _members(admin, group)
                    if state == "Stable" and members >= workers:
                        settled_at = now
                if stage1_at is None:
                    committed = await _committed(admin, group, source_parts)
                    lag = {p: ends[p] - committed[p] for p in ends}
                    if all(v <= 0 for v in lag.values()):
                        stage1_at = time.time()
                if stage1_at is not None and entity_ends is None:
                    status = await read_status(bootstrap, group, [ENTITY_TOPIC])
                    entity_ends = {p.partition: p.highwater for p in status.partitions}
                if entity_ends is not None and entity_at is None:
                    committed = await _committed(admin, group, entity_parts)
                    entity_lag = {p: end - committed.get(p, 0) for p, end in entity_ends.items()}
                    if all(v <= 0 for v in entity_lag.values()):
                        entity_at = time.time()
            except (KafkaError, BrokerUnreachable) as exc:  # e.g. Kafka's group coordinator not loaded yet
                broker_error = f"{type(exc).__name__}: {exc} (at {now - spawned:.1f} s)"
            # Counted when the files seen hold n rows, or (at most twice a second) once stage 1 is done:
            # the rows are all written by then, even if a merge hid some files from the scan.
            if parquet_at is None and (watch.rows() >= n or (stage1_at is not None and now - counted_at >= 0.5)):
                counted_at = now
                rows, distinct = _distinct_events(data_dir)
                if distinct >= n:
                    parquet_at = time.time()
            for partition, path in states.items():
                if partition not in closed_at:
                    mark = _closed_until(path)
                    if mark is not None and mark[0] >= closed_by_ms:
                        closed_at[partition] = mark[1]
            if None not in (parquet_at, stage1_at, entity_at) and len(closed_at) == len(states):
                done_at, cpu_end = time.time(), list(cpu())
                others_end = {name: read() for name, read in others_cpu.items()}
                break
            if not alive():
                raise RuntimeError("a worker exited during the throughput run")
            if now > deadline:
                raise TimeoutError(f"not done after {timeout_s:g}s: {watch.rows()} rows in Parquet "
                                   f"({distinct} distinct at the last count), lag on {TOPIC} {lag}, "
                                   f"on {ENTITY_TOPIC} {entity_lag}, watermarks past the backlog on "
                                   f"{sorted(closed_at)} of {sorted(states)}; last broker error: {broker_error}; {watch.merges} merges "
                                   f"seen")
            await asyncio.sleep(poll_s)
    finally:
        await admin.close()
    assert first_seen is not None and stage1_at is not None and parquet_at is not None and entity_at is not None
    files = watch.ordered()
    first_mtime, first_rows = files[0]
    total, parquet_done = 0, files[-1][0]
    for mtime, count in files:  # when the dataset first held n rows
        total += count
        if total >= n:
            parquet_done = mtime
            break
    features_done = max(closed_at.values())
    stage1_end = max(parquet_done, stage1_at)
    end = max(parquet_done, stage1_at, entity_at, features_done)
    counted = n - first_rows
    each = [round(b - a, 2) for a, b in zip(first_seen[1], cpu_end)]
    cpu_s = sum(b - a for a, b in zip(first_seen[1], cpu_end))
    busy = done_at - first_seen[0]

    def rate(until: float) -> float | None:
        return round(counted / (until - first_mtime), 1) if until > first_mtime else None

    return {
        "events": n, "parquet_rows": rows, "distinct_event_ids": distinct, "partitions": len(ends),
        "workers": workers,
        "startup_s": round(first_mtime - spawned, 3),
        "first_flush_events": first_rows,
        "measured_events": counted,
        "measured_s": round(end - first_mtime, 3),
        "events_per_s": rate(end),
        "to_parquet_s": round(parquet_done - first_mtime, 3),
        "events_per_s_to_parquet": rate(parquet_done),
        "stage1_s": round(stage1_end - first_mtime, 3),
        "events_per_s_stage1": rate(stage1_end),
        "lag0_after_parquet_s": round(stage1_at - parquet_done, 3),
        "to_features_s": round(max(parquet_done, features_done) - first_mtime, 3),
        "events_per_s_to_features": rate(max(parquet_done, features_done)),
        "features_after_stage1_s": round(features_done - stage1_end, 3),
        "entity_lag0_after_features_s": round(entity_at - features_done, 3),
        "entity_records": sum(entity_ends.values()) if entity_ends else None,
        "closed_by_ms": closed_by_ms,
        "events_per_s_including_startup": round(n / (end - spawned), 1),
        "group_stable_s": round(settled_at - spawned, 3) if settled_at is not None else None,
        "raw_files": len(files),
        "raw_merges_seen": watch.merges,
        "worker_cpu_s": round(cpu_s, 2),
        "worker_cpu_s_each": each,
        # CPU-bound ceiling: what the workers would do with the CPU to themselves (not sharing it, not waiting)
        "events_per_cpu_s": round(counted / cpu_s, 1) if cpu_s > 0 else None,
        "worker_cpu_pct_of_core": round(100 * cpu_s / busy, 1) if busy > 0 else None,
        "others_cpu_pct_of_core": {name: round(100 * (others_end[name] - first_seen[2][name]) / busy, 1)
                                   for name in others_end} if busy > 0 else {},
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
    by_second: dict[int, list[float]] = {}  # second of the run a probe was sent in → its visible delays
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
                        by_second.setdefault(int(sent_at - started_at), []).append(now - sent_at)
            await asyncio.sleep(poll_s)

    started_at = time.time()
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
        # [second of the run, probes sent in it, their slowest visible delay]: when a slow stretch happened
        "visible_max_by_second": [[second, len(values), round(max(values), 3)]
                                  for second, values in sorted(by_second.items())],
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
