"""The online store against real Redis: the shared server (db 15, a prefix per test) and a
private redis-server that the test kills and restarts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from only1mcp.feature_store.compute import compute
from only1mcp.feature_store.online.redis import OnlineStoreUnavailable, RedisOnlineStore, backoff_policy
from only1mcp.infra.redis import ensure_redis



def rows_for(replicas: list[str], start: float = 1_700_000_000.0) -> list[dict]:
    events = [{"event_id": f"{r}{i}", "ts": start + i, "latency_ms": 10.0 * (i + 1), "status": "ok", "replica": r,
               "tool": "t", "session_id": None, "request_bytes": 5, "response_bytes": 7}
              for r in replicas for i in range(3)]
    return compute(events, ["10s", "60s/10s"])["replica_10s"]


@pytest.fixture
def store(shared_redis: str) -> Iterator[RedisOnlineStore]:
    online = RedisOnlineStore(shared_redis, prefix=f"test-{uuid.uuid4().hex[:8]}", ttl=60)
    yield online
    online.delete_all()
    online.close()


def test_rows_become_hashes_with_the_documented_key_and_a_ttl(store: RedisOnlineStore, shared_redis: str) -> None:
    rows = rows_for(["r:1", "r2"])
    assert store.write_rows(rows, updated_at=123.0) == 2
    raw = redis.Redis.from_url(shared_redis, decode_responses=True)
    key = f"{store.prefix}:f:replica:r:1:10s"  # entity ids may hold ':'; the window is the last part
    assert sorted(raw.keys(f"{store.prefix}:*")) == sorted([key, f"{store.prefix}:f:replica:r2:10s"])
    fields = raw.hgetall(key)
    assert float(fields["count"]) == 3 and float(fields["latency_mean_ms"]) == pytest.approx(20.0)
    assert float(fields["window_start"]) == 1_700_000_000.0 and float(fields["updated_at"]) == 123.0
    assert 0 < raw.pttl(key) <= 60_000
    raw.close()


def test_get_online_features_reads_named_features_in_one_round_trip(store: RedisOnlineStore) -> None:
    store.write_rows(rows_for(["a", "b"]))
    values = store.get_online_features(("replica", "a"), ["count@10s", "latency_mean_ms@10s", "count@60s/10s"])
    assert values == {"count@10s": 3.0, "latency_mean_ms@10s": pytest.approx(20.0), "count@60s/10s": None}
    many = store.get_many([("replica", "a"), ("replica", "nobody")], ["count@10s"])
    assert many == [{"count@10s": 3.0}, {"count@10s": None}]
    with pytest.raises(ValueError):
        store.get_online_features(("replica", "a"), ["count"])


def test_the_error_policy_decides_retries_and_giving_up() -> None:
    calls: list[tuple[str, int]] = []

    def policy(error: Exception, attempt: int) -> float | None:
        calls.append((type(error).__name__, attempt))
        return 0.01 if attempt < 3 else None

    with ensure_redis(None) as server:  # a port that we then close: nothing listens there
        url = server.url
    dead = RedisOnlineStore(url, prefix="x", on_error=policy, timeout_s=0.5)
    with pytest.raises(OnlineStoreUnavailable):
        dead.write_rows(rows_for(["a"]))
    assert calls == [("ConnectionError", 1), ("ConnectionError", 2), ("ConnectionError", 3)]
    assert backoff_policy(attempts=2)(ConnectionError("x"), 2) is None
    assert 0 < backoff_policy(attempts=2, base_s=0.1)(ConnectionError("x"), 1) <= 0.1


def test_a_write_during_an_outage_completes_once_redis_is_back() -> None:
    server = ensure_redis(None)
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    attempts: list[int] = []
    store = RedisOnlineStore(server.url, prefix="outage", timeout_s=0.5,
                             on_error=lambda error, attempt: attempts.append(attempt) or 0.05)
    try:
        store.write_rows(rows_for(["before"]))
        server.stop()
        done = threading.Event()
        writer = threading.Thread(target=lambda: (store.write_rows(rows_for(["during"])), done.set()), daemon=True)
        writer.start()
        deadline = time.monotonic() + 5
        while len(attempts) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(attempts) >= 3 and not done.is_set()  # retrying, not crashed, not finished
        server = ensure_redis(None, port=port)  # the same address comes back (empty: no persistence)
        assert done.wait(10), "the write did not complete after Redis came back"
        assert store.get_online_features(("replica", "during"), ["count@10s"]) == {"count@10s": 3.0}
    finally:
        store.close()
        server.stop()
