"""Rate limiting: the token bucket on an injected clock, and 429s from a real proxy process.

The proxy fronts the conformance fixture with two client tokens and ``rate = 1``,
``burst = 3``: each token has its own bucket, a client past its burst gets HTTP 429
with ``Retry-After`` and a JSON-RPC ``RATE_LIMITED`` error, and is served again
once it has waited that long.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _raw import RawClient, expect_error, text_of
from conftest import conformance_proxy

from only1mcp.errors import RATE_LIMITED
from only1mcp.proxy.ratelimit import RateLimiter, TokenBucket, effective_burst

ALPHA, BETA = "alpha-token-0123", "beta-token-4567"
TOOL = "conf__test_simple_text"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the bucket, on a clock the test moves -------------------------------------------------

def test_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token at 2/s
    assert bucket.take(0.25) == pytest.approx(0.25)  # half refilled: a refusal takes nothing
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_bucket_refills_to_its_burst_and_no_further() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.full_at() == pytest.approx(0.2)
    assert [bucket.take(3600.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
    assert bucket.take(3599.0) == pytest.approx(0.1)  # a clock that steps back refills nothing


def test_bucket_rejects_a_zero_rate_or_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, burst=1, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1.0, burst=0, now=0.0)


@pytest.mark.parametrize(("rate", "burst", "expected"), [(5.0, 7, 7), (2.5, 0, 3), (0.2, 0, 1), (100.0, 0, 100)])
def test_burst_zero_is_one_seconds_worth(rate: float, burst: int, expected: int) -> None:
    assert effective_burst(rate, burst) == expected


def test_limiter_keeps_a_bucket_per_client() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") == 0.0
    clock.now += 1.0
    assert limiter.take("a") == 0.0


def test_limiter_memory_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_clients=100)
    for i in range(50):
        limiter.take(f"idle-{i}")
    clock.now += 2.0  # every bucket has refilled: equal to a new one, so dropped when space is next needed
    limiter.take("fresh")
    assert len(limiter) == 1
    for i in range(1000):  # none refilled: past the cap the least recently used go
        limiter.take(f"busy-{i}")
    assert len(limiter) == 100
    assert "busy-999" in limiter.buckets and "busy-0" not in limiter.buckets


# -- a real proxy -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("ratelimit")
    with conformance_proxy(tmp, f"""
            [auth]
            tokens = ["{ALPHA}", "{BETA}"]

            [rate_limit]
            rate = 1.0
            burst = 3
""") as url:
        yield url


def _client(url: str, token: str) -> RawClient:
    raw = RawClient(url)
    raw.http.headers["Authorization"] = f"Bearer {token}"
    return raw


def _ping(raw: RawClient, sid: str) -> httpx.Response:
    return raw.post({"jsonrpc": "2.0", "id": raw.next_id(), "method": "ping"}, sid=sid)


def test_past_its_burst_a_client_gets_429_then_recovers(proxy: str) -> None:
    with _client(proxy, ALPHA) as alpha, _client(proxy, BETA) as beta:
        sid = alpha.initialize()  # two POSTs of the burst of three
        statuses = [_ping(alpha, sid).status_code for _ in range(6)]
        assert 429 in statuses, statuses
        first = statuses.index(429)
        assert first >= 1 and set(statuses[:first]) == {200}, statuses  # at least the burst went through
        limited = _ping(alpha, sid)
        error = expect_error(limited, 429, RATE_LIMITED, "rate limit")
        retry_after = int(limited.headers["retry-after"])
        assert retry_after == 1 and error["data"]["retryAfter"] == 1
        assert limited.json()["id"] is None

        # another token has its own bucket; GETs of probes are never limited
        beta_sid = beta.initialize()
        assert text_of(beta.call_tool(beta_sid, TOOL)) == "This is a simple text response for testing."
        assert httpx.get(proxy.removesuffix("/mcp") + "/healthz").status_code == 200

        time.sleep(retry_after + 0.1)
        assert text_of(alpha.call_tool(sid, TOOL)) == "This is a simple text response for testing."
        alpha.assert_no_traceback()

        metrics = httpx.get(proxy.removesuffix("/mcp") + "/metrics", headers={"X-API-Key": BETA}).text
        assert 'only1mcp_requests_total{method="POST",status="429"}' in metrics
        refused = [line for line in metrics.splitlines() if line.startswith("only1mcp_rate_limited_total ")]
        assert refused and float(refused[0].split()[1]) >= 2, refused
