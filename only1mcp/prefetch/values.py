"""The values a call's result offers to later calls: ids, names, paths.

An agent very often calls a tool with something it just read: the id of the first search hit, the
author of a comment, a path mentioned in a file. ``result_values`` turns a result into
``(path, value)`` pairs the argument model can point at:

* a JSON result (a parsed object, or text that parses as JSON) is walked: every string and number
  leaf, with its path in dots and list indices (``items.0.id``); long strings and strings with spaces
  are prose, so they are scanned for tokens like text is (``items.0.title~2``);
* any other text is scanned for id-like tokens — a word with a digit or one of ``_-/:@`` in it
  (``ISS-1042``, ``src/app/main.py``, ``cus_7f3a``), not plain words — numbered by first appearance
  (``~0``, ``~1``, …).

Bounded: at most ``max_values`` pairs, ``max_items`` items of a list and ``max_depth`` levels, so
a huge result costs a bounded walk and a bounded memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["result_values", "text_tokens", "parse_result"]

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./:@#]*[A-Za-z0-9]")
_IDISH = re.compile(r"[0-9_\-/:@]")
_PROSE_LEN = 64


def parse_result(result: Any) -> Any:
    """A result as JSON data when it is JSON (or JSON text), else the text itself (None stays None)."""
    if isinstance(result, (bytes, bytearray)):
        result = result.decode("utf-8", "replace")
    if isinstance(result, str):
        stripped = result.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                return json.loads(result)
            except ValueError:
                return result
    return result


def text_tokens(text: str, limit: int = 64) -> list[str]:
    """The distinct id-like tokens of ``text`` in order of first appearance (at most ``limit``)."""
    seen: dict[str, None] = {}
    for match in _TOKEN.finditer(text):
        token = match.group(0).rstrip(".:")
        if 3 <= len(token) <= 128 and _IDISH.search(token) and token not in seen:
            seen[token] = None
            if len(seen) >= limit:
                break
    return list(seen)


def result_values(result: Any, max_values: int = 64, max_items: int = 20, max_depth: int = 8) -> list[tuple[str, Any]]:
    """``(path, value)`` pairs a later call may take its arguments from (see the module doc)."""
    data = parse_result(result)
    if data is None:
        return []
    out: list[tuple[str, Any]] = []
    for pair in _walk(data, "", max_items, max_depth):
        out.append(pair)
        if len(out) >= max_values:
            break
    return out


def _walk(node: Any, path: str, max_items: int, depth: int) -> Iterator[tuple[str, Any]]:
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, (int, float)):
        yield path, node
    elif isinstance(node, str):
        if len(node) > _PROSE_LEN or any(c.isspace() for c in node):
            for i, token in enumerate(text_tokens(node)):
                yield f"{path}~{i}", token
        elif node:
            yield path, node
    elif depth <= 0:
        return
    elif isinstance(node, Mapping):
        for key, child in node.items():
            yield from _walk(child, f"{path}.{key}" if path else str(key), max_items, depth - 1)
    elif isinstance(node, (list, tuple)):
        for i, child in enumerate(node[:max_items]):
            yield from _walk(child, f"{path}.{i}" if path else str(i), max_items, depth - 1)
