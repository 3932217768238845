"""Response cache for safe tool calls: byte-bounded, with TTLs, invalidation by server, and a
choice of eviction policy (``lru``, ``s3fifo``, ``sieve``). Pure and synchronous; every call
that needs the time takes ``now``. Each policy module registers itself in ``POLICIES``."""

from only1mcp.proxy.cache.base import POLICIES, Entry, ResponseCache, cache_key, make_cache, scoped_key
from only1mcp.proxy.cache.adaptive import AdaptiveTTLs
from only1mcp.proxy.cache.lru import LRUCache  # importing each policy registers it
from only1mcp.proxy.cache.s3fifo import S3FIFOCache
from only1mcp.proxy.cache.sieve import SieveCache

__all__ = [
    "POLICIES", "Entry", "ResponseCache", "cache_key", "make_cache", "scoped_key", "LRUCache", "S3FIFOCache",
    "SieveCache", "AdaptiveTTLs",
]
