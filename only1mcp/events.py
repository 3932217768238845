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
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "SCHEMA_VERSION", "TOPICS", "RequestEvent", "DeadLetter", "RoutingWeights", "AnomalyEvent", "Remediation",
    "PrefetchDecision", "EventDecodeError", "keyed_hash", "json_schema", "EVENT_TYPES", "DECISION_TYPES", "SEVERITIES",
    "ANOMALY_STATES", "REMEDIATION_ACTIONS",
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
    "feature_events": "mcp.feature-events",  # streams → streams (internal): events re-keyed by entity
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
    inflight: int | None = None  # calls this proxy had in flight on the replica when it routed this one
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


@dataclass(frozen=True, slots=True)
class RoutingWeights:
    """Routing weights for one server's replicas, for one tool (``tool``) or for every tool of the
    server without a record of its own (``tool`` null), from the learning loop; the proxy applies
    them until ``valid_until`` and then falls back to the server's ``fallback_policy``."""

    decision_id: str  # unique (uuid4 hex)
    ts: float  # unix seconds when the decision was made
    valid_until: float  # unix seconds; past it the proxy ignores the record
    server: str
    weights: dict[str, float]  # replica id → weight ≥ 0 (relative; a replica left out gets none)
    tool: str | None = None  # the exposed (namespaced) tool name, as in RequestEvent.tool; null = the server
    # replica id → predicted latency (ms) of a call routed with 0, 1, 2, … calls already in flight on it
    # (past the last level it grows in proportion to the calls in flight, as a queue); with it the proxy weighs replicas by their load at the moment of the call
    predicted_ms: dict[str, list[float]] = field(default_factory=dict)
    model_version: str = ""  # the model (or learner) and version that made it
    source: str = ""  # tool_ewma (the specialisation learner) | latency_model
    schema_version: int = SCHEMA_VERSION
    type: str = field(default="routing_weights")

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> RoutingWeights:
        fields_ = _decode_fields(cls, data)
        for rid, weight in fields_["weights"].items():
            if not (math.isfinite(weight) and weight >= 0):
                raise EventDecodeError(f"weights[{rid!r}]: {weight!r} is not a finite number >= 0")
        for rid, curve in fields_["predicted_ms"].items():
            if not curve or not all(math.isfinite(v) and v >= 0 for v in curve):
                raise EventDecodeError(f"predicted_ms[{rid!r}]: expected a non-empty list of finite numbers >= 0")
        if not math.isfinite(fields_["valid_until"]):
            raise EventDecodeError("valid_until is not a finite number")
        return cls(**fields_)


SEVERITIES = ("low", "medium", "high", "critical")  # in increasing order
ANOMALY_STATES = ("open", "update", "close")
REMEDIATION_ACTIONS = ("eject", "drain", "restore", "alert")


def _check_unit(fields_: dict[str, Any], *names: str) -> None:
    for name in names:
        value = fields_[name]
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise EventDecodeError(f"{name}: {value!r} is not a number in [0, 1]")


def _check_choice(fields_: dict[str, Any], name: str, choices: tuple[str, ...]) -> None:
    if fields_[name] not in choices:
        raise EventDecodeError(f"{name}: {fields_[name]!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """An anomaly of one replica (or one replica × tool), from the worker's detectors: published when it
    opens, on material updates (severity changed, score moved by 0.1 or more), and when it closes. All
    three share ``anomaly_id``. Subscribe to ``mcp.anomalies`` (key: the replica id) from any Kafka client."""

    anomaly_id: str  # stable from open to close (uuid4 hex)
    ts: float  # unix seconds of this record
    state: str  # open | update | close
    server: str
    replica: str
    score: float  # the ensemble's anomaly score in [0, 1]
    severity: str  # low | medium | high | critical (on close: the highest it reached)
    confidence: float  # [0, 1]: how much the detectors agree and how much data they had
    tool: str | None = None  # the exposed tool name for a replica × tool anomaly; null = the whole replica
    kind: str = ""  # what looks wrong: latency | errors | down | trend | traffic | mixed
    detectors: dict[str, float] = field(default_factory=dict)  # detector name → its normalised score [0, 1]
    features: dict[str, float] = field(default_factory=dict)  # feature → how far from normal (robust z)
    explanation: str = ""  # one sentence: which detectors, which features, by how much
    time_to_failure_s: float | None = None  # the trend detector's estimate, when degradation is heading to failure
    opened_at: float = 0.0  # unix seconds the anomaly opened
    model_version: str = ""  # detector set and version
    schema_version: int = SCHEMA_VERSION
    type: str = field(default="anomaly")

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> AnomalyEvent:
        fields_ = _decode_fields(cls, data)
        _check_choice(fields_, "state", ANOMALY_STATES)
        _check_choice(fields_, "severity", SEVERITIES)
        _check_unit(fields_, "score", "confidence")
        for name, value in fields_["detectors"].items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise EventDecodeError(f"detectors[{name!r}]: {value!r} is not a number in [0, 1]")
        return cls(**fields_)


@dataclass(frozen=True, slots=True)
class Remediation:
    """What the proxy should do about a replica, decided by the worker from its anomalies. ``eject``
    and ``drain`` hold until ``valid_until`` (the worker re-publishes them while the anomaly stays open,
    so a worker that dies cannot leave a replica out for good); ``restore`` ends them at once; ``alert``
    changes nothing in routing. ``eject``: no new calls; ``drain``: no new calls, in-flight calls finish
    (the same for stateless calls; sticky sessions move at their next call)."""

    decision_id: str  # unique (uuid4 hex)
    ts: float  # unix seconds when the decision was made
    valid_until: float  # unix seconds; past it an eject or drain lapses and the replica is routable again
    server: str
    replica: str
    action: str  # eject | drain | restore | alert
    severity: str  # the anomaly's severity when decided
    confidence: float  # [0, 1]
    anomaly_id: str = ""  # the AnomalyEvent that led to it
    reason: str = ""  # the anomaly's explanation
    model_version: str = ""
    schema_version: int = SCHEMA_VERSION
    type: str = field(default="remediation")

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Remediation:
        fields_ = _decode_fields(cls, data)
        _check_choice(fields_, "action", REMEDIATION_ACTIONS)
        _check_choice(fields_, "severity", SEVERITIES)
        _check_unit(fields_, "confidence")
        if not math.isfinite(fields_["valid_until"]):
            raise EventDecodeError("valid_until is not a finite number")
        return cls(**fields_)


@dataclass(frozen=True, slots=True)
class PrefetchDecision:
    """What a session will likely call next, from the learning loop: the proxy that holds the session
    fills the arguments from the session's own recent arguments and results (kept in its memory only,
    never on a topic) or vetoes the decision, and runs the call in the background within its budget.
    The worker sees only keyed hashes, so ``args_hash`` (when the worker predicts a repeat of a call it
    has seen) lets the proxy check its filling; ``valid_until`` bounds how long the prediction holds."""

    decision_id: str  # unique (uuid4 hex)
    ts: float  # unix seconds when the decision was made
    valid_until: float  # unix seconds; past it the proxy ignores the record
    session_id: str  # keyed hash of the MCP session id, as in RequestEvent.session_id
    tool: str  # the exposed (namespaced) tool name, as in RequestEvent.tool
    confidence: float  # [0, 1]: the model's probability that this tool is the session's next call
    server: str | None = None
    args_hash: str | None = None  # keyed hash of the predicted arguments, when the worker predicts a repeat
    after_event: str = ""  # the RequestEvent (event_id) whose call this prediction follows
    model_version: str = ""
    schema_version: int = SCHEMA_VERSION
    type: str = field(default="prefetch")

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> PrefetchDecision:
        fields_ = _decode_fields(cls, data)
        _check_unit(fields_, "confidence")
        if not math.isfinite(fields_["valid_until"]):
            raise EventDecodeError("valid_until is not a finite number")
        if not fields_["session_id"] or not fields_["tool"]:
            raise EventDecodeError("session_id and tool must not be empty")
        return cls(**fields_)


EVENT_TYPES: dict[str, type] = {"request": RequestEvent, "dead_letter": DeadLetter, "routing_weights": RoutingWeights,
                                "anomaly": AnomalyEvent, "remediation": Remediation,
                                "prefetch": PrefetchDecision}
# The decision topics (streams → proxy) and the record type each carries.
DECISION_TYPES: dict[str, type] = {TOPICS["routing_weights"]: RoutingWeights, TOPICS["remediation"]: Remediation,
                                   TOPICS["prefetch"]: PrefetchDecision}


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
    if "type" in raw and raw["type"] != defaults["type"]:  # another event's record, not this one
        raise EventDecodeError(f"type {_short(raw['type'])}, expected {defaults['type']!r}")
    for name in required:
        if name not in raw:
            raise EventDecodeError(f"missing field {name!r}")
    for name, value in raw.items():
        accepted, hint = checks[name]
        if not _conforms(value, accepted):
            raise EventDecodeError(f"field {name!r}: {_short(value)} is not {hint}")
    merged = {**defaults, **raw}
    for name, value in merged.items():
        if isinstance(value, _Fresh):
            merged[name] = value.factory()
    return merged


class _Fresh:
    """A field default made anew for each decoded record (a dict or list must not be shared)."""

    __slots__ = ("factory",)

    def __init__(self, factory: Any) -> None:
        self.factory = factory


def _conforms(value: Any, accepted: tuple[Any, ...]) -> bool:
    """``value`` has one of the accepted shapes: a Python type, or ``(dict, key, value)`` / ``(list, item)``."""
    for shape in accepted:
        if isinstance(shape, tuple):
            if shape[0] is dict and isinstance(value, dict):
                if all(_conforms(k, shape[1]) and _conforms(v, shape[2]) for k, v in value.items()):
                    return True
            elif shape[0] is list and isinstance(value, list):
                if all(_conforms(v, shape[1]) for v in value):
                    return True
        elif isinstance(value, shape) and (not isinstance(value, bool) or shape is bool):
            return True
    return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


def _accepted(hint: Any) -> tuple[Any, ...]:
    """The shapes ``_conforms`` accepts for a type hint (floats accept JSON integers too)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(shape for arm in typing.get_args(hint) for shape in _accepted(arm))
    if origin is dict:
        key, value = typing.get_args(hint)
        return ((dict, _accepted(key), _accepted(value)),)
    if origin is list:
        return ((list, _accepted(typing.get_args(hint)[0])),)
    return (int, float) if hint is float else (hint,)


@functools.cache
def _shape(cls: type) -> tuple[dict[str, tuple[tuple[type, ...], Any]], frozenset[str], tuple[str, ...],
                               dict[str, Any]]:
    """Per field, the Python types a JSON value may have (resolved once: get_type_hints is slow)."""
    hints = typing.get_type_hints(cls)
    checks = {f.name: (_accepted(hints[f.name]), hints[f.name]) for f in dataclasses.fields(cls)}
    required = tuple(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    factories = {f.name: f.default_factory for f in dataclasses.fields(cls)
                 if f.default_factory is not dataclasses.MISSING}
    defaults.update({name: _Fresh(factory) for name, factory in factories.items()})
    return checks, frozenset(checks), required, defaults


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _json_type(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [_json_type(arm) for arm in typing.get_args(hint)]
        if all(set(a) == {"type"} and isinstance(a["type"], str) for a in arms):
            return {"type": [a["type"] for a in arms]}
        return {"anyOf": arms}
    if origin is dict:
        return {"type": "object", "additionalProperties": _json_type(typing.get_args(hint)[1])}
    if origin is list:
        return {"type": "array", "items": _json_type(typing.get_args(hint)[0])}
    return {"type": _JSON_TYPES[hint]}


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an event type, for outside subscribers."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        properties[f.name] = _json_type(hints[f.name])
        if f.name == "schema_version":
            properties[f.name]["const"] = SCHEMA_VERSION
        if f.name == "type":
            properties[f.name]["const"] = f.default
        required_field = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required_field or f.name in ("schema_version", "type"):
            required.append(f.name)  # the decoder refuses events without their version and type
    doc = (cls.__doc__ or "").strip()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"only1mcp/{cls.__name__}/v{SCHEMA_VERSION}",
            "title": cls.__name__, "description": doc, "type": "object", "properties": properties,
            "required": required, "additionalProperties": False}
