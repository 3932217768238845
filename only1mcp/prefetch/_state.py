"""What the prefetch models share: the state error, the header every saved state carries, and the
canonical form of a value (so ``"42"`` and ``42`` stay different, and key order never matters)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from only1mcp.errors import Only1MCPError

__all__ = ["PrefetchError", "PrefetchStateError", "value_key", "key_value", "header", "check_header", "require",
           "malformed"]


class PrefetchError(Only1MCPError):
    """Root of the errors of ``only1mcp.prefetch`` (the per-session memory and argument model that the proxy
    and the learning side share)."""


class PrefetchStateError(PrefetchError, ValueError):
    """A saved prefetch-model state cannot be restored (corrupt, another model's, another version)."""


def value_key(value: Any) -> str:
    """A hashable, canonical form of a JSON value, types kept apart: ``s`` + a string, ``i`` / ``f`` + a
    number, else ``j`` + canonical JSON (sorted keys, no whitespace). Strings and numbers — nearly every
    argument — skip the JSON encoder: this runs for every value of every remembered result."""
    kind = type(value)
    if kind is str:
        return "s" + value
    if kind is int:
        return "i" + str(value)
    if kind is float:
        return "f" + repr(value)
    return "j" + json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def key_value(key: str) -> Any:
    """The value back from ``value_key`` (ValueError when ``key`` is not one)."""
    tag, body = key[:1], key[1:]
    if tag == "s":
        return body
    if tag == "i":
        return int(body)
    if tag == "f":
        return float(body)
    if tag == "j":
        return json.loads(body)
    raise ValueError(f"not a value key: {key[:40]!r}")


def header(name: str, version: int) -> dict[str, Any]:
    return {"model": name, "version": version}


def check_header(state: Any, name: str, version: int) -> Mapping[str, Any]:
    """``state`` as a mapping saved by model ``name`` at ``version``; PrefetchStateError otherwise."""
    if not isinstance(state, Mapping):
        raise PrefetchStateError(f"{name}: state must be a mapping, got {type(state).__name__}")
    if state.get("model") != name:
        raise PrefetchStateError(f"{name}: state belongs to model {state.get('model')!r}")
    if state.get("version") != version:
        raise PrefetchStateError(f"{name}: state version {state.get('version')!r}, expected {version}")
    return state


def require(condition: bool, name: str, what: str) -> None:
    """Raise PrefetchStateError(``name: what``) unless ``condition``."""
    if not condition:
        raise PrefetchStateError(f"{name}: {what}")


def malformed(name: str, exc: Exception) -> PrefetchStateError:
    """The error for a state whose fields are missing or of the wrong type."""
    return PrefetchStateError(f"{name}: malformed state ({type(exc).__name__}: {exc})")
