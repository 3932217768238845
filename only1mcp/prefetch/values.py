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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

__all__ = ["result_values", "text_tokens", "parse_result"]

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./:@#]*[A-Za-z0-9]")
_IDISH = re.compile(r"[0-9_\-/:@]")
# Whole runs of _TOKEN's characters; those with an id-like character in group 1, the others (plain words)
# matched by the first branch and left empty, so the loop below skips them without a check. Within a run
# _TOKEN matches once, from its first to its last letter or digit: the run stripped of the others.
_RUNS = re.compile(r"[A-Za-z.#]++(?![0-9_\-/:@])|([A-Za-z0-9_\-./:@#]+)")
_EDGES = "_-./:@#"
_SPACE = re.compile(r"\s")  # the same characters as str.isspace (re's Unicode whitespace)
_PROSE_LEN = 64


def parse_result(result: Any) -> Any:
    """A result as JSON data when it is JSON (or JSON text), else the text itself (None stays None)."""
    if isinstance(result, (bytes, bytearray)):
        result = result.decode("utf-8", "replace")
    if isinstance(result, str):
        stripped = result.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                return orjson.loads(result)  # 3x json's speed; what it refuses json may still take (NaN,
            except orjson.JSONDecodeError:  # integers past 64 bits), so the outcome is json's either way
                pass
            try:
                return json.loads(result)
            except (ValueError, RecursionError):  # not JSON after all, or nested past the interpreter's limit
                return result
    return result


def text_tokens(text: str, limit: int = 64) -> list[str]:
    """The distinct id-like tokens of ``text`` in order of first appearance (at most ``limit``)."""
    seen: dict[str, None] = {}
    for run in _RUNS.findall(text):
        if not run:
            continue
        token = run.strip(_EDGES)
        if 3 <= len(token) <= 128 and _IDISH.search(token) and token not in seen:
            seen[token] = None
            if len(seen) >= limit:
                break
    return list(seen)


def result_values(result: Any, max_values: int = 64, max_items: int = 20, max_depth: int = 8) -> list[tuple[str, Any]]:
    """``(path, value)`` pairs a later call may take its arguments from (see the module doc).

    Depth first, in the result's own order. Walked with an explicit stack of iterators rather than
    recursive generators: each value is handed up once instead of through every level above it
    (the proxy runs this after every call)."""
    data = parse_result(result)
    if data is None:
        return []
    out: list[tuple[str, Any]] = []
    frames: list[tuple[Iterator[tuple[str, Any]], int]] = [(iter((("", data),)), max_depth)]
    while frames:
        items, depth = frames[-1]
        for path, node in items:
            kind = type(node)  # JSON's exact types first (a dict look-up's worth each); subclasses after
            if kind is str or (kind is not bool and isinstance(node, str)):
                if len(node) > _PROSE_LEN or _SPACE.search(node):
                    if _IDISH.search(node) is None:  # no digit nor _-/:@ anywhere: no token can be id-like
                        continue
                    for i, token in enumerate(text_tokens(node)):
                        out.append((f"{path}~{i}", token))
                        if len(out) >= max_values:
                            return out
                    continue
                if not node:
                    continue
                out.append((path, node))
            elif kind is int or kind is float or (kind is not bool and isinstance(node, (int, float))):
                out.append((path, node))
            elif kind is bool or node is None or depth <= 0:
                continue
            elif kind is dict or isinstance(node, Mapping):
                frames.append((_members(node.items(), path), depth - 1))
                break  # descend; this level's iterator resumes once the child is done
            elif kind is list or isinstance(node, (list, tuple)):
                frames.append((_members(enumerate(node[:max_items]), path), depth - 1))
                break
            else:
                continue
            if len(out) >= max_values:
                return out
        else:
            frames.pop()
    return out


def _members(pairs: Iterable[tuple[Any, Any]], path: str) -> Iterator[tuple[str, Any]]:
    """(child path, child) of a container at ``path`` (its own function: ``path`` is bound per container)."""
    for key, child in pairs:
        yield (f"{path}.{key}" if path else str(key)), child
