"""River's Half-Space Trees, updated with every observation.

HST needs features in [0, 1]. A min-max scaler over all history is ruined by one outlier, so each
feature is squashed instead: robust z against the feature's first ``warmup`` values (median, MAD,
floored), then 0.5 + 0.5·tanh(z / 6) — monotone, any scale and unit, never outside [0, 1]. The
trees learn the squashed values in windows of ``window_size`` rows (river's mass profile: the
reference window scores the current one).

HST's raw score (high = anomalous; taken as −log(1 − raw), because normal rows crowd just below 1)
has no fixed meaning, so it is normalised against its own history: 0.5 at the highest raw score of
the last ``memory`` rows it did not flag, 0 at their median. Until the first HST window is complete the detector is warming up.

State: river keeps no JSON form, so the state carries what the forest is made of — the seed and
feature names (which rebuild the same trees) and every node's two masses — and ``restore``
rebuilds the trees and writes the masses back. River's learning is per row in Python, so this
detector's batch path is the loop itself (about 20 µs a row): it is the slow member of the ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from river.anomaly import HalfSpaceTrees

from only1mcp.models.anomaly._common import check_header, hill, pack, robust_baseline, unpack, vector_of
from only1mcp.models.anomaly.base import DetectorStateError, Observation, Score

__all__ = ["HalfSpace"]

_VERSION = 1


class HalfSpace:
    """river ``HalfSpaceTrees`` on squashed robust z of each feature; score 0.5 above the highest recent raw score."""

    def __init__(self, features: Sequence[str], *, warmup: int = 30, n_trees: int = 10, height: int = 8,
                 window_size: int = 100, memory: int = 500, seed: int = 0,
                 name: str = "hst") -> None:
        if not features:
            raise ValueError("HalfSpace needs at least one feature")
        if warmup < 5 or window_size < 10:
            raise ValueError("warmup must be >= 5 and window_size >= 10")
        self.name = name
        self.features = tuple(features)
        self.warmup, self.memory = int(warmup), int(memory)
        self._params = [int(n_trees), int(height), int(window_size), int(seed)]
        self._hst = self._new_forest()
        self._warm = np.full((self.warmup, len(self.features)), math.nan)
        self._seen = 0
        self._center = np.zeros(len(self.features))
        self._scale = np.ones(len(self.features))
        self._last = np.full(len(self.features), 0.5)
        self._raws = np.empty(0)  # recent raw scores of rows not flagged

    def _new_forest(self) -> HalfSpaceTrees:
        n_trees, height, window_size, seed = self._params
        hst = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        hst.learn_one({f: 0.5 for f in self.features})  # builds the trees (their shape depends on the seed only)
        for nodes in hst._tree_nodes:
            for node in nodes:
                node.l_mass = node.r_mass = 0
        hst.counter = 0
        return hst

    def _squash(self, x: Observation) -> tuple[dict[str, float], np.ndarray]:
        v = vector_of(x, self.features)
        z = (v - self._center) / self._scale
        u = np.where(np.isfinite(z), 0.5 + 0.5 * np.tanh(z / 6.0), self._last)  # missing: as last seen
        return dict(zip(self.features, map(float, u))), np.where(np.isfinite(z), z, 0.0)

    def _relative(self, raw: float) -> float:
        """0.5 at the highest raw score of the last ``memory`` rows it did not flag."""
        past = np.sort(self._raws)
        mid, top = past[len(past) // 2], past[-1]
        return float(hill((raw - mid) / max(top - mid, 1e-9), 1.0))

    def _raw(self, u: dict[str, float]) -> float:
        """HST's score on a log scale of its distance to 1: normal rows crowd just below 1."""
        return -math.log(max(1.0 - self._hst.score_one(u), 1e-6))

    def score_one(self, x: Observation, t: float) -> Score:
        if self._seen < self.warmup or self._hst._first_window or len(self._raws) < 10:
            return Score(0.0, {}, None, True)
        u, z = self._squash(x)
        value = self._relative(self._raw(u))
        return Score(value, dict(zip(self.features, map(float, z))), None, False)

    def learn_one(self, x: Observation, t: float) -> None:
        if self._seen < self.warmup:
            self._warm[self._seen] = vector_of(x, self.features)
            self._seen += 1
            if self._seen == self.warmup:
                for f in range(len(self.features)):
                    self._center[f], self._scale[f], _ = robust_baseline(self._warm[:, f])
            return
        self._seen += 1
        u, _ = self._squash(x)
        if not self._hst._first_window:  # track the raw score's own scale, from rows it does not flag
            raw = self._raw(u)
            if len(self._raws) < 10 or self._relative(raw) < 0.5:
                self._raws = np.append(self._raws, raw)[-self.memory:]
        self._hst.learn_one(u)
        self._last = np.array([u[f] for f in self.features])

    def score_learn_many(self, X: np.ndarray, t: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(-1, len(self.features))
        t = np.zeros(len(X)) if t is None else np.asarray(t, dtype=float)
        out = np.empty(len(X))
        for i, row in enumerate(X):  # river learns row by row; there is no faster exact path
            obs = dict(zip(self.features, row.tolist()))
            out[i] = self.score_one(obs, t[i]).value
            self.learn_one(obs, t[i])
        return out

    def state(self) -> dict[str, Any]:
        masses = [[[node.l_mass, node.r_mass] for node in nodes] for nodes in self._hst._tree_nodes]
        return {"detector": "hst", "version": _VERSION, "name": self.name, "features": list(self.features),
                "params": self._params, "warmup": self.warmup, "seen": self._seen, "warm": pack(self._warm),
                "center": pack(self._center), "scale": pack(self._scale), "last": pack(self._last),
                "raws": pack(self._raws), "counter": self._hst.counter,
                "first_window": self._hst._first_window, "masses": masses}

    def restore(self, state: Mapping[str, Any]) -> None:
        check_header(state, "hst", _VERSION, self.features)
        if state.get("params") != self._params or state.get("warmup") != self.warmup:
            raise DetectorStateError(f"state saved with parameters {state.get('params')!r}, not {self._params!r}")
        nf = len(self.features)
        warm = unpack(state.get("warm"), (self.warmup, nf), "warm")
        center, scale = unpack(state.get("center"), (nf,), "center"), unpack(state.get("scale"), (nf,), "scale")
        last = unpack(state.get("last"), (nf,), "last")
        raws = state.get("raws")
        raws = unpack(raws, (len(raws),), "raws") if isinstance(raws, list) and len(raws) <= self.memory else None
        if raws is None:
            raise DetectorStateError("state field 'raws' is not a list of at most memory scores")
        seen, counter, first = state.get("seen"), state.get("counter"), state.get("first_window")
        if not (isinstance(seen, int) and seen >= 0 and isinstance(counter, int)
                and 0 <= counter < self._params[2] and isinstance(first, bool)):
            raise DetectorStateError("state counters out of range")
        hst = self._new_forest()
        masses = state.get("masses")
        shape = (len(hst._tree_nodes), len(hst._tree_nodes[0]), 2)
        masses = unpack(masses, shape, "masses")
        if not np.isfinite(masses).all() or (masses < 0).any() or not np.isfinite(raws).all():
            raise DetectorStateError("state masses or raw-score statistics are not valid")
        for nodes, tree_masses in zip(hst._tree_nodes, masses):
            for node, (left, right) in zip(nodes, tree_masses):
                node.l_mass, node.r_mass = int(left), int(right)
        hst.counter, hst._first_window = counter, first
        self._hst, self._warm, self._center, self._scale, self._last, self._seen = hst, warm, center, scale, last, seen
        self._raws = raws
