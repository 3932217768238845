"""Exact features with several workers in one consumer group, on Apache Kafka (a real KRaft node
from infra/kafka.py): three ``only1mcp worker`` processes, one SIGKILLed mid-run and another
started, while events keyed by replica (as the proxy keys them) arrive in real time. Every event
is stored exactly once, and every closed window of every entity type — replica, tool,
replica × tool, session — equals the batch recomputation from the stored events."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from only1mcp.events import TOPICS, RequestEvent
from only1mcp.feature_store.compute import compute
from only1mcp.feature_store.offline.duckdb import query
from only1mcp.infra.broker import group_stable
from only1mcp.infra.kafka import KafkaCluster
from only1mcp.streams.sinks import load_closed_until

PARTITIONS = 6
WINDOWS = ["2s", "6s/2s"]
GRACE_S = 1.0
N_EVENTS = 12_000
RATE = 400.0  # events/s: 30 s of traffic


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaCluster]:
    with KafkaCluster(1) as cluster:
        yield cluster


def _config(tmp: Path, bootstrap: str, redis_url: str) -> tuple[Path, str]:
    group = f"scale-{uuid.uuid4().hex[:8]}"
    path = tmp / "worker.toml"
    path.write_text(f'[worker]\nbootstrap = "{bootstrap}"\ngroup = "{group}"\npartitions = {PARTITIONS}\n'
                    f'tumbling = ["{WINDOWS[0]}"]\nhopping = ["{WINDOWS[1]}"]\ngrace = {GRACE_S}\n'
                    "flush_interval = 0.3\ncompact_interval = 0\nmerge_interval = 0\n"
                    f'[store]\nredis_url = "{redis_url}"\nkey_prefix = "{group}"\ndata_dir = "{tmp / "data"}"\n')
    return path, group


def _events(n: int, seed: int) -> list[RequestEvent]:
    """Ids only; times are stamped when sent. Skewed tools and sessions, a few errors."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        replica = f"r{rng.randrange(4)}"
        out.append(RequestEvent(event_id=uuid.uuid4().hex, ts=0.0, latency_ms=round(rng.lognormvariate(3, 0.8), 3),
                                method="tools/call", status="error" if rng.random() < 0.05 else "ok",
                                replica=replica, tool=f"tool{min(int(rng.expovariate(0.5)), 7)}",
                                session_id=f"s{rng.randrange(60)}", request_bytes=rng.randrange(50, 500),
                                response_bytes=rng.randrange(100, 5000)))
    return out


class Producer(threading.Thread):
    """Sends the events at RATE per second with their send time as ``ts``, keyed by replica."""

    def __init__(self, bootstrap: str, events: list[RequestEvent]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.events, self.sent = bootstrap, events, []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _send(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            futures, start = [], time.monotonic()
            for i, event in enumerate(self.events):
                delay = start + i / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                stamped = dataclasses.replace(event, ts=time.time())
                self.sent.append(stamped)
                futures.append(await producer.send(TOPICS["requests"], stamped.to_json(),
                                                   key=(stamped.replica or "").encode()))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()


def _wait(check, what: str, timeout: float, procs) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {p.name}\n{p.log_tail(15)}" for p in procs)
        time.sleep(0.5)



def _stored(data: Path) -> tuple[int, int]:
    _, rows = query(data, "SELECT count(*), count(DISTINCT event_id) FROM requests")
    return rows[0]


def test_three_workers_one_killed_one_added_count_every_entity_exactly(kafka: KafkaCluster, stack,  # noqa: ANN001
                                                                      tmp_path: Path, shared_redis: str) -> None:
    kafka.create_topics([TOPICS["requests"], TOPICS["dead_letter"], TOPICS["feature_events"]], PARTITIONS, 1)
    config, group = _config(tmp_path, kafka.bootstrap, shared_redis)
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "only1mcp.cli", "worker", "--config", str(config)]
    workers = [stack.start(f"worker-{i}", argv) for i in range(3)]
    _wait(lambda: group_stable(kafka.bootstrap, group, members=3), "a stable group of three", 60, workers)

    producer = Producer(kafka.bootstrap, _events(N_EVENTS, seed=7))
    producer.start()
    time.sleep(10)
    workers[1].popen.kill()  # SIGKILL: no goodbye to the group, its partitions move after the session timeout
    workers[1].popen.wait(10)
    time.sleep(5)
    workers.append(stack.start("worker-3", argv))
    producer.join(timeout=120)
    assert not producer.is_alive() and producer.error is None, producer.error
    sent = producer.sent
    assert len(sent) == N_EVENTS
    live = [w for i, w in enumerate(workers) if i != 1]

    _wait(lambda: _stored(data) == (N_EVENTS, N_EVENTS), f"{N_EVENTS} events stored", 90, live)
    last_end_ms = math.floor(max(e.ts for e in sent) * 1000) + 6000
    state = data / "_state" / group
    _wait(lambda: len(list(state.glob("*.json"))) == PARTITIONS and load_closed_until(data, group, 0) >= last_end_ms,
          "every partition's windows closed", 90, live)

    batch = compute([dataclasses.asdict(e) for e in sent], WINDOWS)
    t0 = min(e.ts for e in sent)
    entity_types, problems = set(), []
    for table, rows in batch.items():
        names, stored_rows = query(data, f'SELECT * FROM "{table}"')
        stored = {(r[names.index("entity_id")], r[names.index("window_start")]): dict(zip(names, r))
                  for r in stored_rows}
        if len(stored) != len(rows):
            problems.append(f"{table}: {len(stored)} windows stored, {len(rows)} in the batch")
        for row in rows:
            entity_types.add(row["entity_type"])
            key = f"{table} {row['entity_id']} @+{row['window_start'] - t0:.0f}s"
            mine = stored.get((row["entity_id"], row["window_start"]))
            if mine is None:
                problems.append(f"{key}: missing")
                continue
            if mine["count"] != row["count"]:
                problems.append(f"{key}: count {mine['count']} != {row['count']}")
                continue
            assert mine["error_rate"] == row["error_rate"] and mine["latency_mean_ms"] == row["latency_mean_ms"], key
            for q in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
                assert mine[q] == pytest.approx(row[q], rel=0.01), (key, q)  # the sketch's stated accuracy
            assert mine["latency_ewma_ms"] == pytest.approx(row["latency_ewma_ms"], rel=1e-9), key
        # No partial window was ever written beside the full one (the view would hide it).
        _, conflicting = query(data, f'SELECT entity_id, window_start FROM "{table}_raw" GROUP BY ALL '
                                     "HAVING count(DISTINCT count) > 1")
        if conflicting:
            problems.append(f"{table}: windows written with different counts: {conflicting[:5]}")
    assert problems == [], f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert entity_types == {"replica", "tool", "replica_tool", "session"}
