"""The rolling z-score as an ensemble member: |x − mean| / std of the previous ``window`` values.

The benchmark's baseline, given the same tuning as the other detectors, found isolated spikes
better than any of them (a long window with a high limit), so the offline ensemble carries it: with
it the ensemble can do no worse than its best member on the tuning split. Per feature, the window
holds the last ``window`` values (NaN for a missing one); a value is scored once at least half the
window is finite; a constant window scores 0 for the same value and "very far" for any other.
Score: 0.5 at |z| = ``limit`` (the shared hill curve).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from only1mcp.models.anomaly._common import Z_CLIP, check_header, hill, pack, unpack, vector_of
from only1mcp.models.anomaly.base import DetectorStateError, Observation, Score

__all__ = ["RollingZ"]

_VERSION = 1


class RollingZ:
    """|z| over the previous ``window`` values of each feature; the worst feature scores."""

    def __init__(self, features: Sequence[str], *, window: int = 200, limit: float = 5.0, name: str = "zscore") -> None:
        if not features:
            raise ValueError("RollingZ needs at least one feature")
        if window < 4 or not (math.isfinite(limit) and limit > 0):
            raise ValueError("window must be >= 4 and limit a positive number")
        self.name = name
        self.features = tuple(features)
        self.window, self.limit = int(window), float(limit)
        self._past = np.full((self.window, len(self.features)), math.nan)  # oldest first

    def _scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and signed z of the rows of ``X``, each against the ``window`` values before it. Each
        row's window is summed on its own (O(rows × window)): running sums would be O(rows) but round
        differently with where a batch starts, and the batch path must equal the loop exactly."""
        history = np.concatenate([self._past, X])
        past = np.moveaxis(sliding_window_view(history[:-1], self.window, axis=0), -1, 1)  # (n, window, k)
        finite = np.isfinite(past)
        count = finite.sum(axis=1)
        with np.errstate(all="ignore"):
            mean = np.nansum(past, axis=1) / count
            std = np.sqrt(np.nansum((past - mean[:, None, :]) ** 2, axis=1) / count)
            d = X - mean
            z = np.where(std > 0, d / std, np.where(d == 0, 0.0, np.sign(d) * Z_CLIP))
        enough = (count >= self.window // 2) & np.isfinite(X)
        z = np.where(enough, np.clip(z, -Z_CLIP, Z_CLIP), 0.0)
        score = np.asarray(hill(np.abs(z), self.limit), dtype=float).reshape(z.shape).max(axis=1)
        return np.where(enough.any(axis=1), score, 0.0), z

    def score_one(self, x: Observation, t: float) -> Score:
        row = vector_of(x, self.features)[None, :]
        score, z = self._scores(row)
        finite_past = np.isfinite(self._past).sum(axis=0)
        warming = not (finite_past >= self.window // 2).any()
        return Score(0.0 if warming else float(score[0]), dict(zip(self.features, map(float, z[0]))), None, warming)

    def learn_one(self, x: Observation, t: float) -> None:
        self._past = np.concatenate([self._past[1:], vector_of(x, self.features)[None, :]])

    def score_learn_many(self, X: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Scores of every row of ``X`` (columns in ``features`` order), each scored then learned."""
        X = np.asarray(X, dtype=float).reshape(-1, len(self.features))
        if not len(X):
            return np.zeros(0)
        score = self._scores(X)[0]
        self._past = np.concatenate([self._past, X])[-self.window:]
        return score

    def state(self) -> dict[str, Any]:
        return {"detector": "zscore", "version": _VERSION, "name": self.name, "features": list(self.features),
                "window": self.window, "limit": self.limit, "past": pack(self._past)}

    def restore(self, state: Mapping[str, Any]) -> None:
        check_header(state, "zscore", _VERSION, self.features)
        if state.get("window") != self.window or state.get("limit") != self.limit:
            raise DetectorStateError("state saved with another window / limit")
        self._past = unpack(state.get("past"), (self.window, len(self.features)), "past")
