"""``Mcp-Param-<Name>`` headers of the 2026-07-28 revision.

A tool's input schema may mark a property with ``"x-mcp-header": "<Name>"``; over Streamable
HTTP a ``tools/call`` then mirrors that argument into the header ``Mcp-Param-<Name>``, so a
load balancer or gateway can route on it without parsing the body. The proxy sits on both
sides of that rule:

- as the client of a 2026-07-28 upstream it sends the headers (``mirror``), and leaves out of
  the upstream's list a tool whose annotations break the rules (``annotations`` says why), as
  the revision requires of clients;
- as the server of 2026-07-28 clients it checks their headers against the body
  (``mismatch``): one missing, extra, malformed or different answers 400 with -32020.

The rules: the annotation sits on a property reached from the schema root through
``properties`` keys only (not ``items``, ``oneOf``/``anyOf``/``allOf``/``not``,
``if``/``then``/``else``, ``$ref``, ``$defs``), its type is ``string``, ``integer`` or
``boolean``, the name is an HTTP token, and names are unique ignoring case. Values:
``true``/``false``, decimal integers, strings as they are; anything that is not visible
ASCII without edge spaces (or that looks like the sentinel) travels as ``=?base64?…?=``
(UTF-8). An absent or null argument has no header.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["annotations", "mirror", "mismatch", "header_value", "decode_header_value", "PREFIX"]

PREFIX = "Mcp-Param-"
Path = tuple[str, ...]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VISIBLE = re.compile(r"[\x20-\x7e]*")
_SENTINEL = re.compile(r"=\?base64\?(.*)\?=")
_DECIMAL = re.compile(r"-?[0-9]+(\.0+)?")
_TYPES = ("string", "integer", "boolean")
# JSON Schema keywords whose values are schemas: crossing any but `properties` leaves the static chain.
_ONE = ("items", "contains", "additionalProperties", "propertyNames", "unevaluatedItems", "unevaluatedProperties",
        "not", "if", "then", "else", "contentSchema")
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_NAMED = ("patternProperties", "dependentSchemas", "$defs", "definitions")


def header_value(value: str) -> str:
    """Visible ASCII without edge spaces goes as it is; anything else (and the sentinel's look-alikes) base64."""
    if _VISIBLE.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode("ascii") + "?="


def decode_header_value(raw: str) -> str | None:
    """The value a header carries; None for a malformed sentinel (bad or non-canonical base64, not UTF-8)."""
    found = _SENTINEL.fullmatch(raw)
    if found is None:
        return raw
    try:
        decoded = base64.b64decode(found[1], validate=True)
        if base64.b64encode(decoded).decode("ascii") != found[1]:
            return None
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _positions(schema: Any) -> Iterator[tuple[Path | None, dict[str, Any]]]:
    """Every subschema with its chain of `properties` keys from the root (None once off that chain)."""
    stack: list[tuple[Path | None, Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                stack.extend(((*path, name) if path is not None else None, sub) for name, sub in value.items())
            elif key in _ONE:
                stack.append((None, value))
            elif key in _MANY and isinstance(value, list):
                stack.extend((None, sub) for sub in value)
            elif key in _NAMED and isinstance(value, dict):
                stack.extend((None, sub) for sub in value.values())


def annotations(schema: Any) -> tuple[dict[Path, tuple[str, str]], str | None]:
    """The annotated properties (path → (header name, type)), or {} and why the tool must be rejected."""
    found: dict[Path, tuple[str, str]] = {}
    seen: dict[str, Path] = {}
    for path, node in _positions(schema):
        if "x-mcp-header" not in node:
            continue
        name, kind = node["x-mcp-header"], node.get("type")
        if not path:
            return {}, "x-mcp-header on a schema not reached from the root through `properties` alone"
        where = ".".join(path)
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            return {}, f"property {where!r}: x-mcp-header must be an HTTP token"
        if kind not in _TYPES:
            return {}, f"property {where!r}: x-mcp-header needs type string, integer or boolean"
        if name.lower() in seen:
            return {}, f"x-mcp-header {name!r} of {where!r} repeats that of {'.'.join(seen[name.lower()])!r}"
        seen[name.lower()] = path
        found[path] = (name, kind)
    return found, None


def _value_at(arguments: Any, path: Path) -> Any:
    node = arguments
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _render(value: Any) -> str | None:
    """The header text of an argument, or None when it cannot be mirrored (objects, arrays, fractions)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return str(int(value))  # 42.0 in JSON is the integer 42
    return value if isinstance(value, str) else None


def mirror(annotated: Mapping[Path, tuple[str, str]], arguments: Any) -> dict[str, str]:
    """The ``Mcp-Param-*`` headers of a call's arguments (absent and null arguments have none)."""
    headers = {}
    for path, (name, _kind) in annotated.items():
        text = _render(_value_at(arguments, path))
        if text is not None:
            headers[PREFIX + name] = header_value(text)
    return headers


def mismatch(annotated: Mapping[Path, tuple[str, str]], arguments: Any,
             raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request's ``Mcp-Param-*`` headers disagree with its arguments, or None if they agree."""
    received: dict[str, list[bytes]] = {}
    for key, value in raw_headers:
        if key[:10].lower() == b"mcp-param-":
            received.setdefault(key.decode("latin-1").lower(), []).append(value)
    for path, (name, kind) in annotated.items():
        header = PREFIX + name
        raws = received.get(header.lower())
        value = _value_at(arguments, path)
        text = _render(value) if value is not None else None
        where = ".".join(path)
        if raws is None:
            if text is not None:
                return f"Header mismatch: {header} is missing but arguments.{where} is present"
            continue
        if len(raws) > 1:
            return f"Header mismatch: {header} appears more than once"
        raw = raws[0]
        if not all(0x20 <= byte <= 0x7E or byte == 0x09 for byte in raw):
            return f"Header mismatch: {header} contains characters a header value may not carry (base64 them)"
        decoded = decode_header_value(raw.decode("ascii").strip(" \t"))
        if decoded is None:
            return f"Header mismatch: {header} carries a malformed =?base64?…?= value"
        if text is None:
            return f"Header mismatch: {header} is present but arguments.{where} is absent or cannot be mirrored"
        if kind == "integer" and _DECIMAL.fullmatch(decoded) and text.lstrip("-").isdigit():
            if int(decoded.split(".")[0]) == int(text):  # compared as numbers: 42.0 and 42 agree
                continue
        elif decoded == text:
            continue
        return f"Header mismatch: {header} does not match arguments.{where}"
    return None
