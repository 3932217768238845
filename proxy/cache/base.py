"""The response-cache interface and what every policy shares.

A cache holds results of safe tool calls under a canonical key (``cache_key``), bounded by
the total ``size`` in bytes its callers declare. It is pure and synchronous: no I/O, no
locks, no clock of its own -- every call that needs the time takes ``now``, so tests drive
expiry with plain numbers and the proxy passes ``time.monotonic()``.

``ResponseCache`` keeps the index, the byte and tag accounting, TTLs and the counters; a
policy (LRU, S3-FIFO, SIEVE) only orders entries and picks eviction victims through four
hooks. Policies register themselves by name in ``POLICIES``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

try:  # a declared dependency, but keep the key computable without it
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

__all__ = ["Entry", "ResponseCache", "POLICIES", "make_cache", "cache_key", "scoped_key"]

STAT_NAMES = ("hits", "misses", "evictions", "expirations", "rejected", "invalidations")


class Entry:
    """One cached result. Policies subclass it to add their own bookkeeping slots."""

    __slots__ = ("key", "value", "size", "expires_at", "tag")

    def __init__(self, key: str, value: Any, size: int, expires_at: float, tag: str) -> None:
        self.key, self.value, self.size, self.expires_at, self.tag = key, value, size, expires_at, tag

    def expired(self, now: float) -> bool:
        return now >= self.expires_at  # a TTL of 10 s means gone *at* t+10, not just after


class ResponseCache(ABC):
    """A byte-bounded map from key to result with per-entry TTL and tags (the server name)."""

    name: ClassVar[str]
    entry_type: ClassVar[type[Entry]] = Entry

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be zero or positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: dict[str, Entry] = {}
        self._tags: dict[str, dict[str, None]] = {}  # tag -> keys; invalidation without a full scan
        self._bytes = 0
        self._counts = dict.fromkeys(STAT_NAMES, 0)
        # The value of the entry the latest get() found expired and dropped, else None: the caller
        # compares it with the fresh result to learn how often the tool's results change.
        self.expired: Any = None

    # -- the interface ---------------------------------------------------------------------

    def get(self, key: str, now: float, count_miss: bool = True) -> Any | None:
        """The cached value, or None if absent or expired (an expired entry is dropped, its value
        kept in ``expired`` until the next get). ``count_miss=False`` for a first look-up the
        caller follows with another under a second key: one call counts one miss, not two."""
        self.expired = None
        entry = self._entries.get(key)
        if entry is None:
            self._counts["misses"] += count_miss
            return None
        if entry.expired(now):
            self._discard(entry)
            self.expired = entry.value
            self._counts["expirations"] += 1
            self._counts["misses"] += count_miss
            return None
        self._counts["hits"] += 1
        self._on_hit(entry)
        return entry.value

    def put(self, key: str, value: Any, size: int, ttl: float, now: float, tag: str) -> None:
        """Store ``value`` (``size`` bytes) for ``ttl`` seconds, evicting per the policy to fit.

        A value for a key already present replaces it. A ``ttl`` of zero or less stores
        nothing (as ``cache_ttl = 0`` means "not cached"); a value larger than the whole
        cache is refused and counted as ``rejected``. Either way an older value under the
        same key is dropped, so a stale result never outlives a newer one.
        """
        if size < 0:
            raise ValueError(f"size must be zero or positive, got {size}")
        previous = self._entries.get(key)
        if previous is not None:
            self._discard(previous)  # a replacement, not an eviction: no counter moves
        if ttl <= 0:
            return
        if size > self.max_bytes:
            self._counts["rejected"] += 1
            return
        while self._bytes + size > self.max_bytes:  # size <= max_bytes, so this ends
            self._make_room(now)
        entry = self.entry_type(key, value, size, now + ttl, tag)
        self._entries[key] = entry
        self._tags.setdefault(tag, {})[key] = None
        self._bytes += size
        self._admit(entry, previous)

    def invalidate(self, tag: str) -> int:
        """Drop every entry stored under ``tag`` (a server whose tools changed); how many."""
        keys = list(self._tags.get(tag, ()))
        for key in keys:
            self._discard(self._entries[key])
        self._counts["invalidations"] += len(keys)
        self._on_invalidate(tag)
        return len(keys)

    def clear(self) -> None:
        """Drop every entry. The counters are cumulative and survive."""
        self._entries.clear()
        self._tags.clear()
        self._bytes = 0
        self._on_clear()

    def live(self, key: str, now: float) -> bool:
        """Whether ``key`` holds an entry that has not expired; moves no counter and no policy state
        (prefetch asks it before fetching what is already there, and to tell an entry's loss)."""
        entry = self._entries.get(key)
        return entry is not None and not entry.expired(now)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, int]:
        return {**self._counts, "entries": len(self._entries), "bytes": self._bytes}

    # -- for policies ----------------------------------------------------------------------

    def _forget(self, entry: Entry) -> None:
        """Remove ``entry`` from the shared index and accounting (not from policy queues)."""
        del self._entries[entry.key]
        keys = self._tags[entry.tag]
        del keys[entry.key]
        if not keys:
            del self._tags[entry.tag]
        self._bytes -= entry.size

    def _discard(self, entry: Entry) -> None:
        self._unlink(entry)
        self._forget(entry)

    def _evicted(self, entry: Entry, now: float) -> None:
        """A policy has taken ``entry`` out of its queues to make room: forget and count it.

        A victim that had already expired counts as an expiration, not an eviction, so
        ``evictions`` measures only live results the policy chose to lose.
        """
        self._forget(entry)
        self._counts["expirations" if entry.expired(now) else "evictions"] += 1

    @abstractmethod
    def _admit(self, entry: Entry, previous: Entry | None) -> None:
        """Place a new entry; ``previous`` is the entry it replaces (already unlinked), if any."""

    @abstractmethod
    def _on_hit(self, entry: Entry) -> None:
        """Record an access to a live entry."""

    @abstractmethod
    def _unlink(self, entry: Entry) -> None:
        """Take ``entry`` out of the policy's queues (expiry, invalidation, replacement)."""

    @abstractmethod
    def _make_room(self, now: float) -> None:
        """Remove at least one entry, through ``_evicted``. Called only while not empty."""

    def _on_invalidate(self, tag: str) -> None:
        """Forget any extra per-tag state (S3-FIFO's ghosts). Most policies keep none."""
        return None

    @abstractmethod
    def _on_clear(self) -> None:
        """Empty the policy's queues."""


POLICIES: dict[str, Callable[[int], ResponseCache]] = {}


def make_cache(policy: str, max_bytes: int) -> ResponseCache:
    """A cache of ``max_bytes`` with the named policy (one of ``CacheSettings.policy``)."""
    try:
        factory = POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown cache policy {policy!r} (expected one of: {', '.join(sorted(POLICIES))})") from None
    return factory(max_bytes)


def cache_key(server: str, tool: str, arguments: Mapping[str, Any] | None) -> str:
    """``server \\0 tool \\0 sha256(canonical JSON of arguments)``.

    Canonical JSON has sorted keys, no whitespace and raw UTF-8, so the order of argument
    keys never matters but every value does. No arguments and ``{}`` are the same call.
    """
    args = {} if arguments is None else arguments
    try:
        canonical = orjson.dumps(args, option=orjson.OPT_SORT_KEYS)  # type: ignore[union-attr]
    except (TypeError, AttributeError):  # no orjson, or a value it refuses (an int beyond 64 bits, a Mapping subclass)
        canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                               default=dict).encode()
    return f"{server}\x00{tool}\x00{hashlib.sha256(canonical).hexdigest()}"


def scoped_key(key: str, client: str) -> str:
    """``key`` (a ``cache_key``) for one client only: ``client`` is an opaque identity (the proxy
    passes a keyed hash, never a token). It never equals a shared key: the part after the 64-hex
    argument digest has no counterpart there."""
    return f"{key}\x00{client}"
