"""Learned: routing weights from the learning loop, per tool and per server, while they are fresh.

Decisions arrive on the decision channel (``proxy/decisions.py``) and are applied with
:meth:`Learned.apply`: one entry per tool (by its upstream name) and one for the whole
server, each valid until a deadline on the pool's loop clock. A call takes the entry of
its tool if fresh, else the server's if fresh, else the fallback policy decides and the
reason says why. The table is immutable and replaced by one assignment, so the call path
only reads.

An entry with predicted latency curves weighs the candidates by their load at the moment
of the call: ``cost_i = curve_i[inflight_i]`` (past the curve's end, its last value × (inflight + 1) / len, as a
queue grows) and
``w_i = exp(-(cost_i / min_cost - 1) / temperature)``; an entry without curves uses the
published weights. A candidate the entry says nothing about gets weight 0. Every candidate
keeps at least ``exploration`` of the probability
(``p_i = exploration + (1 - n·exploration)·w_i / Σw``), so the models keep seeing it, and
the pick is drawn with the policy's rng, so the probability of each choice is known.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest, make_policy

__all__ = ["Learned", "Entry"]

_MIN_COST_MS = 1e-3  # guards the division when a model predicts 0 ms for the best replica


class Entry:
    """One applied decision: weights or latency curves for one tool (or the server, ``tool`` None)."""

    __slots__ = ("tool", "weights", "curves", "valid_until", "model_version", "source", "ts", "valid_until_unix")

    def __init__(self, tool: str | None, weights: dict[str, float], curves: dict[str, tuple[float, ...]],
                 valid_until: float, model_version: str, source: str, ts: float, valid_until_unix: float) -> None:
        self.tool, self.weights, self.curves = tool, weights, curves
        self.valid_until, self.model_version, self.source = valid_until, model_version, source
        self.ts, self.valid_until_unix = ts, valid_until_unix

    @property
    def scope(self) -> str:
        return "server" if self.tool is None else "tool"

    def summary(self, now: float) -> dict[str, Any]:
        return {"source": self.source, "model_version": self.model_version,
                "age_s": round(time.time() - self.ts, 3), "valid_for_s": round(self.valid_until - now, 3),
                "replicas": sorted(set(self.weights) | set(self.curves)), "curves": bool(self.curves)}


class _Table:
    __slots__ = ("tools", "server")

    def __init__(self, tools: dict[str, Entry], server: Entry | None) -> None:
        self.tools, self.server = tools, server


_EMPTY = _Table({}, None)


class Learned:
    name = "learned"

    def __init__(self, fallback_policy: str = "p2c_ewma", rng: random.Random | None = None,
                 exploration: float = 0.01, temperature: float = 0.1, **options: Any) -> None:
        if fallback_policy in (self.name, "weighted"):
            raise ValueError(f"learned cannot fall back to {fallback_policy}")
        if not (math.isfinite(exploration) and exploration >= 0):
            raise ValueError(f"exploration must be a share ≥ 0, got {exploration!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self._rng = rng if rng is not None else random.Random()
        self.exploration = float(exploration)
        self.temperature = float(temperature)
        self.fallback = make_policy(fallback_policy, rng=self._rng, **options)
        self._table: _Table = _EMPTY

    # -- applying decisions (the decision subscriber, the admin API) ---------------------
    def apply(self, tool: str | None, weights: Mapping[str, float], predicted_ms: Mapping[str, Sequence[float]],
              valid_until: float, model_version: str = "", source: str = "", ts: float | None = None,
              valid_until_unix: float | None = None) -> None:
        """Replace the entry of ``tool`` (its upstream name; None = the server). ``valid_until`` is on
        the pool's loop clock. Values are checked: a broken decision must not route silently."""
        clean: dict[str, float] = {}
        for rid, weight in weights.items():
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight for {rid!r} must be a finite number ≥ 0, got {weight!r}")
            clean[str(rid)] = weight
        curves: dict[str, tuple[float, ...]] = {}
        for rid, curve in predicted_ms.items():
            values = tuple(float(v) for v in curve)
            if not values or not all(math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(f"predicted_ms for {rid!r} must be a non-empty list of finite numbers ≥ 0")
            curves[str(rid)] = values
        now_unix = time.time()
        entry = Entry(tool, clean, curves, float(valid_until), str(model_version), str(source),
                      now_unix if ts is None else float(ts), now_unix if valid_until_unix is None else valid_until_unix)
        old = self._table
        if tool is None:
            table = _Table(old.tools, entry)
        else:
            table = _Table({**old.tools, tool: entry}, old.server)
        self._table = table  # one assignment: a reader sees the old table or the new, never a mix

    def set_weights(self, weights: Mapping[str, float], valid_until: float, model_version: str) -> None:
        """Server-wide weights (``POST /admin/weights/<server>``), as for ``weighted``."""
        self.apply(None, weights, {}, valid_until, model_version, source="admin")

    def clear(self) -> None:
        self._table = _EMPTY

    def entries(self) -> tuple[Entry | None, dict[str, Entry]]:
        """The server-wide entry and the per-tool entries (upstream tool name → entry)."""
        table = self._table
        return table.server, dict(table.tools)

    def snapshot(self, now: float) -> dict[str, Any]:
        """For the admin API: what the table holds and how fresh it is (``now`` on the loop clock)."""
        table = self._table
        return {"fallback": self.fallback.name, "exploration": self.exploration, "temperature": self.temperature,
                "server": table.server.summary(now) if table.server is not None else None,
                "tools": {name: entry.summary(now) for name, entry in sorted(table.tools.items())}}

    # -- the call path ---------------------------------------------------------------------
    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        table = self._table  # read once: apply may swap it meanwhile
        now = request.now
        problems: list[str] = []
        tool = request.name if request.method == "tools/call" else None
        entry = table.tools.get(tool) if tool is not None and table.tools else None
        if entry is not None:
            if now < entry.valid_until:
                decision = self._route(entry, candidates)
                if decision is not None:
                    return decision
                problems.append(f"weights for tool {tool} (model {entry.model_version}) name no ready replica")
            else:
                problems.append(_stale(f"weights for tool {tool}", entry, now))
        server = table.server
        if server is not None:
            if now < server.valid_until:
                decision = self._route(server, candidates)
                if decision is not None:
                    if problems:
                        detail = decision.detail
                        detail["tool_entry"] = problems[0]  # type: ignore[index]
                        return Decision(decision.replica, self.name, f"{problems[0]}; {decision.reason}",
                                        decision.model_version, detail)
                    return decision
                problems.append(f"server weights (model {server.model_version}) name no ready replica")
            else:
                problems.append(_stale("server weights", server, now))
        elif not problems:
            problems.append("no weights yet" if not table.tools else f"no weights yet for tool {tool} or the server")
        return self._fall_back(candidates, request, "; ".join(problems))

    def _route(self, entry: Entry, candidates: Sequence[Any]) -> Decision | None:
        """Draw one candidate by ``entry``; None when it gives no candidate a positive weight."""
        curves = entry.curves
        costs: list[float | None] | None = None
        if curves:
            costs = []
            best = math.inf
            for c in candidates:
                curve = curves.get(c.id)
                if curve is None:
                    costs.append(None)
                    continue
                inflight, levels = c.inflight, len(curve)
                # Past the last level a queue's wait grows with the calls ahead of it: a one-value curve
                # (the specialisation learner's EMA) then weighs as p2c's cost, latency × (inflight + 1).
                cost = curve[inflight] if inflight < levels else curve[-1] * (inflight + 1) / levels
                costs.append(cost)
                if cost < best:
                    best = cost
            if best == math.inf:
                return None
            scale = 1.0 / (max(best, _MIN_COST_MS) * self.temperature)
            weights = [0.0 if cost is None else math.exp(-(cost - best) * scale) for cost in costs]
        else:
            table = entry.weights
            weights = [table.get(c.id, 0.0) for c in candidates]
        total = math.fsum(weights)
        if not total > 0:
            return None
        n = len(candidates)
        floor = min(self.exploration, 1.0 / n)
        share = (1.0 - n * floor) / total
        probabilities = [floor + share * w for w in weights]
        point = self._rng.random()
        index = n - 1  # float rounding can leave the point just past the last bucket
        for i, p in enumerate(probabilities):
            point -= p
            if point < 0:
                index = i
                break
        chosen = candidates[index]
        rows = [{"replica": c.id, "weight": weights[i], "probability": probabilities[i],
                 "predicted_ms": costs[i] if costs is not None else None, "inflight": c.inflight}
                for i, c in enumerate(candidates)]
        detail = {"scope": entry.scope, "tool": entry.tool, "model_version": entry.model_version,
                  "source": entry.source, "fallback_reason": None, "candidates": rows}
        cost = costs[index] if costs is not None else None
        predicted = f", predicted {cost:.1f}ms at inflight {chosen.inflight}" if cost is not None else ""
        reason = (f"learned ({entry.scope}): {chosen.id} p={probabilities[index]:.2f}{predicted} "
                  f"by model {entry.model_version or '?'} ({entry.source or 'unknown source'})")
        return Decision(chosen, self.name, reason, entry.model_version, detail)

    def _fall_back(self, candidates: Sequence[Any], request: RouteRequest, why: str) -> Decision:
        inner = self.fallback.choose(candidates, request)
        detail = {"scope": None, "tool": None, "model_version": None, "source": None, "fallback_reason": why,
                  "fallback": self.fallback.name,
                  "candidates": [{"replica": c.id, "weight": None, "probability": None, "predicted_ms": None,
                                  "inflight": getattr(c, "inflight", None)} for c in candidates]}
        return Decision(inner.replica, self.name, f"{why}; fell back to {self.fallback.name}: {inner.reason}",
                        detail=detail)


def _stale(what: str, entry: Entry, now: float) -> str:
    since = time.strftime("%H:%M:%S", time.gmtime(entry.valid_until_unix))
    return (f"{what} of model {entry.model_version or '?'} stale since {since}Z "
            f"({now - entry.valid_until:.1f}s ago)")


POLICIES[Learned.name] = Learned
