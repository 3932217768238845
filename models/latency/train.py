"""Training the latency model: XGBoost quantile regression for P50 and P95, judged honestly.

Honesty rules (DESIGN.md, "Learning honesty"), enforced here rather than left to callers:

- the split is by time, never random: the last ``holdout_share`` of the rows *by time* is the
  hold-out, the model never sees it, and nothing is tuned on it;
- early stopping picks the number of rounds on a validation slice carved, again by time, from the
  end of the training part; the model is then refitted on the whole training part with that many
  rounds (the freshest training data matters most when replicas drift);
- the baselines (per-(replica, tool) EWMA; last value) are scored on the same hold-out, with their
  P95 as ``prediction × factor`` where the factor is fitted on the training part only.

The target is ``log1p(latency_ms)``: latency noise is multiplicative, and a quantile of the log is
the log of the quantile, so the P50/P95 meaning is unchanged while trees split on ratios rather
than absolute milliseconds. Predictions are mapped back with ``expm1``; P95 is never below P50.
The P95 model starts from the EWMA baseline's P95 (``log1p(EWMA × factor)`` as XGBoost's base
margin, the factor fitted on the training part) and learns only the corrections
(models/latency/residual.py): on small training sets a tree model otherwise lost to that baseline.
The P50 model's predictions never fall below ``EWMA × f``, ``f`` the training part's 5th
percentile of latency / EWMA: it may correct the baseline down only as far as the data ever went.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb

from only1mcp.models.errors import InsufficientData
from only1mcp.models.latency.features import EWMA_FEATURE, FEATURE_NAMES, LAST_FEATURE
from only1mcp.models.latency.metrics import pinball, quantile_metrics
from only1mcp.models.latency.residual import baseline_margin, margin_of, raw_predict, set_floor, set_margin

__all__ = ["DEFAULT_PARAMS", "QUANTILES", "TrainResult", "train", "quantile_metrics", "pinball",
           "predict_native", "Progress"]

QUANTILES: dict[str, float] = {"p50": 0.5, "p95": 0.95}

#: Modest on purpose: each quantile model stays well under 5 MB in ONNX, and scores 20 rows in µs.
#: Shallow trees with at least 30 calls per leaf: a quantile leaf fitted on a handful of calls
#: chases their noise. On the stored warm-ups of nine loop runs (README, "learned routing"),
#: depth 6 with 5 per leaf was the worst or near worst of 12 settings on every benchmark scenario
#: (P50 MAE vs the EWMA 18.0 → 21.4 % on load-sensitive, -11 → +4 % on a 1,500-call drift warm-up).
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 200,  # upper bound; early stopping usually stops sooner
    "max_depth": 4,
    "learning_rate": 0.1,
    "min_child_weight": 30.0,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "reg_lambda": 1.0,
    "early_stopping_rounds": 20,
    "validation_share": 0.1,  # of the training part, the most recent rows
    # P50 ≥ EWMA × the training part's 5th percentile of latency / EWMA (0 = no floor): trees cannot
    # extrapolate, and a replica far slower than any the training data had enough calls of (a
    # 10x slow one on the exploration floor) was predicted as fast as the others (residual.py)
    "p50_floor_quantile": 0.05,
    "nthread": 2,
    "seed": 0,
}

#: ``progress(stage, done, total)``: stage is "p50", "p95", "p50 refit", "p95 refit".
Progress = Callable[[str, int, int], None]


@dataclass
class TrainResult:
    """Two boosters and everything the registry and the report need to judge them."""

    p50: xgb.Booster
    p95: xgb.Booster
    params: dict[str, Any]
    rounds: dict[str, int]  # boosting rounds kept per quantile (chosen on the validation slice)
    metrics: dict[str, dict[str, float]]  # "model", "ewma", "last_value" → quantile_metrics on the hold-out
    improvement: dict[str, float]  # relative reductions vs the EWMA baseline (0.25 = 25 % lower)
    baseline_p95_factor: dict[str, float]  # fitted on the training part
    rows: dict[str, int]  # "train" (incl. validation), "validation", "holdout"
    split: dict[str, float]  # train_since, holdout_since, holdout_until (unix seconds)
    X_holdout: np.ndarray
    y_holdout: np.ndarray
    ts_holdout: np.ndarray
    pred_holdout: dict[str, np.ndarray]  # "p50"/"p95" native model predictions, ms
    baseline_holdout: dict[str, np.ndarray]  # "ewma"/"last_value" P50 predictions on the hold-out
    feature_importance: dict[str, float]  # total gain per feature (P50 model), normalised to sum 1
    validation: dict[str, float] = field(default_factory=dict)  # pinball on the validation slice
    p50_floor_factor: float | None = None  # P50 ≥ EWMA × this (fitted on the training part)
    target: str = "log1p"
    feature_names: tuple[str, ...] = FEATURE_NAMES


class _ProgressCallback(xgb.callback.TrainingCallback):
    def __init__(self, progress: Progress, stage: str, total: int) -> None:
        super().__init__()
        self.progress, self.stage, self.total = progress, stage, total

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.progress(self.stage, epoch + 1, self.total)
        return False


def _booster_params(params: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    return {"objective": "reg:quantileerror", "quantile_alpha": alpha, "tree_method": "hist",
            "max_depth": params["max_depth"], "eta": params["learning_rate"],
            "min_child_weight": params["min_child_weight"], "subsample": params["subsample"],
            "colsample_bytree": params["colsample_bytree"], "lambda": params["reg_lambda"],
            "nthread": params["nthread"], "seed": params["seed"], "eval_metric": "quantile"}


def predict_native(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """A booster's predictions in milliseconds (the inverse of the log1p target), with the base
    margin it was trained with, if any."""
    return np.maximum(np.expm1(raw_predict(booster, X)), 0.0)


def _ratio_quantile(prediction: np.ndarray, y: np.ndarray, quantile: float) -> float | None:
    """The ``quantile`` of latency / a baseline's prediction over the rows it predicts (> 0);
    None when it predicts none."""
    prediction = np.asarray(prediction, dtype=np.float64)
    warm = prediction > 0
    return float(np.quantile(y[warm] / prediction[warm], quantile)) if warm.any() else None


def _fit(X: np.ndarray, z: np.ndarray, alpha: float, params: Mapping[str, Any], rounds: int,
         progress: Progress | None, stage: str, valid: tuple[np.ndarray, np.ndarray] | None,
         margin: tuple[int, float] | None = None) -> xgb.Booster:
    def matrix(x: np.ndarray, label: np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(x, label=label, base_margin=None if margin is None else baseline_margin(x, *margin))

    callbacks = [_ProgressCallback(progress, stage, rounds)] if progress else []
    kwargs: dict[str, Any] = {}
    if valid is not None:
        kwargs = {"evals": [(matrix(*valid), "validation")],
                  "early_stopping_rounds": params["early_stopping_rounds"], "verbose_eval": False}
    booster = xgb.train(_booster_params(params, alpha), matrix(X, z), num_boost_round=rounds, callbacks=callbacks,
                        **kwargs)
    if margin is not None:
        set_margin(booster, *margin)
    return booster


def train(X: np.ndarray, y: np.ndarray, ts: np.ndarray, holdout_share: float = 0.2,
          progress: Progress | None = None, params: Mapping[str, Any] | None = None) -> TrainResult:
    """Fit P50 and P95 quantile models on the oldest rows, judge them and the baselines on the newest.

    ``X`` has the columns of ``FEATURE_NAMES`` (the baselines' predictions are read from its
    ``rt_latency_ewma_ms`` and ``rt_latency_last_ms`` columns), ``y`` is latency in ms, ``ts`` the
    routing time of each row. Raises :class:`InsufficientData` when a part would be too small.
    """
    p = {**DEFAULT_PARAMS, **(params or {})}
    X, y, ts = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.float64), np.asarray(ts, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES) or len(y) != len(X) or len(ts) != len(X):
        raise ValueError(f"X must be [n, {len(FEATURE_NAMES)}] with y and ts of length n, got {X.shape}, "
                         f"{y.shape}, {ts.shape}")
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), got {holdout_share}")
    order = np.argsort(ts, kind="stable")
    X, y, ts = X[order], y[order], ts[order]
    n = len(y)
    n_hold = math.ceil(n * holdout_share)
    n_train = n - n_hold
    n_valid = math.ceil(n_train * p["validation_share"])
    if n_hold < 20 or n_train - n_valid < 50 or n_valid < 10:
        raise InsufficientData(f"{n} rows are too few to train and judge a latency model")
    Xtr, ytr, Xho, yho = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    ztr = np.log1p(np.maximum(ytr, 0.0))
    fit_part, valid_part = slice(0, n_train - n_valid), slice(n_train - n_valid, n_train)

    # The baselines' P95 factors, fitted on the training part only (the P95 model starts from the EWMA's)
    factors: dict[str, float] = {}
    for name, feature in (("ewma", EWMA_FEATURE), ("last_value", LAST_FEATURE)):
        factors[name] = _ratio_quantile(Xtr[:, FEATURE_NAMES.index(feature)], ytr, 0.95) or 1.0
    ewma_col = FEATURE_NAMES.index(EWMA_FEATURE)
    margins = {"p50": None, "p95": (ewma_col, max(factors["ewma"], 1e-6))}
    floor_quantile = float(p["p50_floor_quantile"])  # 0: no floor; a factor of 0 would floor nothing either
    floor_factor = (_ratio_quantile(Xtr[:, ewma_col], ytr, floor_quantile) if floor_quantile > 0 else None) or None

    boosters: dict[str, xgb.Booster] = {}
    rounds: dict[str, int] = {}
    validation: dict[str, float] = {}
    for name, alpha in QUANTILES.items():
        probe = _fit(Xtr[fit_part], ztr[fit_part], alpha, p, int(p["n_estimators"]), progress, name,
                     (Xtr[valid_part], ztr[valid_part]), margins[name])
        best = int(getattr(probe, "best_iteration", p["n_estimators"] - 1)) + 1
        rounds[name] = max(best, 1)
        valid_x = Xtr[valid_part]
        predicted = probe.predict(xgb.DMatrix(valid_x, base_margin=margin_of(probe, valid_x)),
                                  iteration_range=(0, rounds[name]))
        validation[f"pinball_{int(alpha * 100)}_log"] = float(pinball(ztr[valid_part], predicted, alpha))
        boosters[name] = _fit(Xtr, ztr, alpha, p, rounds[name], progress, f"{name} refit", None, margins[name])
    if floor_factor is not None:
        set_floor(boosters["p50"], ewma_col, floor_factor)

    p50 = predict_native(boosters["p50"], Xho)
    p95 = np.maximum(predict_native(boosters["p95"], Xho), p50)
    metrics = {"model": quantile_metrics(yho, p50, p95)}
    baseline_holdout: dict[str, np.ndarray] = {}
    for name, feature in (("ewma", EWMA_FEATURE), ("last_value", LAST_FEATURE)):
        pred = Xho[:, FEATURE_NAMES.index(feature)].astype(np.float64)
        baseline_holdout[name] = pred
        metrics[name] = quantile_metrics(yho, pred, pred * factors[name])
    improvement = {f"{k}_vs_ewma": (1.0 - metrics["model"][k] / metrics["ewma"][k]) if metrics["ewma"][k] else 0.0
                   for k in ("mae_p50", "pinball_50", "pinball_95")}
    gain = boosters["p50"].get_score(importance_type="total_gain")
    total = sum(gain.values()) or 1.0
    importance = {name: float(gain.get(f"f{i}", 0.0)) / total for i, name in enumerate(FEATURE_NAMES)}
    return TrainResult(
        p50=boosters["p50"], p95=boosters["p95"], params=p, rounds=rounds, metrics=metrics,
        improvement=improvement, baseline_p95_factor=factors,
        rows={"train": n_train, "validation": n_valid, "holdout": n_hold},
        split={"train_since": float(ts[0]), "holdout_since": float(ts[n_train]), "holdout_until": float(ts[-1])},
        X_holdout=Xho, y_holdout=yho, ts_holdout=ts[n_train:], pred_holdout={"p50": p50, "p95": p95},
        baseline_holdout=baseline_holdout, feature_importance=importance, validation=validation,
        p50_floor_factor=floor_factor)
