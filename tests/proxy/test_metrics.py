"""Prometheus metrics: ``ProxyMetrics`` on its own registry, and ``/metrics`` of a real proxy process.

The proxy (no auth, loopback) fronts the conformance fixture; after a few calls its
``/metrics`` must list every family and count the ``/mcp`` requests by method and status.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _raw import RawClient, text_of
from conftest import conformance_proxy
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from only1mcp.proxy.metrics import CALL_BUCKETS, ProxyMetrics

FAMILIES = {  # name as parsed (counters without _total) -> type
    "only1mcp_calls": "counter", "only1mcp_call_seconds": "histogram", "only1mcp_inflight": "gauge",
    "only1mcp_retries": "counter", "only1mcp_breaker_state": "gauge", "only1mcp_ejections": "counter",
    "only1mcp_requests": "counter", "only1mcp_rate_limited": "counter",
    "only1mcp_event_loop_stalls": "counter", "only1mcp_event_loop_lag_seconds": "counter",
    "only1mcp_event_loop_lag_max_seconds": "gauge",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def render(metrics: ProxyMetrics) -> str:
    return metrics.render()[0].decode()


# -- ProxyMetrics, in process --------------------------------------------------------------

def test_a_call_counts_by_outcome_and_observes_latency() -> None:
    m = ProxyMetrics()
    m.call("conf", "conf/0", "echo", 0.004, "ok")
    m.call("conf", "conf/0", "echo", 0.2, "ok")
    m.call("conf", "conf/0", "echo", 61.0, "timeout")
    text = render(m)
    assert value(text, "only1mcp_calls_total", server="conf", replica="conf/0", tool="echo", outcome="ok") == 2
    assert value(text, "only1mcp_calls_total", server="conf", replica="conf/0", tool="echo", outcome="timeout") == 1
    labels = {"server": "conf", "replica": "conf/0", "tool": "echo"}
    assert value(text, "only1mcp_call_seconds_bucket", le="0.001", **labels) == 0
    assert value(text, "only1mcp_call_seconds_bucket", le="0.005", **labels) == 1
    assert value(text, "only1mcp_call_seconds_bucket", le="60.0", **labels) == 2
    assert value(text, "only1mcp_call_seconds_count", **labels) == 3
    assert CALL_BUCKETS[0] == 0.001 and CALL_BUCKETS[-1] == 60.0


def test_gauges_and_counters_of_the_traffic_layer() -> None:
    m = ProxyMetrics()
    m.inflight("conf", "conf/0", 1)
    m.inflight("conf", "conf/0", 1)
    m.inflight("conf", "conf/0", -1)
    m.retry("conf", "echo")
    m.ejection("conf", "conf/1")
    m.ejection("conf", "conf/1")
    m.request("POST", 200)
    m.request("PATCH", 405)
    m.rate_limited()
    m.breaker("conf", "conf/0", "open")
    m.breaker("conf", "conf/0", "half-open")
    text = render(m)
    assert value(text, "only1mcp_inflight", server="conf", replica="conf/0") == 1
    assert value(text, "only1mcp_retries_total", server="conf", tool="echo") == 1
    assert value(text, "only1mcp_ejections_total", server="conf", replica="conf/1") == 2
    assert value(text, "only1mcp_requests_total", method="POST", status="200") == 1
    assert value(text, "only1mcp_requests_total", method="OTHER", status="405") == 1
    assert value(text, "only1mcp_rate_limited_total") == 1
    states = {state: value(text, "only1mcp_breaker_state", server="conf", replica="conf/0", state=state)
              for state in ("closed", "open", "half_open")}
    assert states == {"closed": 0, "open": 0, "half_open": 1}


def test_registered_collectors_are_read_at_scrape_time() -> None:
    m = ProxyMetrics()
    stats = {"hits": 5, "misses": 2, "evictions": 1, "bytes": 4096, "entries": 3}
    m.register_collector(lambda: stats, prefix="only1mcp_cache_", counters=("hits", "misses", "evictions"))
    text = render(m)
    assert value(text, "only1mcp_cache_hits_total") == 5 and value(text, "only1mcp_cache_bytes") == 4096
    stats["entries"] = 7
    assert value(render(m), "only1mcp_cache_entries") == 7
    m.register_collector(lambda: {"entries": 1}, prefix="only1mcp_cache_")  # replaces, as after a reload
    assert value(render(m), "only1mcp_cache_entries") == 1 and value(render(m), "only1mcp_cache_bytes") is None

    def broken() -> dict[str, float]:
        raise RuntimeError("cache gone")

    m.register_collector(broken, prefix="only1mcp_other_")
    assert value(render(m), "only1mcp_cache_entries") == 1  # one failing source does not fail the scrape


def test_asyncio_tasks_are_counted_on_the_running_loop() -> None:
    import asyncio

    m = ProxyMetrics()
    assert value(render(m), "only1mcp_asyncio_tasks") is None  # no loop running: no value, no error

    async def scrape_beside(n: int) -> float | None:
        parked = [asyncio.create_task(asyncio.sleep(10)) for _ in range(n)]
        try:
            return value(render(m), "only1mcp_asyncio_tasks")
        finally:
            for task in parked:
                task.cancel()
            await asyncio.gather(*parked, return_exceptions=True)

    assert asyncio.run(scrape_beside(0)) == 1  # the scraping task itself
    assert asyncio.run(scrape_beside(5)) == 6


def test_label_sets_are_capped() -> None:
    m = ProxyMetrics(max_series=10)
    for i in range(50):
        m.call("conf", "conf/0", f"tool-{i}", 0.01, "ok")
    text = render(m)
    tools = {dict(labels)["tool"] for (name, labels) in samples(text) if name == "only1mcp_calls_total"}
    assert len(tools) == 11 and "_other" in tools
    assert value(text, "only1mcp_calls_total", server="conf", replica="conf/0", tool="_other", outcome="ok") == 40


def test_each_instance_has_its_own_registry() -> None:
    a, b = ProxyMetrics(), ProxyMetrics()
    a.rate_limited()
    assert value(render(b), "only1mcp_rate_limited_total") == 0


def test_metrics_app_serves_the_text_format() -> None:
    m = ProxyMetrics()
    m.request("GET", 200)
    client = TestClient(m.metrics_app)
    resp = client.get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert value(resp.text, "only1mcp_requests_total", method="GET", status="200") == 1
    assert client.head("/").content == b""
    assert client.post("/").status_code == 405
    openmetrics = client.get("/", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")


# -- a real proxy ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("metrics")
    with conformance_proxy(tmp, """""") as url:
        yield url


def test_proxy_metrics_after_some_calls(proxy: str) -> None:
    with RawClient(proxy) as raw:
        sid = raw.initialize()
        assert "conf__test_simple_text" in raw.tool_names(sid)
        for _ in range(3):
            assert text_of(raw.call_tool(sid, "conf__test_simple_text"))
        assert raw.post(b"{}", sid=sid, headers={"Content-Type": "text/plain"}).status_code == 415
    resp = httpx.get(proxy.removesuffix("/mcp") + "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    types = {family.name: family.type for family in text_string_to_metric_families(resp.text)}
    assert FAMILIES.items() <= types.items(), types
    assert value(resp.text, "only1mcp_requests_total", method="POST", status="200") >= 5  # init, list, 3 calls
    assert value(resp.text, "only1mcp_requests_total", method="POST", status="202") >= 1  # notifications/initialized
    assert value(resp.text, "only1mcp_requests_total", method="POST", status="415") == 1
    assert value(resp.text, "only1mcp_rate_limited_total") == 0
    ok_calls = sum(v for (name, labels), v in samples(resp.text).items()
                   if name == "only1mcp_calls_total" and dict(labels)["server"] == "conf"
                   and dict(labels)["outcome"] == "ok")
    assert ok_calls >= 3, resp.text  # the gateway's pools report each upstream call
    assert value(resp.text, "only1mcp_asyncio_tasks") >= 1  # at least the scrape's own task
    # the event sink's counters are there; events are off here (no bootstrap), so none was built
    assert value(resp.text, "only1mcp_events_emitted_total") == 0
    assert value(resp.text, "only1mcp_events_dropped_total") == 0 and value(resp.text, "only1mcp_events_broker_up") == 0
