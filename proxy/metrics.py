"""Prometheus metrics of the proxy: one ``ProxyMetrics`` with its own registry, served at ``/metrics``.

The hot path calls the ``ProxyMetrics`` methods; each is a dict look-up of a cached
label child and one update. Label sets are capped (``max_series``): past the cap a new
tool is counted as ``_other`` rather than growing the registry without bound.
Gauges computed at scrape time (the response cache's stats) come from
:meth:`ProxyMetrics.register_collector`; ``only1mcp_asyncio_tasks`` (the tasks not done on
the event loop that serves the scrape) is always there, so a leak of tasks shows on a dashboard
(and in ``only1mcp bench soak``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

__all__ = ["ProxyMetrics", "MetricsEndpoint", "RequestMetricsMiddleware", "CALL_BUCKETS", "OUTCOMES", "BREAKER_STATES",
           "loop_stats"]

log = logging.getLogger("only1mcp.metrics")

CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTCOMES = ("ok", "error", "timeout", "unavailable", "cancelled")
BREAKER_STATES = ("closed", "open", "half_open")
_HTTP_METHODS = frozenset({"GET", "POST", "DELETE"})


def loop_stats() -> dict[str, int]:
    """``{"tasks": n}``: asyncio tasks not done on the running event loop (the proxy's one loop: the
    scrape runs on it, and counts its own task). Nothing outside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return {}
    return {"tasks": len(asyncio.all_tasks())}


class _ScrapeCollector(Collector):
    """Turns a ``fn() -> {name: value}`` into metric families at scrape time."""

    def __init__(self, fn: Callable[[], Mapping[str, float]], prefix: str, counters: frozenset[str],
                 help_text: str) -> None:
        self.fn, self.prefix, self.counters, self.help_text = fn, prefix, counters, help_text

    def collect(self) -> Iterator[Any]:
        try:
            values = dict(self.fn())
        except Exception:  # a scrape must not fail because one source did
            log.exception("metrics collector %s failed", self.prefix)
            return
        for key, value in values.items():
            name = self.prefix + key
            family = CounterMetricFamily if key in self.counters else GaugeMetricFamily
            yield family(name, f"{self.help_text} {key}".strip(), value=float(value))


class _DecisionCollector(Collector):
    """The decision channel at scrape time: records by kind and outcome, age of the newest per server."""

    def __init__(self, counts: Callable[[], Mapping[tuple[str, str], int]],
                 ages: Callable[[], Mapping[str, float]]) -> None:
        self.counts, self.ages = counts, ages

    def collect(self) -> Iterator[Any]:
        try:
            counts, ages = dict(self.counts()), dict(self.ages())
        except Exception:  # a scrape must not fail because one source did
            log.exception("decision metrics failed")
            return
        total = CounterMetricFamily("only1mcp_decisions", "Decision records read from the decision topics, by "
                                                          "kind and outcome (received, applied, rejected_*)",
                                    labels=("kind", "outcome"))
        for (kind, outcome), value in sorted(counts.items()):
            total.add_metric((kind, outcome), float(value))
        yield total
        age = GaugeMetricFamily("only1mcp_decision_age_seconds", "Seconds since the newest applied decision of a "
                                                                 "server was made", labels=("server",))
        for server, seconds in sorted(ages.items()):
            age.add_metric((server,), float(seconds))
        yield age


class _RemediationCollector(Collector):
    """Remediation at scrape time: decisions by server, action and outcome; replicas held out now;
    failed alert webhook POSTs."""

    def __init__(self, counts: Callable[[], Mapping[tuple[str, str, str], int]],
                 held: Callable[[], Mapping[tuple[str, str], int]], failures: Callable[[], int]) -> None:
        self.counts, self.held, self.failures = counts, held, failures

    def collect(self) -> Iterator[Any]:
        try:
            counts, held, failures = dict(self.counts()), dict(self.held()), self.failures()
        except Exception:  # a scrape must not fail because one source did
            log.exception("remediation metrics failed")
            return
        total = CounterMetricFamily("only1mcp_remediations", "Remediation decisions by server, action and outcome "
                                    "(applied, alert_only, rejected_*, expired, lifted)",
                                    labels=("server", "action", "outcome"))
        for key, value in sorted(counts.items()):
            total.add_metric(key, float(value))
        yield total
        gauge = GaugeMetricFamily("only1mcp_replicas_remediated", "Replicas held out of routing by remediation now",
                                  labels=("server", "action"))
        for key, value in sorted(held.items()):
            gauge.add_metric(key, float(value))
        yield gauge
        yield CounterMetricFamily("only1mcp_webhook_failures", "Remediation webhook POSTs that failed or were "
                                  "dropped", value=float(failures))


class _TTLCollector(Collector):
    """The response cache's learned TTL per tool (adaptive TTLs), read at scrape time."""

    def __init__(self, ttls: Callable[[], Mapping[tuple[str, str], float]]) -> None:
        self.ttls = ttls

    def collect(self) -> Iterator[Any]:
        try:
            ttls = dict(self.ttls())
        except Exception:  # a scrape must not fail because one source did
            log.exception("cache TTL metrics failed")
            return
        gauge = GaugeMetricFamily("only1mcp_cache_ttl_seconds", "Learned TTL of a tool's cached results "
                                  "([cache] adaptive_ttl), for tools whose entries have expired at least once",
                                  labels=("server", "tool"))
        for key, seconds in sorted(ttls.items()):
            gauge.add_metric(key, float(seconds))
        yield gauge


class _LimitCollector(Collector):
    """Sessions held and what the limits refused, read at scrape time (nothing on the call path)."""

    def __init__(self, sessions: Callable[[], Mapping[str, int]], refused: Callable[[], Mapping[str, int]]) -> None:
        self.sessions, self.refused = sessions, refused

    def collect(self) -> Iterator[Any]:
        held = self.sessions()
        yield GaugeMetricFamily("only1mcp_sessions", "Client sessions held", value=float(held.get("sessions", 0)))
        yield GaugeMetricFamily("only1mcp_session_clients", "Client identities holding sessions",
                                value=float(held.get("clients", 0)))
        total = CounterMetricFamily("only1mcp_limit_refusals", "Requests and streams refused or cut by a limit",
                                    labels=("limit",))
        for limit, count in sorted(self.refused().items()):
            total.add_metric((limit,), float(count))
        yield total


class ProxyMetrics:
    """The proxy's metrics. Outcome is one of :data:`OUTCOMES`; breaker state one of :data:`BREAKER_STATES`."""

    def __init__(self, max_series: int = 20_000) -> None:
        disable_created_metrics()  # no *_created series: they double the scrape for nothing we use
        self.registry = CollectorRegistry()
        self.max_series = max_series
        r = self.registry
        self._calls = Counter("only1mcp_calls", "Tool calls relayed to upstreams, by outcome",
                              ("server", "replica", "tool", "outcome"), registry=r)
        self._call_seconds = Histogram("only1mcp_call_seconds", "Upstream call latency in seconds",
                                       ("server", "replica", "tool"), buckets=CALL_BUCKETS, registry=r)
        self._inflight = Gauge("only1mcp_inflight", "Calls in flight to a replica", ("server", "replica"), registry=r)
        self._retries = Counter("only1mcp_retries", "Calls retried on another replica", ("server", "tool"),
                                registry=r)
        self._breaker = Gauge("only1mcp_breaker_state", "Circuit breaker state of a replica (1 = current state)",
                              ("server", "replica", "state"), registry=r)
        self._ejections = Counter("only1mcp_ejections", "Outlier ejections of a replica", ("server", "replica"),
                                  registry=r)
        self._requests = Counter("only1mcp_requests", "HTTP requests to /mcp by method and status",
                                 ("method", "status"), registry=r)
        self._rate_limited = Counter("only1mcp_rate_limited", "Requests refused by the rate limit", registry=r)
        self._call_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}
        self._request_children: dict[tuple[str, int], Any] = {}
        self._breakers: dict[tuple[str, str], dict[str, Any]] = {}
        self._collectors: dict[str, Collector] = {}
        self.register_collector(loop_stats, prefix="only1mcp_asyncio_", help_text="asyncio (not done, on the loop):")
        self.metrics_app = MetricsEndpoint(self.registry)

    # -- hot path ------------------------------------------------------------------
    def call(self, server: str, replica: str, tool: str, seconds: float, outcome: str) -> None:
        """One finished upstream call: counts it by outcome and observes its latency."""
        key = (server, replica, tool, outcome)
        pair = self._call_children.get(key)
        if pair is None:
            pair = self._call_pair(server, replica, tool, outcome)
        pair[0].inc()
        pair[1].observe(seconds)

    def _call_pair(self, server: str, replica: str, tool: str, outcome: str) -> tuple[Any, Any]:
        if len(self._call_children) >= self.max_series:
            tool = "_other"
        pair = (self._calls.labels(server, replica, tool, outcome), self._call_seconds.labels(server, replica, tool))
        if len(self._call_children) < self.max_series:
            self._call_children[(server, replica, tool, outcome)] = pair
        return pair

    def inflight(self, server: str, replica: str, delta: int) -> None:
        self._child(self._inflight, server, replica).inc(delta)

    def retry(self, server: str, tool: str) -> None:
        self._child(self._retries, server, tool).inc()

    def ejection(self, server: str, replica: str) -> None:
        self._child(self._ejections, server, replica).inc()

    def request(self, method: str, http_status: int) -> None:
        """One HTTP request to the front (``method`` is the HTTP method)."""
        child = self._request_children.get((method, http_status))
        if child is None:
            child = self._requests.labels(method if method in _HTTP_METHODS else "OTHER", str(http_status))
            if len(self._request_children) < 1000:
                self._request_children[(method, http_status)] = child
        child.inc()

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def breaker(self, server: str, replica: str, state: str) -> None:
        """The replica's breaker is now in ``state``: that state's series is 1, the others 0."""
        states = self._breakers.get((server, replica))
        if states is None:
            states = self._breakers[(server, replica)] = {
                s: self._breaker.labels(server, replica, s) for s in BREAKER_STATES}
        state = state.lower().replace("-", "_")
        if state not in states:
            states[state] = self._breaker.labels(server, replica, state)
        for name, child in states.items():
            child.set(1 if name == state else 0)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < self.max_series:
                self._children[key] = child
        return child

    # -- scrape-time values ----------------------------------------------------------
    def register_collector(self, fn: Callable[[], Mapping[str, float]], prefix: str = "only1mcp_cache_",
                           counters: Iterable[str] = (), help_text: str = "") -> None:
        """Expose ``fn()``'s ``{key: value}`` at each scrape as ``<prefix><key>`` gauges.

        Keys listed in ``counters`` are exposed as counters (``<prefix><key>_total``), for values
        that only grow (hits, misses, evictions). Registering again with the same prefix
        replaces the earlier collector (for a reload). A failing ``fn`` is logged and skipped."""
        old = self._collectors.pop(prefix, None)
        if old is not None:
            self.registry.unregister(old)
        collector = _ScrapeCollector(fn, prefix, frozenset(counters), help_text)
        self.registry.register(collector)
        self._collectors[prefix] = collector

    def register_decisions(self, counts: Callable[[], Mapping[tuple[str, str], int]],
                           ages: Callable[[], Mapping[str, float]]) -> None:
        """Expose ``only1mcp_decisions_total{kind,outcome}`` from ``counts()`` and
        ``only1mcp_decision_age_seconds{server}`` from ``ages()``, both read at scrape time."""
        self.register_custom("decisions", _DecisionCollector(counts, ages))

    def register_remediations(self, counts: Callable[[], Mapping[tuple[str, str, str], int]],
                              held: Callable[[], Mapping[tuple[str, str], int]], failures: Callable[[], int]) -> None:
        """Expose ``only1mcp_remediations_total{server,action,outcome}``,
        ``only1mcp_replicas_remediated{server,action}`` and ``only1mcp_webhook_failures_total``."""
        self.register_custom("remediations", _RemediationCollector(counts, held, failures))

    def register_cache_ttls(self, ttls: Callable[[], Mapping[tuple[str, str], float]]) -> None:
        """Expose ``only1mcp_cache_ttl_seconds{server,tool}`` from ``ttls()`` (the adaptive TTLs)."""
        self.register_custom("cache_ttls", _TTLCollector(ttls))

    def register_limits(self, sessions: Callable[[], Mapping[str, int]],
                        refused: Callable[[], Mapping[str, int]]) -> None:
        """Expose ``only1mcp_sessions``, ``only1mcp_session_clients`` and ``only1mcp_limit_refusals_total{limit}``."""
        self.register_custom("limits", _LimitCollector(sessions, refused))

    def register_custom(self, key: str, collector: Collector) -> None:
        """Register a collector under ``key``, replacing one registered earlier under it."""
        old = self._collectors.pop(key, None)
        if old is not None:
            self.registry.unregister(old)
        self.registry.register(collector)
        self._collectors[key] = collector

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics if ``accept`` asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class MetricsEndpoint:
    """A pure ASGI app answering GET/HEAD with the registry in the Prometheus text format."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # mounted alone, it has no lifespan to run
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class RequestMetricsMiddleware:
    """Counts each HTTP request to ``/mcp`` by method and response status (401s and 429s included)."""

    def __init__(self, app: Any, metrics: ProxyMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ("/mcp", "/mcp/"):
            await self.app(scope, receive, send)
            return
        method, record = scope["method"], self.metrics.request

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record(method, message["status"])
            await send(message)

        await self.app(scope, receive, counted)
