"""The feature worker end to end: a real embedded broker (tansu), real Redis, real Parquet, and
``only1mcp worker`` in a subprocess, as an operator would run it."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from only1mcp.events import TOPICS, DeadLetter, RequestEvent
from only1mcp.feature_store.compute import compute
from only1mcp.feature_store.offline.duckdb import arrow_table, connect, query
from only1mcp.feature_store.online.redis import RedisOnlineStore
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.infra.redis import ensure_redis
from only1mcp.streams.sinks import load_closed_until
from only1mcp.jobs.bench._procs import Managed

PARTITIONS = 2
FEATURES = ["count@10s", "latency_p95_ms@60s/10s", "error_rate@60s"]


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        running.create_topics([TOPICS["requests"], TOPICS["dead_letter"]], PARTITIONS)
        yield running


def write_config(tmp: Path, bootstrap: str, redis_url: str, prefix: str, windows: str = "",
                 compact_interval: float = 0.0, merge_interval: float = 0.0) -> Path:
    path = tmp / "worker.toml"
    path.write_text(f'[worker]\nbootstrap = "{bootstrap}"\ngroup = "test-{uuid.uuid4().hex[:8]}"\n'
                    f"partitions = {PARTITIONS}\nflush_interval = 0.3\ncompact_interval = {compact_interval}\n"
                    f"merge_interval = {merge_interval}\n"
                    f"{windows}\n"
                    f'[store]\nredis_url = "{redis_url}"\nkey_prefix = "{prefix}"\ndata_dir = "{tmp / "data"}"\n')
    return path


def start_worker(stack, config: Path) -> Managed:  # noqa: ANN001 - the conftest Stack
    return stack.start("worker", [sys.executable, "-m", "only1mcp.cli", "worker", "--config", str(config)])


def request_events(n: int, replicas: list[str], offset: int = 0, start: float | None = None,
                   span: float = 20.0) -> list[RequestEvent]:
    start = time.time() - span if start is None else start
    return [RequestEvent(event_id=uuid.uuid4().hex, ts=start + (i % 200) * span / 200, latency_ms=float(1 + i % 97),
                         method="tools/call", status="error" if i % 10 == 0 else "ok", replica=replicas[i % len(replicas)],
                         tool=f"tool{i % 3}", session_id=f"s{(i + offset) % 7}", request_bytes=100, response_bytes=300)
            for i in range(n)]


def produce(bootstrap: str, records: list[tuple[bytes | None, bytes]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(TOPICS["requests"], value, key=key) for key, value in records])
        finally:
            await producer.stop()

    asyncio.run(send())


def encoded(events: list[RequestEvent]) -> list[tuple[bytes | None, bytes]]:
    return [((e.replica or "").encode(), e.to_json()) for e in events]


def wait_for(check: Callable[[], bool], proc: Managed, what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.alive(), f"the worker died while waiting for {what}:\n{proc.log_tail(30)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{proc.log_tail(30)}"
        time.sleep(0.2)


def stored_counts(data_dir: Path) -> tuple[int, int]:
    """(rows in the raw files, distinct event ids)."""
    # query() lists the files anew if the worker's compaction removed one mid-read (retry_vanished)
    return tuple(query(data_dir, "SELECT count(*), count(DISTINCT event_id) FROM requests_raw")[1][0])


def dead_letters(bootstrap: str, expected: int, timeout: float = 20.0) -> list[DeadLetter]:
    async def read() -> list[DeadLetter]:
        consumer = AIOKafkaConsumer(TOPICS["dead_letter"], bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        found: list[DeadLetter] = []
        try:
            deadline = time.monotonic() + timeout
            while len(found) < expected and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    found += [DeadLetter.from_json(record.value) for record in batch]
        finally:
            await consumer.stop()
        return found

    return asyncio.run(read())


def test_worker_stores_every_event_once_and_dead_letters_poison(broker: EmbeddedBroker, stack,  # noqa: ANN001
                                                                   tmp_path: Path, shared_redis: str) -> None:
    SHARED_REDIS = shared_redis
    prefix = f"test-worker-{uuid.uuid4().hex[:8]}"
    online = RedisOnlineStore(SHARED_REDIS, prefix=prefix)
    first, second = request_events(1500, ["r0", "r1", "r2"]), request_events(1500, ["r0", "r1", "r2"], offset=3)
    wrong_version = orjson.dumps({**dataclasses.asdict(first[0]), "event_id": "v99", "schema_version": 99})
    bad_clock = dataclasses.replace(first[0], event_id="clock", ts=1e12).to_json()
    poison = [(b"k1", b"{not json"), (b"k2", wrong_version), (b"k3", bad_clock)]
    try:
        produce(broker.bootstrap, encoded(first) + poison)
        config = write_config(tmp_path, broker.bootstrap, SHARED_REDIS, prefix, compact_interval=2.0)
        worker = start_worker(stack, config)
        # Live traffic after the start, with producer retries that repeat 50 event ids.
        produce(broker.bootstrap, encoded(second) + encoded(second[:50]))
        total = len(first) + len(second)
        wait_for(lambda: stored_counts(tmp_path / "data")[1] == total, worker, f"{total} distinct events in Parquet")
        assert stored_counts(tmp_path / "data") == (total, total)  # and no row twice
        wait_for(lambda: all(v is not None for v in online.get_online_features(("replica", "r2"), FEATURES).values()),
                 worker, "features of replica r2 in Redis")
        values = online.get_online_features(("replica", "r0"), FEATURES)
        assert values["count@10s"] >= 1 and values["latency_p95_ms@60s/10s"] > 0
        assert online.get_online_features(("replica_tool", "r1|tool1"), ["count@60s"])["count@60s"] >= 1
        letters = dead_letters(broker.bootstrap, expected=3)
        reasons = sorted(letter.reason for letter in letters)
        assert len(letters) == 3 and all(letter.topic == TOPICS["requests"] for letter in letters)
        assert any("not JSON" in r for r in reasons) and any("schema_version" in r for r in reasons)
        assert any("plausible unix time" in r for r in reasons)
        assert {letter.key for letter in letters} == {"k1", "k2", "k3"} and "{not json" in {x.value for x in letters}
        time.sleep(1.0)  # a few more flushes change nothing
        assert stored_counts(tmp_path / "data") == (total, total) and worker.alive()
        # The worker compacts its micro-batch files (here every 2 s): one file per hour partition.
        raw = tmp_path / "data" / "requests"
        wait_for(lambda: all(len(list(d.glob("*.parquet"))) == 1 for d in {f.parent for f in raw.rglob("*.parquet")}),
                 worker, "one raw file per partition after compaction")
        wait_for(lambda: "compacted:" in worker.log_tail(500), worker, "the worker's compaction log line")
        # Faust's own consumer waits 1.5 s per fetch; the worker's transport set the configured 100 ms.
        assert "fetch_max_wait_ms=100" in worker.log_tail(2000)
        assert stored_counts(tmp_path / "data") == (total, total)
    finally:
        online.delete_all()
        online.close()


def test_worker_rides_out_a_redis_outage(broker: EmbeddedBroker, stack, tmp_path: Path) -> None:  # noqa: ANN001
    server = ensure_redis(None)  # a private redis-server this test may kill
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    online = RedisOnlineStore(server.url, prefix="outage", timeout_s=0.5)
    try:
        config = write_config(tmp_path, broker.bootstrap, server.url, "outage", merge_interval=1.0)
        worker = start_worker(stack, config)
        produce(broker.bootstrap, encoded(request_events(300, ["before"])))
        wait_for(lambda: online.get_online_features(("replica", "before"), ["count@10s"])["count@10s"] is not None,
                 worker, "features of replica 'before' in Redis")
        server.stop()
        produce(broker.bootstrap, encoded(request_events(300, ["during"])))
        # Parquet keeps receiving data while Redis is away; the worker retries and stays up.
        wait_for(lambda: stored_counts(tmp_path / "data")[1] == 600, worker, "600 events in Parquet")
        wait_for(lambda: "online store unavailable" in worker.log_path.read_text(errors="replace"), worker,
                 "a logged Redis outage")
        time.sleep(1.0)
        assert worker.alive()
        server = ensure_redis(None, port=port)  # back, empty (no persistence)
        wait_for(lambda: online.get_online_features(("replica", "during"), ["count@10s"])["count@10s"] is not None,
                 worker, "features of replica 'during' in Redis after the outage")
        # the hopping window reaching back furthest holds all 300 (they span 20 s)
        assert online.get_online_features(("replica", "during"), ["count@60s/10s"])["count@60s/10s"] == 300
        assert worker.alive() and stored_counts(tmp_path / "data") == (600, 600)
        # No compaction here (compact_interval 0), but merges every 1 s: the micro-batch files of each
        # partition become one (all are small), raw events and feature rows alike.
        data = tmp_path / "data"
        wait_for(lambda: all(len(list(d.glob("*.parquet"))) == 1 for d in {f.parent for f in data.rglob("*.parquet")}),
                 worker, "one file per partition after merges")
        assert stored_counts(data) == (600, 600)
    finally:
        online.close()
        server.stop()


def features_match_batch(data_dir: Path, windows: list[str]) -> None:
    """Every feature row the worker wrote equals the batch computation over the stored events."""
    con = connect(data_dir)
    try:
        events = arrow_table(con.sql("SELECT * FROM requests")).to_pylist()
        batch = compute(events, windows)
        assert batch
        for table, rows in batch.items():
            stored = {(r["entity_id"], r["window_start"]): r for r in arrow_table(con.sql(f'SELECT * FROM "{table}"'))
                      .to_pylist()}
            assert len(stored) == len(rows), table
            for row in rows:
                mine = stored[(row["entity_id"], row["window_start"])]
                assert mine["count"] == row["count"] and mine["latency_p99_ms"] == row["latency_p99_ms"], table
                assert mine["latency_mean_ms"] == row["latency_mean_ms"] and mine["error_rate"] == row["error_rate"]
                assert mine["latency_ewma_ms"] == pytest.approx(row["latency_ewma_ms"], rel=1e-9)
    finally:
        con.close()


def test_a_killed_worker_replays_without_counting_twice(broker: EmbeddedBroker, stack, tmp_path: Path,  # noqa: ANN001
                                                       shared_redis: str) -> None:
    """kill -9 with windows open: the restarted worker replays uncommitted events; raw rows are
    deduplicated, closed windows are not recomputed from partial replays, open ones are rebuilt."""
    SHARED_REDIS = shared_redis
    windows = ["1s", "2s/1s"]
    config = write_config(tmp_path, broker.bootstrap, SHARED_REDIS, f"test-replay-{uuid.uuid4().hex[:8]}",
                          windows='tumbling = ["1s"]\nhopping = ["2s/1s"]')
    data, group = tmp_path / "data", config.read_text().split('group = "')[1].split('"')[0]
    online = RedisOnlineStore(SHARED_REDIS, prefix=config.read_text().split('key_prefix = "')[1].split('"')[0])
    try:
        worker = start_worker(stack, config)
        old = request_events(400, ["a", "b"], start=time.time() - 30, span=10)  # windows that close at once
        produce(broker.bootstrap, encoded(old))
        old_end_ms = int((max(e.ts for e in old) + 2) * 1000)
        wait_for(lambda: load_closed_until(data, group, 0) >= old_end_ms, worker, "the old windows closed")
        fresh = request_events(400, ["a", "c"], start=time.time() + 3, span=1)  # windows still open at the kill
        produce(broker.bootstrap, encoded(fresh))
        wait_for(lambda: stored_counts(data)[1] == 800, worker, "800 events in Parquet")
        assert load_closed_until(data, group, 0) < int(min(e.ts for e in fresh) * 1000)
        worker.popen.kill()
        worker.popen.wait(10)
        restarted = stack.start("worker-restarted", [sys.executable, "-m", "only1mcp.cli", "worker", "--config",
                                                     str(config)])
        fresh_end_ms = int((max(e.ts for e in fresh) + 2) * 1000)
        wait_for(lambda: load_closed_until(data, group, 0) >= fresh_end_ms, restarted, "the fresh windows closed",
                 timeout=60)
        raw, distinct = stored_counts(data)
        assert distinct == 800 and raw >= 800  # raw rows are acked early; the replay is of mcp.feature-events
        features_match_batch(data, windows)
        from only1mcp.jobs.compact import compact

        compact(data)
        assert stored_counts(data) == (800, 800)
        features_match_batch(data, windows)
    finally:
        online.delete_all()
        online.close()
