"""Opaque pagination cursors the proxy hands to clients.

Cached lists (tools, prompts, resource templates) page by offset. Live lists
(resources) page by a composite cursor: which upstream, and that upstream's own
cursor. Either way the client sees one base64 string; anything it cannot decode
is an invalid cursor (-32602).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from only1mcp.errors import INVALID_PARAMS, RPCError

__all__ = ["encode_cursor", "decode_cursor"]


def encode_cursor(kind: str, position: int, upstream: Any = None) -> str:
    payload: dict[str, Any] = {"k": kind, "p": position}
    if upstream is not None:
        payload["u"] = upstream
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode("ascii")


def decode_cursor(kind: str, cursor: Any) -> tuple[int, Any]:
    """Return (position, upstream cursor or None) of a cursor made by ``encode_cursor``."""
    if not isinstance(cursor, str):
        raise RPCError(INVALID_PARAMS, "Invalid cursor: must be a string")
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, binascii.Error, orjson.JSONDecodeError, UnicodeEncodeError):
        raise RPCError(INVALID_PARAMS, "Invalid cursor") from None
    position = payload.get("p") if isinstance(payload, dict) else None
    if (not isinstance(payload, dict) or payload.get("k") != kind or not isinstance(position, int)
            or isinstance(position, bool) or position < 0):  # true is no position
        raise RPCError(INVALID_PARAMS, f"Invalid cursor for {kind}")
    return payload["p"], payload.get("u")
