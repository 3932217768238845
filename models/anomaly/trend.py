"""Sustained degradation before a limit is crossed: a robust slope over a sliding window.

Over the last ``window`` rows (the current one included) of each watched feature:

- slope: the median of (x[j+h] − x[j]) / h for j < h = window/2 — Theil–Sen restricted to pairs
  half a window apart, so each point is in one pair: a spike moves one pair of h and the median
  ignores it (a spike that recovers never makes a trend);
- noise: sigma from the MAD of first differences (/√2), which a straight line does not inflate;
- rise = slope × (window − 1), in noise units; 0.5 at ``rise_z``;
- linearity gate: the median absolute residual around the robust line, in noise units; a step
  (a level shift, the SPC's business) leaves large residuals and is damped.

Slopes are per row, so irregular sampling does not create trends; seconds only enter through the
time to failure: rows until the extrapolated line crosses the feature's failure limit, times the
window's mean interval. Limits: ``limits[feature]`` if given; error-like features 1.0; latency-like
features ``timeout`` if given, else ``latency_factor`` × the level of its first ``window`` values.
Error and latency features are watched upward; success-like and traffic features downward; others
(any CSV column) both ways. NaN is carried forward (the last finite value).

``score_learn_many`` evaluates all windows of a batch at once (numpy strided views), with the same
function that scores one row, so it equals the loop exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from only1mcp.models.anomaly._common import (
    MAD_TO_SIGMA, Z_CLIP, check_header, feature_role, hill, pack, robust_baseline, unpack, vector_of,
)
from only1mcp.models.anomaly.base import DetectorStateError, Observation, Score

__all__ = ["Trend"]

_VERSION = 1
_DIRECTION = {"errors": 1.0, "latency": 1.0, "success": -1.0, "traffic": -1.0, "": 0.0}


def _median(a: np.ndarray) -> np.ndarray:
    """Median over the last axis by sorting: on short rows several times faster than np.median."""
    s = np.sort(a, axis=-1)
    m = s.shape[-1]
    return s[..., m // 2] if m % 2 else 0.5 * (s[..., m // 2 - 1] + s[..., m // 2])


class Trend:
    """Robust slope per feature over a sliding window; score 0.5 when the rise is ``rise_z`` noise
    sigmas; ``time_to_failure_s`` from the worst feature with a limit."""

    def __init__(self, features: Sequence[str], *, window: int = 48, rise_z: float = 6.0, linearity: float = 2.0,
                 limits: Mapping[str, float] | None = None, timeout: float | None = None,
                 latency_factor: float = 3.0, name: str = "trend") -> None:
        if not features:
            raise ValueError("Trend needs at least one feature")
        if window < 8:
            raise ValueError("window must be >= 8")
        self.name = name
        self.features = tuple(features)
        self.window, self.rise_z, self.linearity = int(window), float(rise_z), float(linearity)
        roles = [feature_role(f) for f in self.features]
        self._direction = np.array([_DIRECTION[r] for r in roles])
        limits = dict(limits or {})
        self._fixed_limit = np.array([
            limits.get(f, 1.0 if r == "errors" else timeout if r == "latency" and timeout else math.nan)
            for f, r in zip(self.features, roles)], dtype=float)
        self._latency = np.array([r == "latency" and f not in limits and not timeout for f, r in zip(self.features, roles)])
        self.latency_factor = float(latency_factor)
        nf = len(self.features)
        self._hist = np.full((self.window - 1, nf), math.nan)  # last rows, carried forward, oldest first
        self._hist_t = np.full(self.window - 1, math.nan)
        self._last = np.full(nf, math.nan)
        self._floor = np.full(nf, math.nan)  # noise floor and limit, set once a full window was seen
        self._limit = self._fixed_limit.copy()
        self._seen = 0

    # -- the one computation, over k windows at once ------------------------------------------------
    def _evaluate(self, V: np.ndarray, T: np.ndarray, floor: np.ndarray, limit: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """V: (k, F, window) values, T: (k, window) times → (score (k,), signed rise z (k, F), ttf s (k,))."""
        w, h = self.window, self.window // 2
        slope = _median(V[..., h:2 * h] - V[..., :h]) / h
        diffs = np.diff(V, axis=-1)
        noise = MAD_TO_SIGMA * _median(np.abs(diffs - _median(diffs)[..., None])) / math.sqrt(2.0)
        noise = np.maximum(noise, floor)
        rise = np.clip(slope * (w - 1) / noise, -Z_CLIP, Z_CLIP)
        rise = np.where(np.isfinite(rise), rise, 0.0)
        directed = np.where(self._direction == 0.0, np.abs(rise), rise * self._direction)
        raw = hill(directed, self.rise_z)
        score = np.zeros(rise.shape)
        idx = np.arange(w, dtype=float)
        candidates = raw > 0.05  # residuals only where it matters (the costly part)
        ttf = np.full(V.shape[0], math.nan)
        if candidates.any():
            sub = V[candidates]
            s = slope[candidates][:, None]
            intercept = _median(sub - s * idx)
            resid = _median(np.abs(sub - intercept[:, None] - s * idx)) / noise[candidates]
            with np.errstate(over="ignore"):  # a huge residual: the power is inf and the score 0, as meant
                score[candidates] = raw[candidates] / (1.0 + (resid / self.linearity) ** 6)
            # time to failure: rows until the fitted line reaches the limit, × mean interval
            lim = np.broadcast_to(limit, candidates.shape)[candidates]
            now = intercept + s[:, 0] * (w - 1)
            rows = np.where(now >= lim, 0.0, (lim - now) / np.where(s[:, 0] > 0, s[:, 0], math.nan))
            span = T[:, -1:] - T[:, :1]
            per_row = np.broadcast_to(span / (w - 1), candidates.shape)[candidates]
            est = np.full(candidates.shape, math.nan)
            est[candidates] = np.where(score[candidates] >= 0.5, rows * per_row, math.nan)
            with np.errstate(all="ignore"):
                ttf = np.where(np.isnan(est).all(axis=1), math.nan, np.nanmin(np.where(np.isnan(est), np.inf, est), axis=1))
        worst = score.max(axis=1) if score.shape[1] else np.zeros(V.shape[0])
        return worst, rise, ttf

    def _advance(self, X: np.ndarray, t: np.ndarray, commit: bool, evaluate: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n, nf, w = X.shape[0], len(self.features), self.window
        filled = np.vstack([self._last[None, :], X])  # carry the last finite value forward, vectorised
        valid = np.isfinite(filled)
        pos = np.where(valid, np.arange(n + 1)[:, None], 0)
        np.maximum.accumulate(pos, axis=0, out=pos)
        filled = filled[pos, np.arange(nf)][1:]
        rows = np.vstack([self._hist, filled])
        times = np.concatenate([self._hist_t, np.asarray(t, dtype=float)])
        seen = self._seen + np.arange(1, n + 1)
        floor, limit = self._floor.copy(), self._limit.copy()
        score, rise, ttf = np.zeros(n), np.zeros((n, nf)), np.full(n, math.nan)
        first_full = w - self._seen - 1  # index in this batch of the first complete window
        if np.isnan(floor).all() and 0 <= first_full < n:
            floor, limit = self._baselines(rows[first_full:first_full + w])
        ready = seen >= w
        if evaluate and ready.any():  # learn_one only moves the window on
            first_ready = int(np.argmax(ready))  # rows[first_ready:] feed every window evaluated here
            V = sliding_window_view(rows, w, axis=0)[ready]  # (k, F, w)
            T = sliding_window_view(times, w)[ready]
            if np.isfinite(rows[first_ready:]).all():
                ok = np.ones(V.shape[:2], dtype=bool)
            else:  # a feature never seen yet in a window: it says nothing there
                ok = np.isfinite(V).all(axis=2)
                V = np.where(np.isfinite(V), V, 0.0)
            s_, r_, ttf_ = self._evaluate(V, T, floor, limit)
            score[ready] = np.where(ok.any(axis=1), s_, 0.0)
            rise[ready] = np.where(ok, r_, 0.0)
            ttf[ready] = ttf_
        if commit:
            self._hist, self._hist_t = rows[-(w - 1):], times[-(w - 1):]
            self._last, self._seen = filled[-1], int(seen[-1])
            self._floor, self._limit = floor, limit
        return score, rise, ttf, ~ready

    def _baselines(self, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        floor, limit = np.empty(len(self.features)), self._fixed_limit.copy()
        for f in range(len(self.features)):
            level, _, floor[f] = robust_baseline(first[:, f])
            if self._latency[f] and level > 0:
                limit[f] = self.latency_factor * level
        return floor, limit

    # -- the Detector interface -----------------------------------------------------------------------
    def score_one(self, x: Observation, t: float) -> Score:
        score, rise, ttf, warming = self._advance(vector_of(x, self.features)[None, :], np.array([t]), commit=False)
        ttf_s = None if math.isnan(ttf[0]) else float(ttf[0])
        return Score(float(score[0]), dict(zip(self.features, map(float, rise[0]))), ttf_s, bool(warming[0]))

    def learn_one(self, x: Observation, t: float) -> None:
        self._advance(vector_of(x, self.features)[None, :], np.array([t]), commit=True, evaluate=False)

    def score_learn_many(self, X: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self._advance(np.asarray(X, dtype=float).reshape(-1, len(self.features)), t, commit=True)[0]

    def score_learn_many_full(self, X: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, signed rise z per feature, time to failure s or NaN) of every row."""
        return self._advance(np.asarray(X, dtype=float).reshape(-1, len(self.features)), t, commit=True)[:3]

    def state(self) -> dict[str, Any]:
        return {"detector": "trend", "version": _VERSION, "name": self.name, "features": list(self.features),
                "window": self.window, "seen": self._seen, "hist": pack(self._hist), "hist_t": pack(self._hist_t),
                "last": pack(self._last), "floor": pack(self._floor), "limit": pack(self._limit)}

    def restore(self, state: Mapping[str, Any]) -> None:
        check_header(state, "trend", _VERSION, self.features)
        nf, w = len(self.features), self.window
        if state.get("window") != w:
            raise DetectorStateError(f"state for window {state.get('window')!r}, not {w}")
        seen = state.get("seen")
        if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
            raise DetectorStateError(f"state field 'seen' is {seen!r}")
        hist, hist_t = unpack(state.get("hist"), (w - 1, nf), "hist"), unpack(state.get("hist_t"), (w - 1,), "hist_t")
        last, floor = unpack(state.get("last"), (nf,), "last"), unpack(state.get("floor"), (nf,), "floor")
        limit = unpack(state.get("limit"), (nf,), "limit")
        self._hist, self._hist_t, self._last, self._floor, self._limit, self._seen = hist, hist_t, last, floor, limit, seen
