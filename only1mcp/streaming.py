"""Settings of the streaming half: event emission from the proxy, the worker, and the stores.

Top-level tables ``[events]``, ``[worker]`` and ``[store]`` of the one configuration
file. ``KAFKA_BOOTSTRAP`` and ``REDIS_URL`` in the environment override the broker and
Redis addresses (read by the CLI, like every environment variable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from only1mcp.traffic import check, _non_negative, _positive

__all__ = ["EventSettings", "WorkerSettings", "StoreSettings", "DecisionSettings", "LearningSettings", "FSYNC_POLICIES"]

FSYNC_POLICIES = ("always", "batch", "never")


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
    hash_key: str = ""  # key of the keyed hashes (arguments, sessions); "" = random per process
    proxy_id: str = ""  # "" = host name and listen port


@dataclass(frozen=True)
class WorkerSettings:
    """The Faust worker: windows, sinks and the consumer group."""

    bootstrap: str = "127.0.0.1:9092"
    group: str = "only1mcp-features"
    partitions: int = check(_positive, 4)  # of the topics the worker creates (tansu needs them explicit)
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
