"""``RiverLatency``: the online challenger, learning one call at a time.

The XGBoost model is retrained every few minutes; between retrainings the world may change (a
replica slows on one tool). A river model updated per event adapts within calls, so it runs in
shadow beside the live model and goes live only through the registry's gate, like any candidate.

Two linear quantile regressions (pinball loss at 0.5 and 0.95, SGD) on standardised
``sign(x)·log1p(|x|)`` features, predicting ``log1p(latency_ms)``. In log space the synthetic and
real load effect (latency ∝ (1 + inflight)^k, times the replica × tool base) is linear, and a
quantile of the log is the log of the quantile, so P50/P95 keep their meaning after ``expm1``.

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


def _pipeline(alpha: float, lr: float) -> Any:
    from river import linear_model, optim, preprocessing

    return preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(lr), loss=optim.losses.Quantile(alpha), intercept_lr=lr * 5, l2=0.0)


def _squash(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


class RiverLatency:
    """Online P50/P95 latency predictor over ``FEATURE_NAMES`` rows (river, per-event updates)."""

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr
        self.feature_names: tuple[str, ...] = FEATURE_NAMES
        self.feature_version = FEATURE_VERSION
        self.n = 0
        self._models = {"p50": _pipeline(0.5, lr), "p95": _pipeline(0.95, lr)}

    def _row(self, x: Sequence[float]) -> dict[str, float]:
        if len(x) != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {len(x)}")
        return {name: _squash(float(v)) for name, v in zip(self.feature_names, x)}

    def learn_one(self, x: Sequence[float], y: float) -> None:
        """Learn one finished call: its features at routing time and its latency in ms."""
        row, target = self._row(x), math.log1p(max(float(y), 0.0))
        for model in self._models.values():
            model.learn_one(row, target)
        self.n += 1

    def predict(self, X: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
        """``(p50, p95)`` in ms, float64 [n] each; P95 ≥ P50. Before any learning: zeros."""
        rows = np.asarray(X, dtype=np.float64)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        out = {name: np.empty(len(rows)) for name in self._models}
        for i, x in enumerate(rows):
            row = self._row(x)
            for name, model in self._models.items():
                out[name][i] = model.predict_one(row)
        p50 = np.maximum(np.expm1(np.clip(out["p50"], -50.0, 50.0)), 0.0)
        p95 = np.maximum(np.expm1(np.clip(out["p95"], -50.0, 50.0)), p50)
        return p50, p95

    def to_bytes(self) -> bytes:
        """The whole state (pickle, see the module docstring), prefixed with a magic line."""
        return _MAGIC + pickle.dumps({"class": "RiverLatency", "feature_names": self.feature_names,
                                      "feature_version": self.feature_version, "lr": self.lr, "n": self.n,
                                      "models": self._models}, protocol=pickle.HIGHEST_PROTOCOL)

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
        model = cls(lr=float(state["lr"]))
        model.n, model._models = int(state["n"]), state["models"]
        return model

    def __repr__(self) -> str:
        return f"RiverLatency(n={self.n})"
