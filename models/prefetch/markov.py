"""The next-tool model: a variable-order Markov chain over a session's tool names, with back-off.

River's style: ``learn_one(history, tool)`` after each call, ``predict_proba_one(history)`` or the
top-k ``predict_one(history, k)`` before the next. ``history`` is the session's earlier tool names,
oldest first (the session memory keeps them); the model itself keeps no sessions, only counts.

For each order k = 0 … ``order`` the context is the last k tools (padded with ``START`` at the
beginning of a session, so the first call is predicted too). Probabilities are interpolated
Witten–Bell: starting from the add-one unigram, each longer context that has been seen mixes its
own frequencies with the shorter context's estimate,

    P_k(t) = (c_k(t) + T_k · P_{k-1}(t)) / (n_k + T_k)

where n_k is the context's count and T_k the number of distinct tools seen after it: a context seen
often with few successors is trusted, a rare or scattered one backs off. That smoothed probability
is the prediction's confidence.

Memory is bounded: at most ``max_contexts`` contexts (least recently updated dropped first) and
``max_successors`` successors per context (the smallest count dropped). With ``decay`` < 1 a
context's counts are multiplied by ``decay`` each time it is updated, so old habits fade at the
pace of the context's own traffic.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from only1mcp.prefetch._state import PrefetchStateError, check_header, header, malformed, require

__all__ = ["NextToolModel", "START"]

START = "<s>"  # the context of a session's first call
_VERSION = 1
_EPS = 1e-9


class NextToolModel:
    """P(next tool | the session's last ``order`` tools), interpolated Witten–Bell back-off."""

    name = "next_tool_markov"

    def __init__(self, order: int = 2, decay: float = 1.0, max_contexts: int = 50_000,
                 max_successors: int = 64, max_tools: int = 10_000) -> None:
        if order < 0:
            raise ValueError(f"order must be >= 0, not {order!r}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], not {decay!r}")
        if max_contexts < 1 or max_successors < 1 or max_tools < 1:
            raise ValueError("max_contexts, max_successors and max_tools must be >= 1")
        self.order, self.decay = int(order), float(decay)
        self.max_contexts, self.max_successors, self.max_tools = int(max_contexts), int(max_successors), int(max_tools)
        self._unigram: dict[str, float] = {}
        self._contexts: OrderedDict[tuple[str, ...], dict[str, float]] = OrderedDict()  # oldest update first
        self.learned = 0

    # -- contexts ------------------------------------------------------------------------------------
    def _context_keys(self, history: Sequence[str]) -> list[tuple[str, ...]]:
        """The contexts of orders 1 … order (shortest first) for what follows ``history``."""
        if not self.order:
            return []
        padded = [START] * self.order + list(history)[-self.order:]  # history may be a deque: no slicing
        return [tuple(padded[len(padded) - k:]) for k in range(1, self.order + 1)]

    # -- learning ------------------------------------------------------------------------------------
    def learn_one(self, history: Sequence[str], tool: str) -> None:
        """Count ``tool`` after ``history`` (the session's tools before it, oldest first)."""
        self._bump(self._unigram, tool, self.max_tools)
        for ctx in self._context_keys(history):
            counts = self._contexts.get(ctx)
            if counts is None:
                counts = self._contexts[ctx] = {}
                while len(self._contexts) > self.max_contexts:
                    self._contexts.popitem(last=False)
            else:
                self._contexts.move_to_end(ctx)
            self._bump(counts, tool, self.max_successors)
        self.learned += 1

    def _bump(self, counts: dict[str, float], tool: str, bound: int) -> None:
        if self.decay < 1.0:
            for t in counts:
                counts[t] *= self.decay
        counts[tool] = counts.get(tool, 0.0) + 1.0
        if len(counts) > bound:  # drop the rarest other successor
            victim = min((t for t in counts if t != tool), key=counts.__getitem__)
            del counts[victim]

    # -- prediction ----------------------------------------------------------------------------------
    def predict_proba_one(self, history: Sequence[str]) -> dict[str, float]:
        """Tool → smoothed probability of being called next (empty before anything was learned)."""
        if not self._unigram:
            return {}
        total = sum(self._unigram.values())
        vocab = len(self._unigram)
        p = {t: (c + 1.0) / (total + vocab) for t, c in self._unigram.items()}
        for ctx in self._context_keys(history):
            counts = self._contexts.get(ctx)
            if not counts:
                continue  # an unseen longer context: the shorter estimate stands
            n = sum(counts.values())
            distinct = sum(1 for c in counts.values() if c > _EPS)
            if n <= _EPS:
                continue
            p = {t: (counts.get(t, 0.0) + distinct * q) / (n + distinct) for t, q in p.items()}
        return p

    def predict_one(self, history: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` likeliest next tools with their probabilities, likeliest first (ties by name)."""
        proba = self.predict_proba_one(history)
        return sorted(proba.items(), key=lambda item: (-item[1], item[0]))[:k]

    # -- state ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {**header(self.name, _VERSION), "order": self.order, "decay": self.decay,
                "max_contexts": self.max_contexts, "max_successors": self.max_successors,
                "max_tools": self.max_tools, "learned": self.learned, "unigram": dict(self._unigram),
                "contexts": [[list(ctx), dict(counts)] for ctx, counts in self._contexts.items()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> NextToolModel:
        """A model continuing from ``state()``; PrefetchStateError when the state is not a valid one."""
        state = check_header(state, cls.name, _VERSION)
        try:
            model = cls(order=state["order"], decay=state["decay"], max_contexts=state["max_contexts"],
                        max_successors=state["max_successors"], max_tools=state["max_tools"])
            model.learned = int(state["learned"])
            model._unigram = _counts(state["unigram"], cls.name)
            for raw_ctx, raw_counts in state["contexts"]:
                ctx = tuple(raw_ctx)
                require(1 <= len(ctx) <= model.order and all(isinstance(t, str) for t in ctx), cls.name,
                        f"bad context {raw_ctx!r}")
                model._contexts[ctx] = _counts(raw_counts, cls.name)
        except PrefetchStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed(cls.name, exc) from exc
        require(len(model._contexts) <= model.max_contexts, cls.name, "more contexts than max_contexts")
        return model


def _counts(raw: Any, name: str) -> dict[str, float]:
    require(isinstance(raw, Mapping), name, "counts must be a mapping")
    out = {}
    for tool, count in raw.items():
        require(isinstance(tool, str) and isinstance(count, (int, float)) and not isinstance(count, bool)
                and math.isfinite(count) and count >= 0, name, f"bad count {tool!r}: {count!r}")
        out[tool] = float(count)
    return out
