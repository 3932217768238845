"""Settings: one frozen object, built once by the CLI from a TOML file and the environment.

Unknown keys and bad values are rejected at start-up with the file, the key and the
reason. Environment variables ``ONLY1MCP_PROXY_<KEY>`` override keys of ``[proxy]``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from only1mcp.context import ContextSettings
from only1mcp.errors import ConfigError
from only1mcp.prefetch.settings import PrefetchSettings
from only1mcp.streaming import (
    AnomalySettings, DecisionSettings, EventSettings, LearningSettings, StoreSettings, WorkerSettings,
)
from only1mcp.traffic import (
    AuthSettings, BreakerSettings, CacheSettings, HealthSettings, OutlierSettings, RateLimitSettings,
    RemediationSettings, RetrySettings, ToolSettings, parse_table,
)

__all__ = ["Settings", "ProxySettings", "ServerSettings", "ReplicaSettings", "load_settings", "parse_settings"]

ENV_PREFIX = "ONLY1MCP_PROXY_"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{0,64}$")
# The routing policies the proxy registers (proxy/routing); the core names them to validate configs.
POLICIES = ("round_robin", "random", "least_inflight", "p2c_ewma", "consistent_hash", "weighted", "learned")
_LEARNING_POLICIES = ("weighted", "learned")  # need a classic fallback_policy
HASH_KEYS = ("session", "arguments")
PROTOCOLS = ("auto", "2026-07-28", "2025-11-25")


@dataclass(frozen=True)
class ReplicaSettings:
    url: str | None = None  # Streamable HTTP upstream
    command: tuple[str, ...] | None = None  # stdio upstream, spawned and supervised
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Upstream revision. Initialize sessions by default: servers that offer 2026-07-28 may still have
    # tools written for a back-channel (ctx.elicit on the POST stream) that fails without a session.
    protocol: str = "2025-11-25"

    @property
    def label(self) -> str:
        return self.url if self.url else " ".join(self.command or ())


@dataclass(frozen=True)
class ServerSettings:
    name: str
    namespace: str
    replicas: tuple[ReplicaSettings, ...]
    policy: str = "p2c_ewma"  # Linkerd's default: power of two choices over peak-EWMA cost
    timeout: float | None = None  # per-call timeout; None = the proxy's call_timeout
    upstream_sessions: int = 4  # MCP sessions per HTTP replica; stateless calls spread over them
    # Calls one replica may have in flight; routing skips a replica at it, and a call that finds every
    # routable replica there fails at once with -32010 (an overload is refused, not queued); 0 = no cap.
    max_inflight: int = 256
    fallback_policy: str = "p2c_ewma"  # what "weighted" and "learned" use while weights are stale or missing
    # learned: every routable replica keeps at least this share of the calls. Small: each share is a
    # call sent where the model expects it slower (at 5 % on 4 replicas a perfect model's p95 nearly doubles)
    exploration: float = 0.01
    temperature: float = 0.1  # learned: softmax temperature over predicted latency, relative to the best
    sticky: bool = False  # keep each client session on one replica while it is healthy
    prefetch: bool = True  # false: no prefetch decision ever runs a call of this server ([prefetch])
    hash_key: str = "session"  # consistent_hash: by client session or by the call's argument hash
    hash_load_factor: float = 1.25  # consistent_hash bounded load: at most this × the mean load per replica
    health: HealthSettings = field(default_factory=HealthSettings)
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    remediation: RemediationSettings = field(default_factory=RemediationSettings)
    tools: Mapping[str, ToolSettings] = field(default_factory=dict)  # by the tool's upstream name


@dataclass(frozen=True)
class ProxySettings:
    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = 4 * 1024 * 1024
    call_timeout: float = 60.0
    connect_timeout: float = 10.0
    allowed_origins: tuple[str, ...] = ()  # besides loopback origins, which are always allowed
    page_size: int = 100
    max_tool_name_length: int = 64
    session_idle_timeout: float = 3600.0
    log_level: str = "info"
    # Limits under abuse (README "Limits under abuse" says why these defaults).
    max_sessions: int = 10_000  # client sessions in all; past it initialize gets 503
    max_sessions_per_client: int = 1_000  # per client identity (token, else address); past it 429
    max_inflight_per_session: int = 100  # requests of one session being answered at once; past it 429
    max_inflight_per_client: int = 256  # stateless (2026-07-28) calls of one client at once; past it 429
    header_timeout: float = 10.0  # seconds from connecting (or the previous answer) to a whole request head
    body_timeout: float = 30.0  # seconds to receive a whole POST body; past it 408 and the connection closes
    max_stream_buffer_bytes: int = 1024 * 1024  # bytes queued for one SSE answer stream a client does not read
    stream_write_timeout: float = 30.0  # seconds one SSE write may wait for a client that does not read
    # The kernel's send buffer per client connection (SO_SNDBUF; Linux doubles it). Autotuned it grows to
    # megabytes, which a slow SSE reader fills unseen by max_stream_buffer_bytes; 0 = autotuning.
    send_buffer_bytes: int = 256 * 1024
    # Last-Event-ID resumption (session revisions): sent SSE events kept for replay, oldest evicted first.
    replay_buffer_bytes: int = 1024 * 1024  # per session; 0 = no event ids, no resumption
    replay_total_bytes: int = 64 * 1024 * 1024  # over all sessions (the least recently written lose theirs first)
    # A demo deployment (docker-compose.yml, `only1mcp up --demo`): only then are the published demo
    # tokens accepted; anywhere else they would be a password everyone knows (proxy/auth.py DEMO_TOKENS).
    demo: bool = False

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class Settings:
    proxy: ProxySettings = field(default_factory=ProxySettings)
    servers: tuple[ServerSettings, ...] = ()
    auth: AuthSettings = field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    events: EventSettings = field(default_factory=EventSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    decisions: DecisionSettings = field(default_factory=DecisionSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)
    context: ContextSettings = field(default_factory=ContextSettings)  # tools/list context optimisation
    prefetch: PrefetchSettings = field(default_factory=PrefetchSettings)  # the proxy's prefetch executor
    source: str = "<defaults>"


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(source, "-", "file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "-", f"invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib decodes before it parses
        raise ConfigError(source, "-", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
                                       f"{exc.start})") from None
    except OSError as exc:  # a directory, no permission, …
        raise ConfigError(source, "-", f"cannot read: {exc.strerror or exc}") from None
    return parse_settings(raw, source, environ or {})


_TABLES = {"auth": AuthSettings, "rate_limit": RateLimitSettings, "cache": CacheSettings, "retry": RetrySettings,
           "events": EventSettings, "worker": WorkerSettings, "store": StoreSettings,
           "decisions": DecisionSettings, "learning": LearningSettings, "anomaly": AnomalySettings,
           "context": ContextSettings, "prefetch": PrefetchSettings}
# Where the broker and Redis are is the environment's business (only1mcp up, compose): these win.
_ADDRESS_ENV = {"KAFKA_BOOTSTRAP": (("events", "bootstrap"), ("worker", "bootstrap"), ("decisions", "bootstrap")),
                "REDIS_URL": (("store", "redis_url"),)}
# Secrets belong in the environment rather than in a file: these override [auth].
_AUTH_ENV = {"ONLY1MCP_AUTH_TOKENS": "tokens", "ONLY1MCP_ADMIN_TOKEN": "admin_token"}


def parse_settings(raw: Mapping[str, Any], source: str, environ: Mapping[str, str]) -> Settings:
    _reject_unknown(raw, {"proxy", "servers", *_TABLES}, source, "")
    tables = {name: parse_table(cls, raw.get(name), source, name) for name, cls in _TABLES.items()}
    if tables["cache"].min_ttl > tables["cache"].max_ttl:
        raise ConfigError(source, "cache.min_ttl", f"must not exceed max_ttl ({tables['cache'].max_ttl:g} s)")
    auth_overrides = {key: environ[var] for var, key in _AUTH_ENV.items() if var in environ}
    if auth_overrides:
        merged = {**dict(raw.get("auth") or {}), **auth_overrides}
        if "tokens" in auth_overrides:
            merged["tokens"] = [t.strip() for t in auth_overrides["tokens"].split(",") if t.strip()]
        tables["auth"] = parse_table(AuthSettings, merged, "environment", "auth")
    for var, targets in _ADDRESS_ENV.items():
        if environ.get(var):
            for table, key in targets:
                merged = {**dict(raw.get(table) or {}), key: environ[var]}
                tables[table] = parse_table(_TABLES[table], merged, var, table)
    proxy = _parse_proxy(raw.get("proxy", {}), source, environ)
    servers_raw = raw.get("servers", [])
    if not isinstance(servers_raw, list):
        raise ConfigError(source, "servers", "must be an array of tables ([[servers]])")
    servers = tuple(_parse_server(s, source, f"servers[{i}]") for i, s in enumerate(servers_raw))
    _check_unique(servers, source)
    return Settings(proxy=proxy, servers=servers, source=source, **tables)


def _reject_unknown(table: Mapping[str, Any], known: set[str], source: str, where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(source, f"{where}{key}", f"unknown key (expected one of: {', '.join(sorted(known))})")


_PROXY_TYPES = {f.name: f.type for f in fields(ProxySettings)}


def _parse_proxy(table: Any, source: str, environ: Mapping[str, str]) -> ProxySettings:
    if not isinstance(table, dict):
        raise ConfigError(source, "proxy", "must be a table")
    table = dict(table)  # environment overrides are merged into a copy
    _reject_unknown(table, set(_PROXY_TYPES), source, "proxy.")
    for env_key, value in environ.items():
        if env_key.startswith(ENV_PREFIX):
            key = env_key[len(ENV_PREFIX):].lower()
            if key not in _PROXY_TYPES:
                raise ConfigError(env_key, f"proxy.{key}", "unknown setting named by environment variable")
            table[key] = _from_env(value, _PROXY_TYPES[key], env_key, key)
    values: dict[str, Any] = {}
    for key, value in table.items():
        values[key] = _coerce(value, _PROXY_TYPES[key], source, f"proxy.{key}")
    if "max_sessions_per_client" not in values and isinstance(values.get("max_sessions"), int):
        # A small max_sessions alone lowers the per-client default with it (rather than refusing a key
        # the user never wrote); set both and the per-client cap must fit.
        values["max_sessions_per_client"] = min(ProxySettings.max_sessions_per_client, values["max_sessions"])
    settings = ProxySettings(**values)
    _validate_proxy(settings, source)
    return settings


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _from_env(value: str, type_name: str, env_key: str, key: str) -> Any:
    if type_name == "bool":
        word = value.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ConfigError(env_key, f"proxy.{key}", f"expected true or false, got {value!r}")
        return word in _TRUE
    try:
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
    except ValueError as exc:
        raise ConfigError(env_key, f"proxy.{key}", f"expected a {type_name}, got {value!r}") from exc
    if type_name.startswith("tuple"):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _coerce(value: Any, type_name: str, source: str, key: str) -> Any:
    if type_name == "bool" and isinstance(value, bool):
        return value
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_name == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if type_name == "str" and isinstance(value, str):
        return value
    if type_name.startswith("tuple") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(source, key, f"expected {type_name.replace('tuple[str, ...]', 'a list of strings')}, got {value!r}")


def _validate_proxy(p: ProxySettings, source: str) -> None:
    host, sep, port = p.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(source, "proxy.listen", f"expected HOST:PORT, got {p.listen!r}")
    for key in ("max_body_bytes", "page_size", "max_tool_name_length", "max_sessions", "max_sessions_per_client",
                "max_inflight_per_session", "max_inflight_per_client"):
        if getattr(p, key) <= 0:
            raise ConfigError(source, f"proxy.{key}", "must be positive")
    if p.max_sessions_per_client > p.max_sessions:
        raise ConfigError(source, "proxy.max_sessions_per_client",
                          f"must not exceed max_sessions ({p.max_sessions}), got {p.max_sessions_per_client}")
    for key in ("replay_buffer_bytes", "replay_total_bytes"):
        if getattr(p, key) < 0:
            raise ConfigError(source, f"proxy.{key}", "must be 0 (resumption off) or a number of bytes")
    if p.send_buffer_bytes != 0 and not 4096 <= p.send_buffer_bytes <= 64 * 1024 * 1024:
        raise ConfigError(source, "proxy.send_buffer_bytes",
                          f"must be 0 (the kernel's autotuning) or 4096 to 64 MiB, got {p.send_buffer_bytes}")
    if p.max_stream_buffer_bytes < 4096:
        raise ConfigError(source, "proxy.max_stream_buffer_bytes",
                          f"must be at least 4096 bytes (a few events), got {p.max_stream_buffer_bytes}")
    if not 16 <= p.max_tool_name_length <= 128:
        raise ConfigError(source, "proxy.max_tool_name_length", "must be between 16 and 128 (MCP caps names at 128)")
    for key in ("call_timeout", "connect_timeout", "session_idle_timeout", "header_timeout", "body_timeout",
                "stream_write_timeout"):
        if not getattr(p, key) > 0:  # also refuses nan, which TOML and float() both accept
            raise ConfigError(source, f"proxy.{key}", "must be a positive number of seconds")
    if p.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(source, "proxy.log_level", "expected debug, info, warning or error")


def _parse_server(table: Any, source: str, where: str) -> ServerSettings:
    if not isinstance(table, dict):
        raise ConfigError(source, where, "must be a table")
    _reject_unknown(table, {"name", "namespace", "replicas", "policy", "timeout", "upstream_sessions",
                            "max_inflight", "fallback_policy", "sticky", "hash_key", "hash_load_factor", "exploration",
                            "temperature", "health", "outlier",
                            "breaker", "remediation", "tools", "prefetch"}, source, f"{where}.")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(source, f"{where}.name", "required: 1-64 characters of A-Z a-z 0-9 _ . -")
    where = f"servers[{name}]"
    namespace = table.get("namespace", name)
    if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
        raise ConfigError(source, f"{where}.namespace", "0-64 characters of A-Z a-z 0-9 _ . - (\"\" = no prefix)")
    policy = table.get("policy", "p2c_ewma")
    if policy not in POLICIES:
        raise ConfigError(source, f"{where}.policy", f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
    timeout = table.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise ConfigError(source, f"{where}.timeout", "must be a positive number of seconds")
    sessions = table.get("upstream_sessions", 4)
    if isinstance(sessions, bool) or not isinstance(sessions, int) or not 1 <= sessions <= 64:
        raise ConfigError(source, f"{where}.upstream_sessions", "must be an integer from 1 to 64")
    max_inflight = table.get("max_inflight", 256)
    if isinstance(max_inflight, bool) or not isinstance(max_inflight, int) or max_inflight < 0:
        raise ConfigError(source, f"{where}.max_inflight", "must be an integer ≥ 0 (0 = no cap)")
    replicas_raw = table.get("replicas")
    if not isinstance(replicas_raw, list) or not replicas_raw:
        raise ConfigError(source, f"{where}.replicas", "at least one [[servers.replicas]] is required")
    replicas = tuple(_parse_replica(r, source, f"{where}.replicas[{i}]") for i, r in enumerate(replicas_raw))
    fallback = table.get("fallback_policy", "p2c_ewma")
    if fallback not in POLICIES or fallback in _LEARNING_POLICIES:
        raise ConfigError(source, f"{where}.fallback_policy",
                          f"expected a classic policy (not weighted or learned), got {fallback!r}")
    exploration = table.get("exploration", ServerSettings.exploration)
    if isinstance(exploration, bool) or not isinstance(exploration, (int, float)) or not 0 <= exploration * len(
            replicas_raw) <= 1:
        raise ConfigError(source, f"{where}.exploration", "must be a share ≥ 0, at most 1 / the number of replicas")
    temperature = table.get("temperature", ServerSettings.temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(source, f"{where}.temperature", "must be a positive number")
    sticky = table.get("sticky", False)
    if not isinstance(sticky, bool):
        raise ConfigError(source, f"{where}.sticky", "expected true or false")
    prefetch = table.get("prefetch", True)
    if not isinstance(prefetch, bool):
        raise ConfigError(source, f"{where}.prefetch", "expected true or false")
    hash_key = table.get("hash_key", "session")
    if hash_key not in HASH_KEYS:
        raise ConfigError(source, f"{where}.hash_key", f"expected one of {', '.join(HASH_KEYS)}, got {hash_key!r}")
    load_factor = table.get("hash_load_factor", 1.25)
    if isinstance(load_factor, bool) or not isinstance(load_factor, (int, float)) or not load_factor >= 1:
        raise ConfigError(source, f"{where}.hash_load_factor", "must be a number of at least 1")
    tools_raw = table.get("tools", {})
    if not isinstance(tools_raw, dict):
        raise ConfigError(source, f"{where}.tools", "must be a table of [servers.tools.NAME] tables")
    tools = {tool: parse_table(ToolSettings, t, source, f"{where}.tools.{tool}") for tool, t in tools_raw.items()}
    for tool, override in tools.items():
        if override.timeout is not None and not override.timeout > 0:
            raise ConfigError(source, f"{where}.tools.{tool}.timeout", "must be a positive number of seconds")
    outlier = parse_table(OutlierSettings, table.get("outlier"), source, f"{where}.outlier")
    remediation = parse_table(RemediationSettings, table.get("remediation"), source, f"{where}.remediation")
    if remediation.max_out_share is None:  # resolved here, so the running config shows the share in force
        remediation = replace(remediation, max_out_share=outlier.max_ejected_share)
    return ServerSettings(name=name, namespace=namespace, replicas=replicas, policy=policy,
                          timeout=float(timeout) if timeout is not None else None, upstream_sessions=sessions,
                          max_inflight=max_inflight, fallback_policy=fallback, sticky=sticky, prefetch=prefetch, hash_key=hash_key,
                          hash_load_factor=float(load_factor), exploration=float(exploration),
                          temperature=float(temperature),
                          health=parse_table(HealthSettings, table.get("health"), source, f"{where}.health"),
                          outlier=outlier, remediation=remediation,
                          breaker=parse_table(BreakerSettings, table.get("breaker"), source, f"{where}.breaker"),
                          tools=tools)


def _parse_replica(table: Any, source: str, where: str) -> ReplicaSettings:
    if not isinstance(table, dict):
        raise ConfigError(source, where, "must be a table")
    _reject_unknown(table, {"url", "command", "env", "cwd", "headers", "protocol"}, source, f"{where}.")
    url, command = table.get("url"), table.get("command")
    if (url is None) == (command is None):
        raise ConfigError(source, where, "exactly one of url (HTTP upstream) or command (stdio upstream) is required")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ConfigError(source, f"{where}.url", f"expected an http:// or https:// URL, got {url!r}")
    if command is not None and (not isinstance(command, list) or not command
                                or not all(isinstance(c, str) and c for c in command)):
        raise ConfigError(source, f"{where}.command", "expected a non-empty list of strings, e.g. [\"mcp-server-time\"]")
    for key in ("env", "headers"):
        mapping = table.get(key, {})
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ConfigError(source, f"{where}.{key}", "expected a table of strings")
    if url is not None and table.get("env"):
        raise ConfigError(source, f"{where}.env", "env applies to stdio upstreams (command) only")
    if command is not None and table.get("headers"):
        raise ConfigError(source, f"{where}.headers", "headers apply to HTTP upstreams (url) only")
    cwd = table.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError(source, f"{where}.cwd", "expected a path string")
    protocol = table.get("protocol", "2025-11-25")
    if protocol not in PROTOCOLS:
        raise ConfigError(source, f"{where}.protocol", f"expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if command is not None and protocol == "2026-07-28":
        raise ConfigError(source, f"{where}.protocol", "stdio upstreams speak initialize sessions (2025-11-25)")
    return ReplicaSettings(url=url, command=tuple(command) if command else None, env=dict(table.get("env", {})),
                           cwd=cwd, headers=dict(table.get("headers", {})), protocol=protocol)


def _check_unique(servers: tuple[ServerSettings, ...], source: str) -> None:
    seen_names: set[str] = set()
    seen_namespaces: dict[str, str] = {}
    for server in servers:
        if server.name in seen_names:
            raise ConfigError(source, f"servers[{server.name}].name", "duplicate server name")
        seen_names.add(server.name)
        # "" is shared on purpose (names as the upstream gives them); others must be unique.
        if server.namespace and server.namespace in seen_namespaces:
            other = seen_namespaces[server.namespace]
            raise ConfigError(source, f"servers[{server.name}].namespace",
                              f"namespace {server.namespace!r} is already used by server {other!r}")
        seen_namespaces[server.namespace] = server.name
