"""Settings of the streaming half: event emission from the proxy, the worker, and the stores.

Top-level tables ``[events]``, ``[worker]`` and ``[store]`` of the one configuration
file. ``KAFKA_BOOTSTRAP`` and ``REDIS_URL`` in the environment override the broker and
Redis addresses (read by the CLI, like every environment variable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from only1mcp.traffic import _non_negative, _positive, _share, check, secret, table

__all__ = ["EventSettings", "WorkerSettings", "WorkerPrefetchSettings", "StoreSettings", "DecisionSettings", "LearningSettings", "AnomalySettings",
           "FSYNC_POLICIES", "ANOMALY_FEATURES", "ANOMALY_ACTIONS"]

FSYNC_POLICIES = ("always", "batch", "never")
# What the anomaly agent can compute per entity and window (streams/anomaly_features.py).
ANOMALY_FEATURES = ("calls_per_s", "error_rate", "timeout_rate", "latency_p50_ms", "latency_p95_ms", "inflight_mean")
ANOMALY_ACTIONS = ("eject", "drain", "alert", "log")  # log: the AnomalyEvent only, no remediation record


def _tick(value: Any) -> str | None:
    # A crash must be acted on within 1 s end to end: fetch wait + a tick + the publish.
    return None if 0.05 <= value <= 0.5 else "must be between 0.05 and 0.5 seconds"


def _niceness(value: Any) -> str | None:
    return None if 0 <= value <= 19 else "must be between 0 (the default priority) and 19 (the lowest)"


def _port(value: Any) -> str | None:  # issue 12: [worker] metrics_port
    return None if 0 <= value <= 65535 else "must be a TCP port (0 = off)"


def _features(value: Any) -> str | None:
    unknown = [name for name in value if name not in ANOMALY_FEATURES]
    if unknown or not value or len(set(value)) != len(value):
        return (f"expected distinct names among {', '.join(ANOMALY_FEATURES)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return None


@dataclass(frozen=True)
class EventSettings:
    """Request events from the proxy to Kafka: never blocking a call, spooled to disk while
    the broker is away, replayed in order when it returns."""

    bootstrap: str = ""  # Kafka bootstrap servers, "host:port[,…]"; "" = no events
    topic: str = "mcp.requests"
    queue_size: int = check(_positive, 10_000)  # events held in memory before they go to the spool
    batch_size: int = check(_positive, 500)
    linger_ms: float = check(_non_negative, 20.0)
    spool_dir: str = ""  # "" = a folder under the system temp dir, per listen port
    spool_max_bytes: int = check(_positive, 256 * 1024 * 1024)  # past it events are dropped, counted, logged
    fsync: str = field(default="batch", metadata={"choices": FSYNC_POLICIES})
    hash_key: str = secret("")  # key of the keyed hashes (arguments, sessions); "" = random per process
    proxy_id: str = ""  # "" = host name and listen port


@dataclass(frozen=True)
class WorkerPrefetchSettings:
    """The prefetch agent in the worker (streams/prefetch.py): per session, the next-tool model
    (learned online, starting from the live prefetch model of the registry) and PrefetchDecisions
    on ``topic`` for the likeliest next tools the session has already called."""

    enabled: bool = True
    topic: str = "mcp.prefetch"
    min_confidence: float = check(_share, 0.5)  # a tool's predicted probability needed for a decision
    valid_for: float = check(_positive, 30.0)  # seconds a decision stays valid; older events decide nothing
    max_per_event: int = check(_positive, 2)  # decisions after one call, at most
    max_sessions: int = check(_positive, 100_000)  # sessions tracked; the least recently active go first
    session_idle: float = check(_positive, 1800.0)  # seconds without a call after which a session is dropped
    max_history: int = check(_positive, 8)  # tools remembered per session (the model looks at the last `order`)
    # Markov order of a model started empty (a loaded model keeps its own). 1: as accurate as 2 on the loadgen and
    # agent traces, and better calibrated (at min_confidence 0.5, 52 % of its decisions named the next tool on
    # the support trace, order 2's 37 %); 2 for workloads whose next call depends on the call before last
    order: int = check(_positive, 1)
    # args_hash is set when the tool's calls repeated the session's previous arguments of that tool at least
    # this often (after 20 calls); 1.0 never sets it
    repeat_confidence: float = check(_share, 0.9)


@dataclass(frozen=True)
class WorkerSettings:
    """The Faust worker: windows, sinks and the consumer group."""

    bootstrap: str = "127.0.0.1:9092"
    group: str = "only1mcp-features"
    partitions: int = check(_positive, 4)  # of the topics the worker creates (tansu needs them explicit)
    replication: int = check(_positive, 1)  # replication factor of the topics the worker creates (and of
    # Faust's changelogs): 1 on the embedded broker or one Kafka node; at most the broker count
    tumbling: tuple[str, ...] = ("10s", "60s")  # window sizes
    hopping: tuple[str, ...] = ("60s/10s",)  # size/step
    flush_interval: float = check(_positive, 1.0)  # seconds between micro-batches to Parquet (and offset commits)
    online_interval: float = check(_positive, 0.25)  # seconds between writes of current feature values to Redis
    fetch_max_wait: float = check(_positive, 0.1)  # longest a fetch waits at the broker for new records
    grace: float = check(_positive, 5.0)  # how late (event time) an event may come before its window closes
    outage_hold: float = check(_positive, 10.0)  # after the broker was unreachable, windows close on event
    # time alone for this long, so that events the proxies spooled meanwhile arrive before their windows close
    compact_interval: float = check(_non_negative, 300.0)  # seconds between compactions of the Parquet
    # dataset by the worker (many small files slow every query down); 0 = never (run `features compact`)
    merge_interval: float = check(_non_negative, 30.0)  # seconds between merges of each partition's small
    # files (<= 8 MiB: micro-batches, earlier merges) between compactions; 0 = never
    # issue 12: the worker's Prometheus /metrics (consumer lag per partition, streams/metrics.py); 0 = off
    metrics_port: int = check(_port, 0)
    metrics_host: str = "127.0.0.1"  # issue 12: where /metrics listens ("0.0.0.0" in a container)
    # The worker's CPU priority (os.nice at start). Sharing cores with the proxy (``only1mcp up`` on one
    # machine), the learning half should yield to the request path: its bursts (window closes, merges,
    # scoring) otherwise land in the proxy's tail latency. Its own work only waits, it is never lost.
    # A worker leading its own session (as `up` starts it) also sets its autogroup's nice, without which
    # Linux's autogroup scheduling ignores niceness across sessions (infra/priority.py).
    nice: int = check(_niceness, 0)
    # glibc malloc arenas of the worker process (0 = glibc's default, 8 per core): with the default its
    # threads fragment many arenas and its memory creeps up with nothing leaking (see limit_malloc_arenas).
    malloc_arenas: int = check(_non_negative, 2)
    prefetch: WorkerPrefetchSettings = table(WorkerPrefetchSettings)  # [worker.prefetch]


@dataclass(frozen=True)
class StoreSettings:
    """The online store (Redis) and the offline store (Parquet under ``data_dir``, read with DuckDB)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    online_ttl: float = check(_positive, 3600.0)  # seconds a feature hash lives in Redis
    key_prefix: str = "only1mcp"
    data_dir: str = "data"  # Parquet dataset root: requests/ and features/<table>/, hive-partitioned


@dataclass(frozen=True)
class DecisionSettings:
    """The proxy's subscription to the decision topics (routing weights, remediation, prefetch):
    every proxy reads every partition (no consumer group), from the newest records."""

    bootstrap: str = ""  # "" = the [events] bootstrap; no broker there = no decisions (classic policies only)
    topics: tuple[str, ...] = ("mcp.routing-weights", "mcp.remediation")
    lookback: int = check(_non_negative, 32)  # records re-read per partition at start-up, so a restarted
    # proxy applies the newest decisions at once instead of waiting one publish interval


@dataclass(frozen=True)
class LearningSettings:
    """The learning loop in the worker: the specialisation learner (per replica × tool EMA), the
    latency model (trained from the offline store, served with onnxruntime), routing weights out."""

    enabled: bool = True
    topic: str = "mcp.routing-weights"
    publish_interval: float = check(_positive, 1.0)  # seconds between published weights
    valid_for: float = check(_positive, 10.0)  # seconds a published decision stays valid at the proxy
    ewma_alpha: float = check(_positive, 0.1)  # weight of the newest call in the per replica × tool EMA
    min_samples: int = check(_positive, 10)  # calls of a replica × tool before its EMA counts
    temperature: float = check(_positive, 0.1)  # softmax over -predicted latency, relative to the best
    inflight_levels: int = check(_positive, 8)  # predicted latency published for 0 … levels-1 calls in flight
    retrain_interval: float = check(_non_negative, 300.0)  # seconds between retrainings; 0 = never retrain
    min_train_calls: int = check(_positive, 2000)  # calls in the offline store before a first training
    registry_dir: str = ""  # "" = <[store] data_dir>/models
    rollback_after: float = check(_positive, 60.0)  # seconds a live model may do worse than the baseline


@dataclass(frozen=True)
class AnomalySettings:
    """The anomaly agent in the worker (streams/anomaly.py): per replica and replica × tool, one
    observation per tick over the last ``window`` seconds, scored by the detector ensemble and a
    hard "down" rule; AnomalyEvents out, and Remediation decisions as the severity policy says."""

    enabled: bool = True
    topic: str = "mcp.anomalies"
    remediation_topic: str = "mcp.remediation"
    tick_interval: float = check(_tick, 0.25)  # seconds between assessments
    window: float = check(_positive, 1.0)  # seconds of calls behind each observation (tumbling windows)...
    max_window: float = check(_positive, 10.0)  # ...stretched up to this until they hold min_calls calls
    # What the detectors see. calls_per_s is left out by default: a replica's call rate is what routing
    # sends it (learned weights move it every second), not its health; measured, it raised false alarms.
    features: tuple[str, ...] = check(_features, ANOMALY_FEATURES[1:5])
    per_tool: bool = False  # also assess each replica × tool (events and alerts only, never an eject; costs
    # one ensemble per replica × tool, and a tool's few calls per window make its detectors noisy)
    min_calls: int = check(_positive, 5)  # calls a window needs before its rates and latencies count (else NaN)
    # An error or timeout rate change this small is at most one sigma to the SPC charts: healthy replicas
    # often fail no call for minutes, and a zero-width baseline made one failed call a critical anomaly.
    rate_scale: float = check(_share, 0.05)
    # Windows in a row a severity must hold before it counts (the down rule excepted): one slow window
    # on a shared host (a GC pause, a noisy neighbour) was a critical anomaly; a fault lasts.
    confirm_windows: int = check(_positive, 2)
    # ...within this many seconds: thin windows (fewer than min_calls calls) between them are no evidence,
    # so a replica that routing starves of calls can still be confirmed slow.
    confirm_within: float = check(_positive, 60.0)
    down_after: int = check(_positive, 5)  # consecutive failed calls that make a replica "down": critical at once
    critical_action: str = field(default="eject", metadata={"choices": ANOMALY_ACTIONS})
    high_action: str = field(default="drain", metadata={"choices": ANOMALY_ACTIONS})
    high_min_confidence: float = check(_share, 0.9)  # below it a high anomaly only alerts
    medium_action: str = field(default="log", metadata={"choices": ANOMALY_ACTIONS})
    low_action: str = field(default="log", metadata={"choices": ANOMALY_ACTIONS})
    close_after: float = check(_positive, 10.0)  # seconds below the threshold before an anomaly closes
    update_every: float = check(_non_negative, 1.0)  # at most one update record per anomaly this often
    valid_for: float = check(_positive, 5.0)  # seconds an eject / drain holds; re-published every tick while open
    state_dir: str = ""  # detector state (JSON) saved here; "" = <[store] data_dir>/anomaly
    save_interval: float = check(_non_negative, 60.0)  # seconds between state saves (and one at stop); 0 = at stop only
    queue_size: int = check(_positive, 10_000)  # events held while the broker is away; past it the oldest go
