"""``[[servers]] max_inflight``: a replica takes at most that many calls at once; routing skips a
replica at its cap, and a call that finds every routable replica there is refused at once with
-32010 ("saturated") instead of queueing in front of an overloaded upstream. A real proxy process in
front of real fault-fixture servers (their ``sleep`` tool holds a call as long as asked)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from _raw import RawClient, text_of

from only1mcp.errors import UPSTREAM_UNAVAILABLE

CAP = 3
HOLD_S = 2.0


def servers_toml(urls: list[str]) -> str:
    replicas = "".join(f'\n[[servers.replicas]]\nurl = "{url}"\n' for url in urls)
    # No active checks: a ping would take one of the few places for a moment.
    return f'[[servers]]\nname = "faults"\nmax_inflight = {CAP}\n[servers.health]\ninterval = 0\n{replicas}'


@pytest.fixture
def proxy_url(stack) -> Iterator[str]:  # noqa: ANN001 - conftest fixture
    urls = [stack.fixture("faults")[0] for _ in range(2)]
    url, _ = stack.proxy(servers_toml(urls))
    yield url


def hold_all(url: str, calls: int) -> list[tuple[dict[str, Any], float]]:
    """``calls`` sleep calls at once, each on its own session; each final reply and its wall time."""
    with RawClient(url) as raw:
        sids = [raw.initialize() for _ in range(calls)]

    def one(sid: str) -> tuple[dict[str, Any], float]:
        with RawClient(url) as own:
            started = time.perf_counter()
            _, reply = own.request(sid, "tools/call", {"name": "faults__sleep", "arguments": {"seconds": HOLD_S}})
            return reply, time.perf_counter() - started

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(one, sids))


def refused_count(url: str) -> float:
    text = httpx.get(url.removesuffix("/mcp") + "/metrics").text
    match = re.search(r'^only1mcp_limit_refusals_total\{limit="replica_inflight"\} ([0-9.e+]+)$', text, re.M)
    assert match, "replica_inflight refusals not on /metrics"
    return float(match.group(1))


def test_calls_past_every_replicas_cap_are_refused_at_once_and_the_rest_spread(proxy_url: str) -> None:
    results = hold_all(proxy_url, 2 * CAP + 4)  # two replicas hold CAP each; four find both full
    served = [(r, s) for r, s in results if "result" in r]
    refused = [(r, s) for r, s in results if "error" in r]
    # Every place of both replicas is used: routing skipped the full replica for the other.
    assert len(served) == 2 * CAP, results
    assert all(text_of(r) and s >= HOLD_S * 0.9 for r, s in served), served
    assert len(refused) == 4, results
    for reply, seconds in refused:
        error = reply["error"]
        assert error["code"] == UPSTREAM_UNAVAILABLE, error
        assert "upstream 'faults' is saturated" in error["message"] and "max_inflight" in error["message"], error
        assert error["data"] == {"server": "faults", "reason": "saturated", "max_inflight": CAP,
                                 "retry_after_s": 1}, error
        assert seconds < HOLD_S / 2, f"a refusal waited {seconds:.2f} s instead of being answered at once"
    assert refused_count(proxy_url) == 4

    # The places come back with the answers: the next calls are served.
    with RawClient(proxy_url) as raw:
        sid = raw.initialize()
        assert text_of(raw.call_tool(sid, "faults__echo", {"text": "after"})) == "after"
        raw.assert_no_traceback()
