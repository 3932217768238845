"""What the numba-kernel detectors (SPC, forecast residuals) share: one kernel call scores rows and
learns them, so ``score_one`` runs it on copies of the state and the batch path equals the loop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from only1mcp.models.anomaly._common import vector_of
from only1mcp.models.anomaly.base import Observation, Score

__all__ = ["KernelDetector"]


class KernelDetector:
    """Subclasses set ``features`` and implement ``_arrays`` (the mutable state) and ``_kernel_call``."""

    features: Sequence[str]

    def _arrays(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def _kernel_call(self, X: np.ndarray, arrays: tuple[np.ndarray, ...], score: np.ndarray, z: np.ndarray,
                     warming: np.ndarray) -> None:
        raise NotImplementedError

    def _run(self, X: np.ndarray, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = X.shape[0]
        score, z, warming = np.zeros(n), np.zeros((n, len(self.features))), np.zeros(n, dtype=np.bool_)
        self._kernel_call(np.ascontiguousarray(X, dtype=float), arrays, score, z, warming)
        return score, z, warming

    def score_one(self, x: Observation, t: float) -> Score:
        row = vector_of(x, self.features)[None, :]
        score, z, warming = self._run(row, tuple(a.copy() for a in self._arrays()))  # on copies: no learning
        return Score(float(score[0]), dict(zip(self.features, map(float, z[0]))), None, bool(warming[0]))

    def learn_one(self, x: Observation, t: float) -> None:
        self._run(vector_of(x, self.features)[None, :], self._arrays())

    def score_learn_many(self, X: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Scores of every row of ``X`` (columns in ``features`` order), each scored then learned."""
        return self._run(np.asarray(X, dtype=float).reshape(-1, len(self.features)), self._arrays())[0]
