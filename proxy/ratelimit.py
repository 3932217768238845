"""Per-client rate limiting of ``POST /mcp``: a token bucket per client, as pure ASGI middleware.

The client is ``scope["state"]["client_id"]`` (set by the auth middleware: a hash of
the caller's token, else its address). A request that finds its bucket empty is
answered HTTP 429 with ``Retry-After`` and a JSON-RPC error (``RATE_LIMITED``), without
reading its body. Other methods and paths are not limited: GET holds one long stream
and DELETE ends a session.

Memory stays bounded: buckets are kept in least-recently-used order, and one idle
long enough to have refilled (so equal to a new one) is dropped; past ``max_clients``
the least recently used is dropped even if not full.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from only1mcp.errors import RATE_LIMITED
from only1mcp.proxy.auth import client_id_of
from only1mcp.traffic import RateLimitSettings

__all__ = ["TokenBucket", "RateLimiter", "RateLimitMiddleware", "effective_burst"]

Clock = Callable[[], float]


def effective_burst(rate: float, burst: int) -> int:
    """The bucket size: ``burst``, or one second's worth (at least one) when it is 0."""
    return burst if burst > 0 else max(1, math.ceil(rate))


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each request takes one. Pure: time is passed in."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens and return 0.0, or take none and return the seconds until they are there."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def full_at(self) -> float:
        """When the bucket will be full again if nothing takes from it."""
        return self.stamp + (self.burst - self.tokens) / self.rate


class RateLimiter:
    """Token buckets by client key, with bounded memory (see the module docstring)."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic, max_clients: int = 10_000) -> None:
        self.rate, self.burst = rate, effective_burst(rate, burst)
        self.clock, self.max_clients = clock, max_clients
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 if ``key`` may make a request now (and count it), else the seconds it must wait."""
        now = self.clock()
        buckets = self.buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._evict(now)
            bucket = buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(key)
        return bucket.take(now)

    def _evict(self, now: float) -> None:
        buckets = self.buckets
        while buckets:  # oldest first: drop those that have refilled, they equal new buckets
            oldest = next(iter(buckets.values()))
            if oldest.full_at() > now and len(buckets) < self.max_clients:
                break
            buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self.buckets)


class RateLimitMiddleware:
    """Answers ``POST /mcp`` with 429 when its client's bucket is empty; ``rate = 0`` turns it off.

    ``on_limited`` is called for each refused request (for a metrics counter)."""

    def __init__(self, app: Any, settings: RateLimitSettings, on_limited: Callable[[], None] | None = None,
                 clock: Clock = time.monotonic, max_clients: int = 10_000,
                 follow: Callable[[], RateLimitSettings] | None = None) -> None:
        """``follow``, if given, returns the settings in force; a change (a hot reload) is picked up."""
        self.app = app
        self.on_limited, self.clock, self.max_clients, self.follow = on_limited, clock, max_clients, follow
        self.update(settings)

    def _refresh(self, current: RateLimitSettings) -> None:
        if current == self.settings:  # a reload that left this table alone keeps the state
            self.settings = current
        else:
            self.update(current)

    def update(self, settings: RateLimitSettings) -> None:
        """Use new settings from the next request on (buckets start full again)."""
        self.settings = settings
        self.limiter = (RateLimiter(settings.rate, settings.burst, self.clock, self.max_clients)
                        if settings.rate > 0 else None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.follow is not None and self.follow() is not self.settings:
            self._refresh(self.follow())
        if (self.limiter is None or scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] not in ("/mcp", "/mcp/")):
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(client_id_of(scope))
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        if self.on_limited is not None:
            self.on_limited()
        retry_after = max(1, math.ceil(wait))
        body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {
            "code": RATE_LIMITED, "message": f"Too Many Requests: rate limit exceeded, retry in {retry_after} s",
            "data": {"retryAfter": retry_after}}})
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode())]})
        await send({"type": "http.response.body", "body": body})
