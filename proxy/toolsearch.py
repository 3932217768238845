"""Free-text search over tools: BM25 over each tool's name, title, description and argument names.

Pure and deterministic: no model, no download, nothing learned. Words are split on case
changes, digits and punctuation (``getIssue``, ``get_issue`` and ``get-issue`` all give
``get`` ``issue``), lower-cased, stripped of a few grammatical words and of common English
endings (``comments`` → ``comment``, ``created`` and ``create`` → ``creat``), so a query in an
agent's own words meets a description in the author's. A tool's name (and title) counts
``NAME_WEIGHT`` times, since a name is the densest statement of what a tool does. Equal scores
keep catalog order; a query that is exactly a tool's name puts that tool first.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["ToolIndex", "words", "stem"]

_SPLIT = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_STOP = frozenset(
    "a an the of to for in on at by with from into onto and or but not no is are was were be been being "
    "this that these those it its it's as if then than so such there their them they we our us you your i me "
    "my he she his her all any each every some which what who whom whose when where why how do does did can "
    "could should would will shall may might must please want need like about via per also just only".split())
NAME_WEIGHT = 3
_K1, _B = 1.2, 0.75


def stem(word: str) -> str:
    """A light suffix stripper (not Porter's): enough for plurals and verb forms to meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 4 and word[-1] == word[-2] and word[-1] not in "lsz":  # shipp(ing) → ship
        word = word[:-1]
    if len(word) > 4 and word.endswith("e"):  # create and creat(ed) meet
        word = word[:-1]
    return word


def words(text: str) -> list[str]:
    """The stemmed, lower-cased content words of ``text``, in order."""
    found = []
    for raw in _SPLIT.findall(text):
        word = raw.lower()
        if word not in _STOP:
            found.append(stem(word))
    return found


def _document(tool: dict[str, Any]) -> Counter[str]:
    name = str(tool.get("name", ""))
    title = tool.get("title") if isinstance(tool.get("title"), str) else ""
    description = tool.get("description") if isinstance(tool.get("description"), str) else ""
    schema = tool.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    arguments = ""
    if isinstance(properties, dict):  # names, descriptions and choices: "Issue id, e.g. ISS-1042" meets "ISS-7"
        arguments = " ".join(_argument_text(key, spec) for key, spec in properties.items())
    counts: Counter[str] = Counter()
    for word in words(f"{name} {title}"):
        counts[word] += NAME_WEIGHT
    counts.update(words(f"{description} {arguments}"))
    return counts


def _argument_text(name: Any, spec: Any) -> str:
    if not isinstance(spec, dict):
        return str(name)
    description = spec.get("description") if isinstance(spec.get("description"), str) else ""
    choices = spec.get("enum") if isinstance(spec.get("enum"), list) else []
    return " ".join([str(name), description, *(str(c) for c in choices)])


class ToolIndex:
    """An index over a fixed list of tools (rebuilt when the catalog changes; built in O(words))."""

    def __init__(self, tools: Sequence[dict[str, Any]]) -> None:
        self.tools = list(tools)
        self._docs = [_document(tool) for tool in self.tools]
        self._lengths = [sum(doc.values()) for doc in self._docs]
        self._mean = (sum(self._lengths) / len(self._lengths)) if self._lengths else 1.0
        frequency: Counter[str] = Counter()
        for doc in self._docs:
            frequency.update(doc.keys())
        total = len(self._docs)
        self._idf = {word: math.log(1 + (total - n + 0.5) / (n + 0.5)) for word, n in frequency.items()}
        self._postings: dict[str, list[int]] = {}
        for position, doc in enumerate(self._docs):
            for word in doc:
                self._postings.setdefault(word, []).append(position)
        self._names = {}
        for position, tool in enumerate(self.tools):
            self._names.setdefault(str(tool.get("name", "")).lower(), position)

    def search(self, query: str, limit: int) -> list[tuple[dict[str, Any], float]]:
        """The best ``limit`` tools for ``query`` with their scores, best first; none scoring 0."""
        scores: dict[int, float] = {}
        for word in dict.fromkeys(words(query)):  # each query word once, in order
            idf = self._idf.get(word)
            if idf is None:
                continue
            for position in self._postings[word]:
                tf = self._docs[position][word]
                norm = _K1 * (1 - _B + _B * self._lengths[position] / self._mean)
                scores[position] = scores.get(position, 0.0) + idf * tf * (_K1 + 1) / (tf + norm)
        exact = self._names.get(query.strip().lower())
        if exact is not None:
            scores[exact] = math.inf
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return [(self.tools[position], score) for position, score in ranked if score > 0]
