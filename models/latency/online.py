"""``RiverLatency``: the online challenger, learning one call at a time.

The XGBoost model is retrained every few minutes; between retrainings the world may change (a
replica slows on one tool). A river model updated per event adapts within calls, so it runs in
shadow beside the live model and goes live only through the registry's gate, like any candidate.

P50: a linear regression (squared loss, SGD) on standardised ``sign(x)·log1p(|x|)`` features,
predicting ``log1p(latency_ms)``. In log space the load effect (latency ∝ (1 + inflight)^k, times
the replica × tool base) is linear and multiplicative noise is symmetric, so the mean of the log
is the log of the median: squared loss converges far faster under SGD than a pinball loss, and
was measured so (pinball-loss SGD at 0.5 did worse than the EWMA baseline on the synthetic
load-sensitive workload; this halves its P50 MAE). P95: the P50 prediction times
``exp(q)``, ``q`` the rolling 0.95 quantile of the log residuals over the last ``window`` calls
(each residual taken *before* learning the call, so it is an honest out-of-sample error).

State goes to bytes with ``pickle`` (river objects are plain Python and pickle is how river
persists them). Unpickling runs code from the bytes: only load state this deployment wrote (the
registry's own folder), never bytes from the network. Bytes that do not load, or that hold another
class or other features, raise :class:`ModelError`.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from only1mcp.models.errors import ModelError
from only1mcp.models.latency.features import FEATURE_NAMES, FEATURE_VERSION

__all__ = ["RiverLatency"]

_MAGIC = b"only1mcp-river-latency\n"


def _pipeline(lr: float) -> Any:
    from river import linear_model, optim, preprocessing

    return preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(lr), intercept_lr=0.1, clip_gradient=10.0)


def _squash(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


def _expm1(z: np.ndarray) -> np.ndarray:
    return np.maximum(np.expm1(np.clip(z, -50.0, 50.0)), 0.0)


class RiverLatency:
    """Online P50/P95 latency predictor over ``FEATURE_NAMES`` rows (river, per-event updates)."""

    def __init__(self, lr: float = 0.002, window: int = 1000) -> None:
        from river import stats

        self.lr, self.window = lr, window
        self.version = "river-unregistered"  # the registry sets its version when it loads one
        self.feature_names: tuple[str, ...] = FEATURE_NAMES
        self.feature_version = FEATURE_VERSION
        self.n = 0
        self._p50 = _pipeline(lr)
        self._residual_q95 = stats.RollingQuantile(0.95, window_size=window)

    def _row(self, x: Sequence[float]) -> dict[str, float]:
        if len(x) != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {len(x)}")
        return {name: _squash(float(v)) for name, v in zip(self.feature_names, x)}

    def learn_one(self, x: Sequence[float], y: float) -> None:
        """Learn one finished call: its features at routing time and its latency in ms."""
        row, target = self._row(x), math.log1p(max(float(y), 0.0))
        if self.n:
            self._residual_q95.update(target - self._p50.predict_one(row))
        self._p50.learn_one(row, target)
        self.n += 1

    def predict(self, X: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
        """``(p50, p95)`` in ms, float64 [n] each; P95 ≥ P50. Before any learning: zeros."""
        rows = np.asarray(X, dtype=np.float64)
        if rows.size == 0:
            return np.zeros(0), np.zeros(0)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2:
            raise ValueError(f"expected rows of {len(self.feature_names)} features, got shape {rows.shape}")
        z = np.array([self._p50.predict_one(self._row(x)) for x in rows], dtype=np.float64)
        spread = max(float(self._residual_q95.get() or 0.0), 0.0)
        p50 = _expm1(z)
        return p50, np.maximum(_expm1(z + spread), p50)

    def to_bytes(self) -> bytes:
        """The whole state (pickle, see the module docstring), prefixed with a magic line."""
        return _MAGIC + pickle.dumps({"class": "RiverLatency", "feature_names": self.feature_names,
                                      "feature_version": self.feature_version, "lr": self.lr, "window": self.window,
                                      "n": self.n, "p50": self._p50, "residual_q95": self._residual_q95}, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> RiverLatency:
        """State written by ``to_bytes``; anything else (or other features) → :class:`ModelError`."""
        if not isinstance(data, (bytes, bytearray)) or not bytes(data).startswith(_MAGIC):
            raise ModelError("not a RiverLatency state (missing header)")
        try:
            state = pickle.loads(bytes(data)[len(_MAGIC):])  # noqa: S301 - our own files only, see docstring
        except Exception as exc:  # truncated or garbled pickles raise many types
            raise ModelError(f"RiverLatency state does not load: {exc}") from exc
        if not isinstance(state, dict) or state.get("class") != "RiverLatency":
            raise ModelError("RiverLatency state holds something else")
        if state.get("feature_version") != FEATURE_VERSION or tuple(state.get("feature_names", ())) != FEATURE_NAMES:
            raise ModelError(f"RiverLatency state has feature version {state.get('feature_version')}, this code "
                             f"computes {FEATURE_VERSION}: incompatible, refused")
        try:
            model = cls(lr=float(state["lr"]), window=int(state["window"]))
            model.n, model._p50, model._residual_q95 = int(state["n"]), state["p50"], state["residual_q95"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"RiverLatency state is incomplete: {exc}") from exc
        return model

    def __repr__(self) -> str:
        return f"RiverLatency(n={self.n})"
