"""Traffic-management settings: health checks, outlier ejection, circuit breaking, retries,
caching, rate limiting and auth. Part of the one frozen ``Settings`` object.

Each is a small frozen table; ``parse_table`` reads one from TOML by its fields' types,
so a key that is unknown or of the wrong type is refused with the file, key and reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from only1mcp.errors import ConfigError

__all__ = [
    "HealthSettings", "OutlierSettings", "BreakerSettings", "ToolSettings", "RetrySettings", "CacheSettings",
    "AuthSettings", "RateLimitSettings", "RemediationSettings", "parse_table", "secret", "table", "CACHE_POLICIES",
    "CACHE_SCOPES",
]

CACHE_POLICIES = ("lru", "s3fifo", "sieve")
CACHE_SCOPES = ("client", "shared")  # who may be answered from a tool's cached result
T = TypeVar("T")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be positive"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be zero or positive"


def _share(value: Any) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def _webhook_url(value: Any) -> str | None:
    ok = value == "" or value.startswith(("http://", "https://"))
    # The value is not echoed: a webhook URL is often a credential itself (a Slack hook's path is).
    return None if ok else 'expected an http:// or https:// URL, or "" for none'


def check(rule: Callable[[Any], str | None], default: Any) -> Any:
    return field(default=default, metadata={"check": rule})


def secret(default: Any) -> Any:
    """A field whose value is a credential: a refusal names the key but never shows the value
    (errors end up in logs, on stderr and in /admin/reload answers)."""
    return field(default=default, metadata={"secret": True})


@dataclass(frozen=True)
class HealthSettings:
    """Active checks: an MCP ping to each replica every ``interval`` seconds (0 = off)."""

    interval: float = check(_non_negative, 5.0)
    timeout: float = check(_positive, 2.0)
    unhealthy_threshold: int = check(_positive, 3)  # consecutive failed checks to mark a replica unhealthy
    healthy_threshold: int = check(_positive, 2)  # consecutive good checks to take it back


@dataclass(frozen=True)
class OutlierSettings:
    """Passive outlier detection from real calls, with ejection (as Envoy's)."""

    consecutive_failures: int = check(_positive, 5)
    error_rate: float = check(_share, 0.5)  # over the last `window` seconds, with at least min_requests
    min_requests: int = check(_positive, 20)
    window: float = check(_positive, 10.0)
    ejection_time: float = check(_positive, 30.0)  # grows with each ejection of the same replica
    max_ejection_time: float = check(_positive, 300.0)
    max_ejected_share: float = check(_share, 0.5)  # never eject more than this share of a server's replicas


@dataclass(frozen=True)
class RemediationSettings:
    """``[servers.remediation]``: whether remediation decisions from the learning loop (``mcp.remediation``)
    change routing for this server, and how far they may go."""

    auto: bool = True  # false = record each decision as an alert only; routing unchanged
    # Never hold out more than this share of the server's replicas, counting those health took out;
    # None (not set) = the server's [servers.outlier] max_ejected_share.
    max_out_share: float | None = check(_share, None)
    min_out_s: float = check(_non_negative, 10.0)  # an eject this soon after a restore counts as a flap
    webhook: str = check(_webhook_url, "")  # POST each change (record + outcome) here; "" = none
    webhook_timeout: float = check(_positive, 2.0)  # seconds per POST; it never delays routing


@dataclass(frozen=True)
class BreakerSettings:
    """Circuit breaker per replica: closed, open after failures, half-open probes."""

    failure_threshold: int = check(_positive, 5)  # consecutive failures that open the breaker
    open_for: float = check(_positive, 10.0)  # seconds open before half-open
    half_open_probes: int = check(_positive, 1)  # calls let through while half-open


@dataclass(frozen=True)
class RetrySettings:
    """Retries on another replica, for tools safe to repeat only, within a budget (as Finagle's)."""

    max_attempts: int = check(_positive, 3)
    budget_ratio: float = check(_share, 0.2)  # retries may add at most this share of calls...
    min_per_second: float = check(_non_negative, 5.0)  # ...plus this many retries per second


@dataclass(frozen=True)
class ToolSettings:
    """Per-tool overrides, keyed by the tool's upstream name under ``[servers.tools.NAME]``."""

    timeout: float | None = None
    cache_ttl: float = check(_non_negative, 0.0)  # seconds; 0 = not cached
    # "client": a cached result answers only the client that caused it (its token, else its address);
    # "shared": any client. Per client by default: a read-only tool may still read per-user data.
    cache_scope: str = field(default="client", metadata={"choices": CACHE_SCOPES})
    safe: bool | None = None  # None: trust annotations (readOnlyHint / idempotentHint)
    # Operator overrides that beat any policy and any learned weight (replica ids, e.g. "search/0"):
    pin: tuple[str, ...] = ()  # route this tool only to these replicas while one of them is routable
    ban: tuple[str, ...] = ()  # never route this tool to these replicas while another is routable
    # false: prefetch decisions never run this tool ([prefetch]); it is still cached as configured
    prefetch: bool = True


@dataclass(frozen=True)
class CacheSettings:
    max_bytes: int = check(_non_negative, 64 * 1024 * 1024)  # 0 = no cache
    policy: str = field(default="s3fifo", metadata={"choices": CACHE_POLICIES})
    default_ttl: float = check(_non_negative, 0.0)  # for safe tools without their own cache_ttl; 0 = off
    # Learn each cached tool's TTL from whether its result changed when its entry expired, starting
    # from its configured TTL, within [min_ttl, max_ttl]; max_ttl also caps an upstream's ttlMs hint.
    adaptive_ttl: bool = False
    min_ttl: float = check(_positive, 1.0)
    max_ttl: float = check(_positive, 3600.0)


@dataclass(frozen=True)
class AuthSettings:
    """Without tokens the proxy serves anyone, and so binds only to loopback addresses."""

    tokens: tuple[str, ...] = secret(())  # client bearer tokens / API keys
    admin_token: str = secret("")  # for /admin; empty = admin endpoints only from loopback without a token


@dataclass(frozen=True)
class RateLimitSettings:
    """A token bucket per client (its token, else its address). 0 = no limit."""

    rate: float = check(_non_negative, 0.0)  # requests per second
    burst: int = check(_non_negative, 0)  # bucket size; 0 = one second's worth


def parse_table(cls: type[T], raw: Any, source: str, where: str) -> T:
    """Build the frozen dataclass ``cls`` from a TOML table, refusing unknown keys and bad values."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(source, where, "must be a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spec = known.get(key)
        if spec is None:
            raise ConfigError(source, f"{where}.{key}", f"unknown key (expected one of: {', '.join(sorted(known))})")
        values[key] = _value(spec, value, source, f"{where}.{key}")
    return cls(**values)


def table(cls: type[Any]) -> Any:
    """A field holding a nested table (``[outer.inner]`` in TOML), parsed with :func:`parse_table`."""
    return field(default_factory=cls, metadata={"table": cls})


def _value(spec: Any, value: Any, source: str, key: str) -> Any:
    nested = spec.metadata.get("table")
    if nested is not None:
        return parse_table(nested, value, source, key)
    kind = str(spec.type).replace(" | None", "")
    if value is None and "None" in str(spec.type):
        return None
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        shown = "a value of another type (not shown: a secret)" if spec.metadata.get("secret") else repr(value)
        raise ConfigError(source, key, f"expected {kind.replace('tuple[str, ...]', 'a list of strings')}, "
                                       f"got {shown}")
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(source, key, f"expected one of {', '.join(choices)}, got {value!r}")
    rule = spec.metadata.get("check")
    problem = rule(value) if rule and value is not None else None
    if problem:
        raise ConfigError(source, key, problem)
    return value


def default_of(cls: type[Any], name: str) -> Any:
    spec = {f.name: f for f in fields(cls)}[name]
    return spec.default if spec.default is not MISSING else spec.default_factory()  # type: ignore[misc]
