"""The online store: the latest feature values per entity and window, in Redis hashes with a TTL.

Key layout (one hash per entity and window)::

    {prefix}:f:{entity_type}:{entity_id}:{window}      e.g.  only1mcp:f:replica:r1:60s/10s

Fields: every feature column of ``registry.FEATURES`` (as decimal text), plus ``window_start``
and ``window_end`` (unix seconds of the window the values describe) and ``updated_at``. The
whole hash expires ``ttl`` seconds after its last write, so an entity that goes quiet leaves
no stale numbers behind. Entity ids may contain ``:``; the window (last part) never does.

Writes and reads are pipelined (one round trip per call). Connection errors and timeouts are
retried as an *error policy* says: a callable ``(error, attempt) -> seconds | None`` that
returns how long to wait before the next attempt, or ``None`` to give up, which raises
:class:`OnlineStoreUnavailable` (the caller decides: the worker keeps its data and tries at the
next flush). Nothing here crashes the process on a Redis outage.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from only1mcp.feature_store.registry import FEATURES

__all__ = ["ErrorPolicy", "OnlineStoreUnavailable", "RedisOnlineStore", "backoff_policy", "feature_key"]

log = logging.getLogger(__name__)
T = TypeVar("T")
ErrorPolicy = Callable[[Exception, int], "float | None"]
_RETRIED = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError is a ConnectionError too
_FEATURE_COLUMNS = tuple(f.name for f in FEATURES)
_META_COLUMNS = ("window_start", "window_end")


class OnlineStoreUnavailable(RuntimeError):
    """Redis did not answer within what the error policy allowed."""


def backoff_policy(attempts: int = 5, base_s: float = 0.1, cap_s: float = 2.0) -> ErrorPolicy:
    """Retry ``attempts`` times in all, waiting base·2^n (capped, with jitter) between them."""

    def policy(error: Exception, attempt: int) -> float | None:
        if attempt >= attempts:
            return None
        delay = min(cap_s, base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        log.warning("redis: %s (attempt %d of %d), retrying in %.2fs", error, attempt, attempts, delay)
        return delay

    return policy


def feature_key(prefix: str, entity_type: str, entity_id: str, window: str) -> str:
    return f"{prefix}:f:{entity_type}:{entity_id}:{window}"


def _split_name(name: str) -> tuple[str, str]:
    feature, sep, window = name.partition("@")
    if not sep or not feature or not window:
        raise ValueError(f"feature names are qualified by their window, e.g. latency_p95_ms@10s; got {name!r}")
    return feature, window


class RedisOnlineStore:
    """Pipelined writes of feature rows and reads of named features, with an error policy."""

    def __init__(self, url: str, *, prefix: str = "only1mcp", ttl: float = 3600.0,
                 on_error: ErrorPolicy | None = None, timeout_s: float = 2.0) -> None:
        self.prefix, self.ttl_ms = prefix, max(1, int(ttl * 1000))
        self.on_error = on_error or backoff_policy()
        # redis-py's own retries are off: one policy, ours, decides, and a dead server fails fast.
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry=Retry(NoBackoff(), 0), decode_responses=True)

    @classmethod
    def from_settings(cls, store: Any, on_error: ErrorPolicy | None = None) -> RedisOnlineStore:
        """From a StoreSettings (redis_url, key_prefix, online_ttl)."""
        return cls(store.redis_url, prefix=store.key_prefix, ttl=store.online_ttl, on_error=on_error)

    def key(self, entity_type: str, entity_id: str, window: str) -> str:
        return feature_key(self.prefix, entity_type, entity_id, window)

    def _retry(self, action: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except _RETRIED as exc:
                delay = self.on_error(exc, attempt)
                if delay is None:
                    raise OnlineStoreUnavailable(f"redis unavailable after {attempt} attempt(s): {exc}") from exc
                time.sleep(delay)

    def write_rows(self, rows: Iterable[Mapping[str, Any]], updated_at: float | None = None) -> int:
        """Write feature rows (as compute.feature_row makes them), one hash each; returns how many."""
        now = time.time() if updated_at is None else updated_at
        entries = []
        for row in rows:
            fields = {c: repr(float(row[c])) for c in (*_FEATURE_COLUMNS, *_META_COLUMNS)}
            fields["updated_at"] = repr(now)
            entries.append((self.key(row["entity_type"], row["entity_id"], row["window"]), fields))
        if not entries:
            return 0

        def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            for key, fields in entries:
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, self.ttl_ms)
            pipe.execute()

        self._retry(send)
        return len(entries)

    def get_online_features(self, entity: tuple[str, str], feature_names: Sequence[str]) -> dict[str, float | None]:
        """Values of ``feature_names`` (``name@window``) for one ``(entity_type, entity_id)``; None = unknown."""
        return self.get_many([entity], feature_names)[0]

    def get_many(self, entities: Sequence[tuple[str, str]],
                 feature_names: Sequence[str]) -> list[dict[str, float | None]]:
        """Like get_online_features for several entities, in one round trip."""
        by_window: dict[str, list[str]] = {}
        for name in feature_names:
            feature, window = _split_name(name)
            by_window.setdefault(window, []).append(feature)
        plan = [(e, w, fs) for e in entities for w, fs in by_window.items()]

        def fetch() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for (entity_type, entity_id), window, features in plan:
                pipe.hmget(self.key(entity_type, entity_id, window), features)
            return pipe.execute()

        answers = self._retry(fetch) if plan else []
        out: list[dict[str, float | None]] = [{} for _ in entities]
        for index, ((_, window, features), values) in enumerate(zip(plan, answers)):
            target = out[index // len(by_window)]
            for feature, value in zip(features, values):
                target[f"{feature}@{window}"] = None if value is None else float(value)
        return out

    def delete_all(self) -> int:
        """Delete every feature hash under this prefix (tests, resets)."""
        keys = list(self._retry(lambda: list(self.client.scan_iter(f"{self.prefix}:f:*", count=1000))))
        return self._retry(lambda: self.client.delete(*keys)) if keys else 0

    def close(self) -> None:
        self.client.close()
