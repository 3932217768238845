"""Isolation forest (pyod's ``IForest``) over a buffer of recent observations, refitted periodically.

The vector of a row is each feature's value and its change since the previous row (a spike
isolates on the change even when its value is inside the recent range). A missing value is the
last seen value of that feature (0 before any). The forest is first fitted after ``first_fit``
rows (warming up until then), then every ``refit_every`` rows on the last ``window`` rows; each
fit standardises its rows (median / MAD per column, so float32 trees see any scale alike) and
keeps its own training scores: a decision score is normalised against them, 0 at their median and
0.5 at their ``top_quantile`` (0.99), so the output does not depend on pyod's score unit.

``score_learn_many`` scores each stretch between two refits with one ``decision_function`` call
(fit on rows before the stretch only): the same model, the same rows as the loop, so the same
scores. The state keeps the buffer and the rows of the current fit; ``restore`` refits on those
with the same seed, which rebuilds the identical forest.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from only1mcp.models.anomaly._common import check_header, hill, pack, robust_baseline, unpack, vector_of
from only1mcp.models.anomaly.base import DetectorStateError, Observation, Score

__all__ = ["IsolationForest"]

_F32_MAX = float(np.finfo(np.float32).max)

_VERSION = 1


class IsolationForest:
    """pyod IForest on [values, changes] of the last ``window`` rows; score 0.5 at the training scores' 99th percentile."""

    def __init__(self, features: Sequence[str], *, window: int = 512, first_fit: int = 64, refit_every: int = 256,
                 n_estimators: int = 25, max_samples: int = 128, top_quantile: float = 0.99, seed: int = 0,
                 name: str = "iforest") -> None:
        if not features:
            raise ValueError("IsolationForest needs at least one feature")
        if not 16 <= first_fit <= window or refit_every < 1:
            raise ValueError("need 16 <= first_fit <= window and refit_every >= 1")
        self.name = name
        self.features = tuple(features)
        self.window, self.first_fit, self.refit_every = int(window), int(first_fit), int(refit_every)
        self.n_estimators, self.max_samples, self.seed = int(n_estimators), int(max_samples), int(seed)
        self.top_quantile = float(top_quantile)
        self._dims = 2 * len(self.features)
        self._buffer = np.empty((0, self._dims))
        self._last = np.full(len(self.features), math.nan)
        self._seen = 0
        self._fits = 0
        self._train = np.empty((0, self._dims))  # rows of the current fit (for restore)
        self._model: Any = None
        self._center = self._scale = np.zeros(self._dims)
        self._q_mid = self._q_top = 0.0
        self._trees: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = []
        self._denominator = 1.0

    # -- rows → vectors -----------------------------------------------------------------------------
    def _vectors(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Imputed [values, changes] of every row, and the last values after them."""
        n, nf = X.shape
        filled = np.vstack([self._last[None, :], X])
        pos = np.where(np.isfinite(filled), np.arange(n + 1)[:, None], 0)
        np.maximum.accumulate(pos, axis=0, out=pos)
        filled = filled[pos, np.arange(nf)]
        filled = np.where(np.isfinite(filled), filled, 0.0)
        return np.hstack([filled[1:], np.diff(filled, axis=0)]), filled[-1]

    # -- fitting and scoring --------------------------------------------------------------------------
    def _fit(self, rows: np.ndarray, fit_number: int) -> None:
        from pyod.models.iforest import IForest

        center, scale = np.empty(self._dims), np.empty(self._dims)
        for j in range(self._dims):
            center[j], scale[j], _ = robust_baseline(rows[:, j])
        model = IForest(n_estimators=self.n_estimators, max_samples=min(self.max_samples, len(rows)),
                        random_state=self.seed + fit_number, n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit((rows - center) / scale)
        forest = model.detector_
        n = forest.max_samples_
        self._trees = [(tree.tree_, np.asarray(features), np.asarray(lengths), np.asarray(average))
                       for tree, features, lengths, average in zip(forest.estimators_, forest.estimators_features_,
                                                                   forest._decision_path_lengths,
                                                                   forest._average_path_length_per_tree)]
        c = 2.0 * (math.log(n - 1) + 0.5772156649) - 2.0 * (n - 1) / n if n > 2 else float(n > 1)
        self._denominator = len(self._trees) * c or 1.0
        self._model, self._center, self._scale, self._train = model, center, scale, rows.copy()
        train = np.sort(self._decision((rows - center) / scale))
        self._q_mid, self._q_top = float(np.median(train)), float(np.quantile(train, self.top_quantile))

    def _decision(self, Z: np.ndarray) -> np.ndarray:
        """pyod's decision score up to its constant offset: 2^(−mean path length / c(n)), computed from
        the fitted trees directly (sklearn's own path costs ~2 ms of overhead a call, too much per row)."""
        # Far-out rows (a latency 1e40 σ away) stay far out, not inf: float32 is what the trees compare in.
        Z32 = np.ascontiguousarray(np.clip(Z, -_F32_MAX, _F32_MAX), dtype=np.float32)
        depths = np.zeros(len(Z))
        for tree, features, lengths, average in self._trees:
            leaves = tree.apply(np.ascontiguousarray(Z32[:, features]))
            depths += lengths[leaves] + average[leaves] - 1.0
        return 2.0 ** (-depths / self._denominator)

    def _score(self, vectors: np.ndarray) -> np.ndarray:
        if self._model is None or not len(vectors):
            return np.zeros(len(vectors))
        raw = self._decision((vectors - self._center) / self._scale)
        spread = max(self._q_top - self._q_mid, 1e-12)
        return hill((raw - self._q_mid) / spread, 1.0)

    def _advance(self, X: np.ndarray, commit: bool, want_scores: bool = True) -> tuple[np.ndarray, bool]:
        vectors, last = self._vectors(X)
        if not commit:
            return self._score(vectors), self._model is None
        scores = np.zeros(len(vectors))
        start = 0
        while start < len(vectors):
            due = self._next_fit() - self._seen  # rows until the next refit
            stop = min(len(vectors), start + max(due, 1))
            if want_scores:
                scores[start:stop] = self._score(vectors[start:stop])
            self._buffer = np.vstack([self._buffer, vectors[start:stop]])[-self.window:]
            self._seen += stop - start
            if self._seen == self._next_fit():
                self._fits += 1
                self._fit(self._buffer, self._fits)
            start = stop
        self._last = last
        return scores, self._model is None

    def _next_fit(self) -> int:
        return self.first_fit if self._fits == 0 else self.first_fit + self._fits * self.refit_every

    # -- the Detector interface -----------------------------------------------------------------------
    def score_one(self, x: Observation, t: float) -> Score:
        X = vector_of(x, self.features)[None, :]
        scores, warming = self._advance(X, commit=False)
        vector = self._vectors(X)[0][0]
        z = (vector[: len(self.features)] - self._center[: len(self.features)]) / np.where(
            self._scale[: len(self.features)] > 0, self._scale[: len(self.features)], 1.0)
        return Score(float(scores[0]), dict(zip(self.features, map(float, z))) if not warming else {}, None, warming)

    def learn_one(self, x: Observation, t: float) -> None:
        self._advance(vector_of(x, self.features)[None, :], commit=True, want_scores=False)

    def score_learn_many(self, X: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self._advance(np.asarray(X, dtype=float).reshape(-1, len(self.features)), commit=True)[0]

    def state(self) -> dict[str, Any]:
        return {"detector": "iforest", "version": _VERSION, "name": self.name, "features": list(self.features),
                "params": [self.window, self.first_fit, self.refit_every, self.n_estimators, self.max_samples, self.seed],
                "seen": self._seen, "fits": self._fits, "last": pack(self._last), "buffer": pack(self._buffer),
                "train": pack(self._train)}

    def restore(self, state: Mapping[str, Any]) -> None:
        check_header(state, "iforest", _VERSION, self.features)
        params = [self.window, self.first_fit, self.refit_every, self.n_estimators, self.max_samples, self.seed]
        if state.get("params") != params:
            raise DetectorStateError(f"state saved with parameters {state.get('params')!r}, not {params!r}")
        seen, fits = state.get("seen"), state.get("fits")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (seen, fits)):
            raise DetectorStateError("state fields 'seen' / 'fits' are not counts")
        buffer, train = state.get("buffer"), state.get("train")
        if not isinstance(buffer, list) or not isinstance(train, list):
            raise DetectorStateError("state fields 'buffer' / 'train' are not lists")
        buffer = unpack(buffer, (len(buffer), self._dims), "buffer") if buffer else np.empty((0, self._dims))
        train = unpack(train, (len(train), self._dims), "train") if train else np.empty((0, self._dims))
        last = unpack(state.get("last"), (len(self.features),), "last")
        if len(buffer) > self.window or (fits > 0) != (len(train) > 0) or not np.isfinite(buffer).all():
            raise DetectorStateError("state buffer inconsistent with its fit count")
        previous = (self._model, self._center, self._scale, self._train, self._q_mid, self._q_top, self._trees,
                    self._denominator)
        try:
            if fits:
                self._fit(train, fits)
        except Exception as exc:  # a forest that cannot be rebuilt: keep the detector as it was
            (self._model, self._center, self._scale, self._train, self._q_mid, self._q_top, self._trees,
             self._denominator) = previous
            raise DetectorStateError(f"cannot refit the saved rows: {exc}") from None
        if not fits:
            self._model, self._train = None, np.empty((0, self._dims))
        self._buffer, self._last, self._seen, self._fits = buffer, last, seen, fits
