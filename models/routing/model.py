"""The model-backed routing predictor: latency curves from a latency model over causal features.

It keeps a ``CausalFeatures`` (models/latency/features.py) fed with every request event and an
index of the (server, tool, replica) keys it has seen calls for. :meth:`design` builds ONE
feature matrix for every known key at inflight ``0 … levels-1`` (the rows the worker scores with
each model it runs — live, shadow, the online challenger — in one ``predict`` each), and
:meth:`curves_of` turns a model's (P50, P95) answers back into curves per key. Pure: the model
objects come from the caller (anything with ``predict(X) -> (p50, p95)``), no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from only1mcp.models.latency.features import is_training_row
from only1mcp.models.routing.tool_ewma import counts
from only1mcp.models.routing.weights import Curves

__all__ = ["ModelRouting", "Design"]

Key = tuple[str, "str | None", str]  # (server, tool, replica)
_BYTES_ALPHA = 0.1
# Calls a replica needs at an in-flight level before the model's prediction there is published (its
# P95 is fitted on the same rows, and a 95th percentile needs twenty calls to have one above it).
# Past the last supported level a tree model repeats its last leaf (it cannot extrapolate a queue),
# so the curve stops there and the proxy extends it as a queue grows (``proxy/routing/learned.py``:
# last value × (inflight + 1) / length).
LEVEL_SUPPORT = 20



class Design:
    """The rows of one scoring batch: ``keys[i]`` at inflight ``0 … levels-1`` are rows
    ``i*levels … i*levels + levels-1`` of ``X`` (float32)."""

    __slots__ = ("keys", "levels", "X")

    def __init__(self, keys: list[Key], levels: int, X: np.ndarray) -> None:
        self.keys, self.levels, self.X = keys, levels, X


class ModelRouting:
    """Feature state and key index for the latency model; ``model`` is the one :meth:`curves` uses."""

    source = "latency_model"

    def __init__(self, features: Any, levels: int = 8, min_samples: int = 10, ttl_s: float = 600.0,
                 model: Any = None) -> None:
        self.features = features  # a CausalFeatures (learn_one / features)
        self.levels, self.min_samples, self.ttl_s = int(levels), int(min_samples), float(ttl_s)
        self.model = model
        self._keys: dict[Key, list[float]] = {}  # (server, tool, replica) → [calls, last ts, request bytes EWMA]
        self._levels_seen: dict[tuple[str, str], list[int]] = {}  # (server, replica) → calls per in-flight level

    @property
    def version(self) -> str:
        return str(getattr(self.model, "version", "") or "")

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """The calls the training job learns from (``is_training_row``: tools/call, upstream, a replica)
        go to the features, so live vectors are computed from what training rows were; routed calls
        with a server also index their key."""
        self.learn(event, counts(event))

    def learn(self, event: Mapping[str, Any], counted: bool) -> None:
        """:meth:`learn_one` when ``counted = counts(event)`` is known already (the worker's hot path)."""
        if counted or is_training_row(event):  # a counted call is a training row
            self.features.learn_one(event)
        if counted:
            key = (event["server"], event.get("tool"), event["replica"])
            entry = self._keys.get(key)
            ts, size = float(event.get("ts") or 0.0), float(event.get("request_bytes") or 0)
            if entry is None:
                self._keys[key] = [1, ts, size]
            else:
                entry[0] += 1
                if ts > entry[1]:
                    entry[1] = ts
                entry[2] += _BYTES_ALPHA * (size - entry[2])
            level = int(event.get("inflight") or 0)
            if 0 <= level < self.levels:
                seen = self._levels_seen.get((key[0], key[2]))
                if seen is None:
                    seen = self._levels_seen[(key[0], key[2])] = [0] * self.levels
                seen[level] += 1

    def known(self) -> list[Key]:
        """The keys with at least ``min_samples`` calls."""
        return [key for key, entry in self._keys.items() if entry[0] >= self.min_samples]

    def calls(self, key: Key) -> int:
        """Calls seen for a key (since this predictor started learning)."""
        entry = self._keys.get(key)
        return int(entry[0]) if entry is not None else 0

    def supported_levels(self, key: Key) -> int:
        """How many in-flight levels, from 0, the key's replica has had ``LEVEL_SUPPORT`` calls at each
        (at least 1: an idle replica's latency is what the model knows best)."""
        seen = self._levels_seen.get((key[0], key[2]))
        supported = 0
        if seen is not None:
            for calls in seen:
                if calls < LEVEL_SUPPORT:
                    break
                supported += 1
        return max(1, supported)

    def prune(self, now: float) -> int:
        cutoff = now - self.ttl_s
        stale = [key for key, entry in self._keys.items() if entry[1] < cutoff]
        for key in stale:
            del self._keys[key]
        if stale:
            live = {(server, replica) for server, _tool, replica in self._keys}
            for gone in [pair for pair in self._levels_seen if pair not in live]:
                del self._levels_seen[gone]
        return len(stale)

    def design(self, now: float) -> Design:
        """One matrix: every known key at inflight 0 … levels-1, features as of ``now`` (the request
        size: the key's recent average, the typical call)."""
        keys, levels = self.known(), self.levels
        rows: list[list[float]] = []
        features = self.features.features
        for key in keys:
            _server, tool, replica = key
            size = self._keys[key][2]
            for inflight in range(levels):
                rows.append(features(replica, tool, inflight, now, size))
        width = len(rows[0]) if rows else 0
        X = np.asarray(rows, dtype=np.float32).reshape(len(rows), width)
        return Design(keys, levels, X)

    def curves_of(self, design: Design, predictions: Any, keep: Any = None) -> tuple[Curves, dict[Key, list[float]]]:
        """A model's ``(p50, p95)`` over ``design`` → (routing curves per (server, tool) and replica,
        the raw P50 curve per key); ``keep(key)`` False leaves a key out of the routing curves.

        A routing curve is the P50 prediction — a call's expected wait, the cost join-the-shortest-
        expected-delay routing compares (routing on the P95 gave a 2-11 % higher mean and a 3-8 %
        higher p99 on all three seeds of the load-sensitive benchmark; README). It holds the key's
        supported levels only (:meth:`supported_levels`) and never falls as the in-flight count grows:
        a call waits behind as many calls or more, so a dip is the model's noise (in the load-sensitive
        benchmark a replica was predicted cheaper at 6 in flight than at 4 and sent calls that queued
        there for 160-180 ms)."""
        p50, p95 = (np.asarray(p, dtype=np.float64).reshape(-1) for p in predictions)
        n = len(design.keys) * design.levels
        if p50.shape[0] != n or p95.shape[0] != n:
            raise ValueError(f"the model answered {p50.shape[0]}/{p95.shape[0]} predictions for {n} rows")
        curves: Curves = {}
        medians: dict[Key, list[float]] = {}
        levels = design.levels
        for i, key in enumerate(design.keys):
            server, tool, replica = key
            lo, hi = i * levels, (i + 1) * levels
            if keep is None or keep(key):
                supported = np.maximum.accumulate(p50[lo:lo + min(levels, self.supported_levels(key))])
                curves.setdefault((server, tool), {})[replica] = supported.tolist()
            medians[key] = p50[lo:hi].tolist()
        return curves, medians

    def curves(self, now: float) -> Curves:
        """Routing curves of ``self.model`` for every known key (empty without a model or keys)."""
        if self.model is None:
            return {}
        design = self.design(now)
        if not design.keys:
            return {}
        return self.curves_of(design, self.model.predict(design.X))[0]
