"""Offline anomaly scoring of any metric series: rows in order, each scored from earlier rows only.

Any sampling interval (seconds to days, irregular), any scale and unit, gaps, constant stretches,
NaN and level shifts: the detectors are scale-free and per-row (time only enters the trend's
time to failure), so the same defaults serve a latency series in ms and a daily revenue series.
Scoring is streaming and causal — the ensemble's batch path (``score_learn_many``), which equals
scoring then learning row by row — so a row's score never depends on a later row, and a long file
is processed in chunks of bounded memory.

The offline ensemble is the forecast residuals (level, Holt, Holt–Winters with the series' own period)
and the rolling z-score, as tuned by ``only1mcp bench anomaly``; river's Half-Space Trees are never in
it: they learn row by row in Python (about 10 k rows/s alone), so with them the ensemble cannot score
50 k rows/s. Scores are calibrated so 0.5 is the tuned flagging point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from only1mcp.models.anomaly.ensemble import Ensemble, default_ensemble

__all__ = ["SeriesScores", "score_series", "offline_ensemble", "OFFLINE_OPTIONS"]

# Chosen on the tuning split of ``only1mcp bench anomaly`` (HST not allowed: see above; the objective:
# beat the tuned rolling z-score on every kind, then the mean F1). The forecast residuals and the
# rolling z-score, half each: SPC, the isolation forest and the trend came out at weight 0 here (they
# stay in the worker's set), so they are not even built. iforest: fewer refits than the worker's
# default when someone weights it (on long files the refit dominates the cost).
OFFLINE_OPTIONS: dict[str, Any] = {
    "online": False,
    "zscore": True,
    "forecast": True,
    "weights": {"spc": 0.0, "iforest": 0.0, "hst": 0.0, "trend": 0.0, "zscore": 0.5, "forecast": 0.5},
    "combine": "noisy_or",
    "flag_at": 0.45,
    "iforest": {"window": 1024, "first_fit": 256, "refit_every": 16384},
}
_CHUNK = 65_536


@dataclass(frozen=True)
class SeriesScores:
    score: np.ndarray  # [0, 1] per row
    is_anomaly: np.ndarray  # bool per row: score >= threshold
    threshold: float


def offline_ensemble(columns: Sequence[str], **options: Any) -> Ensemble:
    """``default_ensemble`` with the offline defaults, overridable by ``options``."""
    merged = {**OFFLINE_OPTIONS, **options}
    return default_ensemble(list(columns), **merged).weighted_only()


def score_series(times: Sequence[float] | np.ndarray, values: np.ndarray, columns: Sequence[str] | None = None, *,
                 threshold: float | None = None, ensemble: Ensemble | None = None, **options: Any) -> SeriesScores:
    """Score every row of ``values`` ((n,) or (n, k); NaN = missing) taken at ``times`` (unix seconds).

    ``columns`` names the k columns (their names decide which the trend watches and which way);
    ``threshold`` defaults to the ensemble's lowest severity threshold; ``options`` go to
    :func:`offline_ensemble` (or pass a ready ``ensemble``).
    """
    X = np.asarray(values, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"values must be 1- or 2-dimensional, not {X.ndim}-dimensional")
    t = np.asarray(times, dtype=float).reshape(-1)
    if len(t) != len(X):
        raise ValueError(f"{len(t)} times for {len(X)} rows")
    columns = list(columns) if columns is not None else [f"value_{i}" if X.shape[1] > 1 else "value"
                                                         for i in range(X.shape[1])]
    if len(columns) != X.shape[1]:
        raise ValueError(f"{len(columns)} column names for {X.shape[1]} columns")
    ensemble = ensemble or offline_ensemble(columns, **options)
    if list(ensemble.features) != columns:
        X = X[:, [columns.index(f) for f in ensemble.features]]
    score = np.empty(len(X))
    for start in range(0, len(X), _CHUNK):
        stop = start + _CHUNK
        score[start:stop] = ensemble.score_learn_many(X[start:stop], t[start:stop])
    limit = ensemble.thresholds[0] if threshold is None else float(threshold)
    return SeriesScores(score, score >= limit, limit)
