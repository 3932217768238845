"""Argument prediction: for a predicted tool, which value each argument will most likely get.

Learned as "argument slot ← source" statistics per (tool, argument name). When a call is seen,
every source the session memory offers (``memory.Source``: an earlier argument, a value of a
recent result, a constant) is checked against what the call actually used:

* each source already tracked for the slot and *available* now (it resolves to a value) counts one
  availability, and one match if its value is the one the call used;
* the sources holding the used value that are not tracked yet join the slot (one availability, one
  match), and so does the constant itself (one availability, no match: that a value was used once
  says nothing about whether it comes again). A constant belongs to the client that used it
  (``SessionMemory.client``): it is available, and predicted, only in that client's sessions.

Statistics are kept twice: per (tool, argument name, the session's previous tool) — after a search
the id comes from the first hit, after a comment list the same id is read again — and per (tool,
argument name) over every context, used when the context-specific slot has no available source
with enough support. A source's reliability is its smoothed match rate, (matches + 1) / (availabilities + 3):
how often, when that source had a value, the call used it. To predict, each slot takes the value
of its most reliable available source (with at least ``min_support`` availabilities); values that
several sources agree on count once, at their best source's reliability. A tool's argument names
are the most frequent set it was called with. The confidence of the filled arguments is that set's
share times the product of the slots' reliabilities; ``predict_one`` returns the ``k`` best
distinct fillings (a beam over slots).

Bounded: at most ``max_sources`` sources per slot (the least proven dropped: matches / (availabilities + 2)), ``max_slots`` slots
and ``max_signatures`` argument-name sets per tool.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from only1mcp.prefetch._state import (
    PrefetchStateError, check_header, header, key_value, malformed, require, value_key,
)
from only1mcp.prefetch.memory import ANY, PREVIOUS, SessionMemory, Source

__all__ = ["ArgumentModel", "recent_arguments"]

_VERSION = 1
_KINDS = ("arg", "res", "const")


def _reliability(counts: list[float]) -> float:
    """The match rate's posterior mean under a Beta(1, 2) prior: a source must earn its trust."""
    return (counts[1] + 1.0) / (counts[0] + 3.0)


def _keep_score(counts: list[float]) -> float:
    """What eviction ranks by: shrunk harder, so a newcomer (1 of 1) cannot push out a source
    proven over many calls (60 of 100)."""
    return counts[1] / (counts[0] + 2.0)


class ArgumentModel:
    """Per (tool, argument name): reliability of each source of the argument's value."""

    name = "argument_sources"

    def __init__(self, max_sources: int = 24, min_support: int = 3, decay: float = 1.0,
                 max_slots: int = 20_000, max_signatures: int = 8) -> None:
        if max_sources < 1 or min_support < 1 or max_slots < 1 or max_signatures < 1:
            raise ValueError("max_sources, min_support, max_slots and max_signatures must be >= 1")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], not {decay!r}")
        self.max_sources, self.min_support, self.decay = int(max_sources), int(min_support), float(decay)
        self.max_slots, self.max_signatures = int(max_slots), int(max_signatures)
        # (tool, argument name, previous tool or "" for any) → source → [availabilities, matches]
        self._slots: OrderedDict[tuple[str, str, str], dict[Source, list[float]]] = OrderedDict()
        self._signatures: dict[str, dict[tuple[str, ...], float]] = {}
        self.learned = 0

    # -- learning ------------------------------------------------------------------------------------
    def learn_one(self, memory: SessionMemory, tool: str, args: Mapping[str, Any] | None) -> None:
        """Learn from a call about to be remembered: ``memory`` is the session *before* it."""
        args = args or {}
        signatures = self._signatures.setdefault(tool, {})
        signature = tuple(sorted(args))
        signatures[signature] = signatures.get(signature, 0.0) + 1.0
        if len(signatures) > self.max_signatures:
            del signatures[min((s for s in signatures if s != signature), key=signatures.__getitem__)]
        context = memory.previous.tool if memory.previous is not None else ""
        for name, value in args.items():
            used = value_key(value)
            holders = memory.holders(used)
            self._learn_slot(self._slot(tool, name, ""), memory, holders, used)
            if context:
                self._learn_slot(self._slot(tool, name, context), memory, holders, used)
        self.learned += 1

    def _learn_slot(self, slot: dict[Source, list[float]], memory: SessionMemory, holders: list[Source],
                    used: str) -> None:
        # memory.resolve_key inlined: this loop runs for every tracked source of every argument of every
        # call the proxy sees, and the call overhead was most of its cost.
        decay, previous, latest, any_keys = self.decay, memory.previous, memory.latest, memory.any_keys
        client = memory.client
        for (kind, who, key), counts in slot.items():
            if decay < 1.0:
                counts[0] *= decay
                counts[1] *= decay
            if kind == "const":
                current: str | None = key if who == client else None
            elif who == ANY:
                current = any_keys.get(key) if kind == "arg" else None
            else:
                memo = previous if who == PREVIOUS else latest.get(who)
                current = None if memo is None else (memo.arg_keys if kind == "arg" else memo.value_keys).get(key)
            if current is not None:
                counts[0] += 1.0
                if current == used:
                    counts[1] += 1.0
        for source in holders:
            if source not in slot:
                slot[source] = [1.0, 1.0]
        if ("const", client, used) not in slot:  # a constant's first use is no evidence that it recurs
            slot[("const", client, used)] = [1.0, 0.0]
        while len(slot) > self.max_sources:
            del slot[_weakest(slot)]

    def _slot(self, tool: str, name: str, context: str) -> dict[Source, list[float]]:
        key = (tool, name, context)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = {}
            while len(self._slots) > self.max_slots:
                self._slots.popitem(last=False)
        else:
            self._slots.move_to_end(key)
        return slot

    # -- prediction ----------------------------------------------------------------------------------
    def signature(self, tool: str) -> tuple[tuple[str, ...], float] | None:
        """The tool's most frequent argument-name set and its share, or None if never seen."""
        signatures = self._signatures.get(tool)
        if not signatures:
            return None
        best = max(signatures, key=lambda s: (signatures[s], s))
        return best, signatures[best] / sum(signatures.values())

    def candidates(self, memory: SessionMemory, tool: str, name: str) -> list[tuple[Any, float, Source]]:
        """(value, reliability, best source) for one slot, most reliable first, one row per value: from
        the slot of the session's previous tool, else from the slot of any context."""
        context = memory.previous.tool if memory.previous is not None else ""
        found = self._candidates(memory, self._slots.get((tool, name, context), {})) if context else []
        return found or self._candidates(memory, self._slots.get((tool, name, ""), {}))

    def _candidates(self, memory: SessionMemory, slot: Mapping[Source, list[float]]) -> list[tuple[Any, float, Source]]:
        best: dict[str, tuple[float, Source]] = {}
        for source, counts in slot.items():
            if counts[0] < self.min_support:
                continue
            key = memory.resolve_key(source)
            if key is None:
                continue
            score = _reliability(counts)
            if key not in best or score > best[key][0]:
                best[key] = (score, source)
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
        return [(memory.resolve(source), score, source) for _, (score, source) in ranked]

    def predict_one(self, memory: SessionMemory, tool: str, k: int = 1) -> list[tuple[dict[str, Any], float]]:
        """Up to ``k`` distinct argument fillings for ``tool`` with their confidences, best first;
        empty when a slot has no available source."""
        found = self.signature(tool)
        if found is None:
            return []
        names, share = found
        beam: list[tuple[dict[str, Any], float]] = [({}, share)]
        for name in names:
            options = self.candidates(memory, tool, name)[:k]
            if not options:
                return []
            beam = sorted(((({**args, name: value}), p * score) for args, p in beam for value, score, _ in options),
                          key=lambda row: -row[1])[:k]
        return beam

    # -- state ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {**header(self.name, _VERSION), "max_sources": self.max_sources, "min_support": self.min_support,
                "decay": self.decay, "max_slots": self.max_slots, "max_signatures": self.max_signatures,
                "learned": self.learned,
                "slots": [[tool, name, context, [[*source, *counts] for source, counts in slot.items()]]
                          for (tool, name, context), slot in self._slots.items()],
                "signatures": [[tool, [[list(s), c] for s, c in sigs.items()]] for tool, sigs in self._signatures.items()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ArgumentModel:
        """A model continuing from ``state()``; PrefetchStateError when the state is not a valid one."""
        state = check_header(state, cls.name, _VERSION)
        try:
            model = cls(max_sources=state["max_sources"], min_support=state["min_support"], decay=state["decay"],
                        max_slots=state["max_slots"], max_signatures=state["max_signatures"])
            model.learned = int(state["learned"])
            for tool, name, context, rows in state["slots"]:
                require(isinstance(tool, str) and isinstance(name, str) and isinstance(context, str), cls.name,
                        f"bad slot {tool!r}/{name!r}/{context!r}")
                slot = model._slots[(tool, name, context)] = {}
                for kind, who, key, available, matched in rows:
                    require(kind in _KINDS and isinstance(who, str) and isinstance(key, str), cls.name,
                            f"bad source {kind!r}/{who!r}/{key!r}")
                    require(kind != "arg" or who in (PREVIOUS, ANY) or bool(who), cls.name, "empty source tool")
                    if kind == "const":
                        key_value(key)  # a constant must be a value key
                    require(_count(available) and _count(matched) and matched <= available + 1e-9, cls.name,
                            f"bad counts {available!r}/{matched!r}")
                    slot[(kind, who, key)] = [float(available), float(matched)]
                require(len(slot) <= model.max_sources, cls.name, "more sources than max_sources")
            for tool, rows in state["signatures"]:
                require(isinstance(tool, str), cls.name, f"bad tool {tool!r}")
                sigs = model._signatures[tool] = {}
                for names, count in rows:
                    require(isinstance(names, list) and all(isinstance(n, str) for n in names) and _count(count),
                            cls.name, f"bad signature {names!r}: {count!r}")
                    sigs[tuple(names)] = float(count)
        except PrefetchStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed(cls.name, exc) from exc
        return model


def _weakest(slot: Mapping[Source, list[float]]) -> Source:
    """The source eviction drops: the first with the lowest ``_keep_score`` (``min`` with a key, unrolled)."""
    victim, lowest = None, math.inf
    for source, (available, matched) in slot.items():
        score = matched / (available + 2.0)
        if score < lowest:
            victim, lowest = source, score
    assert victim is not None
    return victim


def _count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def recent_arguments(memory: SessionMemory, tool: str) -> dict[str, Any] | None:
    """The naive filling (no learning): the argument names of the tool's latest call in this session,
    each with the latest value of that name in any call of the session; None if the tool's latest
    call is no longer remembered."""
    memo = memory.latest.get(tool)
    if memo is None:
        return None
    return {name: memory.any_args.get(name, value) for name, value in memo.args.items()}
