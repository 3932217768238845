"""Event schemas and topic names: the only contract between the proxy and the streams.

One definition per event, versioned with ``schema_version``, JSON on the wire, and a
JSON Schema export for outside subscribers (``only1mcp schema export``). Request
events never carry raw tool arguments or results: arguments are reduced to a keyed
hash (``args_hash``) and sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "SCHEMA_VERSION", "TOPICS", "RequestEvent", "DeadLetter", "EventDecodeError", "keyed_hash", "json_schema",
    "EVENT_TYPES",
]

SCHEMA_VERSION = 1

TOPICS = {
    "requests": "mcp.requests",  # proxy → streams, key: replica id
    "features": "mcp.features",  # streams → sinks, models; key: entity id
    "routing_weights": "mcp.routing-weights",  # streams → proxy; key: server
    "prefetch": "mcp.prefetch",  # streams → proxy; key: session id
    "anomalies": "mcp.anomalies",  # streams → anyone; key: replica id
    "remediation": "mcp.remediation",  # streams → proxy; key: replica id
    "dead_letter": "mcp.dead-letter",  # any consumer → operators; key: the original key
}


class EventDecodeError(ValueError):
    """A record is not a valid event of the expected type and version; the reason says why."""


def keyed_hash(key: bytes, value: Any) -> str:
    """A keyed digest of a JSON-able value (canonical: sorted keys), so equal arguments hash equal
    across the fleet, yet nobody without the key can test a guess against it."""
    data = value if isinstance(value, bytes) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, data, hashlib.blake2b).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One MCP request as the proxy served it."""

    event_id: str  # unique (uuid4 hex); sinks deduplicate on it
    ts: float  # unix seconds when the proxy received the request
    latency_ms: float  # until the answer was complete
    method: str  # JSON-RPC method, e.g. tools/call
    status: str  # ok | error | timeout | unavailable | cancelled | rejected
    proxy_id: str = ""  # which proxy process emitted it
    client_id: str | None = None  # keyed hash of the client's identity (token or address)
    session_id: str | None = None  # keyed hash of the MCP session id (never the id itself)
    tool: str | None = None  # the exposed (namespaced) tool or prompt name
    server: str | None = None
    replica: str | None = None  # the replica that answered (the last attempt)
    error_code: int | None = None  # JSON-RPC error code, when status is not ok
    error_class: str | None = None  # a short class: upstream_failed, timeout, invalid_params, tool_error, …
    request_bytes: int = 0
    response_bytes: int = 0
    args_hash: str | None = None  # keyed hash of the canonical arguments
    cache_hit: bool = False
    prefetch_hit: bool = False
    policy: str | None = None  # routing policy that chose the replica
    reason: str | None = None  # why it chose it
    attempts: int = 0  # upstream attempts (0 for a cache hit)
    schema_version: int = SCHEMA_VERSION
    type: str = field(default="request")

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> RequestEvent:
        return cls(**_decode_fields(cls, data))

    @classmethod
    def fields_from_json(cls, data: bytes | str) -> dict[str, Any]:
        """The event as a dict of every field (defaults filled in), checked as ``from_json`` checks it:
        for consumers that work on dicts, without building the object."""
        return _decode_fields(cls, data)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a consumer could not decode or process, kept with the reason."""

    topic: str
    partition: int
    offset: int
    reason: str
    consumer: str
    ts: float
    key: str | None = None
    value: str = ""  # the original record, as text (replaced characters where it was not UTF-8)
    schema_version: int = SCHEMA_VERSION
    type: str = field(default="dead_letter")

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> DeadLetter:
        return cls(**_decode_fields(cls, data))


EVENT_TYPES: dict[str, type] = {"request": RequestEvent, "dead_letter": DeadLetter}


def _decode_fields(cls: type, data: bytes | str) -> dict[str, Any]:
    """The fields of an event of type ``cls`` from its JSON, defaults filled in; EventDecodeError
    says precisely what is wrong with a record that is not one."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise EventDecodeError("not a JSON object")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise EventDecodeError(f"schema_version {raw.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    checks, names, required, defaults = _shape(cls)
    unknown = raw.keys() - names
    if unknown:
        raise EventDecodeError(f"unknown fields: {', '.join(sorted(unknown))}")
    for name in required:
        if name not in raw:
            raise EventDecodeError(f"missing field {name!r}")
    for name, value in raw.items():
        accepted, hint = checks[name]
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            raise EventDecodeError(f"field {name!r}: {value!r} is not {hint}")
    return {**defaults, **raw}


@functools.cache
def _shape(cls: type) -> tuple[dict[str, tuple[tuple[type, ...], Any]], frozenset[str], tuple[str, ...],
                               dict[str, Any]]:
    """Per field, the Python types a JSON value may have (resolved once: get_type_hints is slow)."""
    hints = typing.get_type_hints(cls)
    checks = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        accepted: list[type] = []
        for arm in arms:
            accepted.extend((int, float) if arm is float else (arm,))
        checks[f.name] = (tuple(accepted), hint)
    required = tuple(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return checks, frozenset(checks), required, defaults


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an event type, for outside subscribers."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        kinds = [_JSON_TYPES[a] for a in arms]
        properties[f.name] = {"type": kinds[0] if len(kinds) == 1 else kinds}
        if f.name == "schema_version":
            properties[f.name]["const"] = SCHEMA_VERSION
        if f.name == "type":
            properties[f.name]["const"] = f.default
        if f.default is dataclasses.MISSING or f.name in ("schema_version", "type"):
            required.append(f.name)  # the decoder refuses events without their version and type
    doc = (cls.__doc__ or "").strip()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"only1mcp/{cls.__name__}/v{SCHEMA_VERSION}",
            "title": cls.__name__, "description": doc, "type": "object", "properties": properties,
            "required": required, "additionalProperties": False}
