"""Forecast residuals: how far a value is from what the series itself predicted one row ahead.

SPC and the rolling z-score compare a value with a level; a series with a cycle (a daily load
curve sampled hourly, a weekly one sampled daily) or a slope moves away from any level without
being anomalous, and they either raise false alarms or, tuned looser, miss spikes. This detector
predicts each value from the series' own recent shape and scores the surprise.

Per feature, three one-step predictors learn side by side:

- **level**: an exponentially weighted level (rate ``alpha``);
- **linear**: Holt's level and slope (``alpha``, ``beta``) — a slow cycle or a ramp is locally a line;
- **seasonal**: Holt–Winters' level and per-phase offsets (``alpha``, ``gamma``) with a period found
  in the series: every ``detect_every`` rows the autocorrelation of the last ``history`` values
  (winsorised, so spikes do not create a cycle) is searched for its first strong peak after a dip
  (a cycle, not a slowly decaying drift); on a new period the predictor is rebuilt by replaying
  that history.

Each predictor keeps its mean absolute residual (rate ``scale_rate``); the one with the smallest
predicts, and the score is |residual| / its sigma, 0.5 at ``limit`` (the shared hill curve) — in
heavy-tailed noise stretched by the residuals' own 99th percentile (learned at ``tail_rate`` from
rows it does not flag, never below normal noise's 2.58 sigma), so a series whose ordinary residuals
reach 6 sigma is not flagged at 5. Every
update uses the residual clipped to ``clip`` sigmas, so a spike barely moves a predictor and a level
shift is absorbed over a few dozen rows (flagged meanwhile). Rows are steps: a missing value (NaN)
advances the phase and teaches nothing; a value exactly equal to the previous one (a stuck source
repeating itself) scores 0 and teaches nothing, so a long stuck stretch cannot shrink the scale.

The per-row work is one numba kernel used by ``score_one`` / ``learn_one`` and by
``score_learn_many``: the same code, so the batch path equals the loop exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np

from only1mcp.models.anomaly._kernel import KernelDetector
from only1mcp.models.anomaly._compiled import baseline, hill, median
from only1mcp.models.anomaly._common import Z_CLIP, check_header, pack, unpack
from only1mcp.models.anomaly.base import DetectorStateError

__all__ = ["Forecast"]

_VERSION = 1
# float state columns
_L0, _M0, _L1, _B1, _M1, _L2, _M2, _FLOOR, _LAST, _TAIL, _EW = range(11)
_NF = 11
# int state columns
_NWARM, _READY, _PERIOD, _ROW = range(4)
_NI = 4
_MIN_PERIOD = 3
_MIN_ACF = 0.3  # a cycle must explain this share of the variance (noise alone: ~1/sqrt(history))
_ABS_TO_SIGMA = 1.2533  # mean absolute deviation of a normal sample → its sigma
_NORMAL_TAIL = 2.5758  # the 99th percentile of |z| for normal noise


@numba.njit(cache=True)
def _ordered_history(hist, row):  # pragma: no cover - compiled
    """The ring's values oldest first (NaN where nothing was seen)."""
    h = hist.size
    n = min(row, h)
    out = np.empty(n)
    for k in range(n):
        out[k] = hist[(row - n + k) % h]
    return out


@numba.njit(cache=True)
def _find_period(values, max_period):  # pragma: no cover - compiled
    """The first lag whose autocorrelation peaks after a dip and reaches _MIN_ACF; 0 if none."""
    finite = values[np.isfinite(values)]
    if finite.size < 3 * _MIN_PERIOD + 3:
        return 0
    centre = median(finite)
    spread = 1.4826 * median(np.abs(finite - centre))
    if spread <= 0.0:
        return 0
    n = values.size
    y = np.empty(n)
    for i in range(n):
        v = values[i]
        y[i] = min(max(v, centre - 4.0 * spread), centre + 4.0 * spread) if math.isfinite(v) else math.nan
    mean, count = 0.0, 0
    for i in range(n):
        if math.isfinite(y[i]):
            mean += y[i]
            count += 1
    mean /= count
    var = 0.0
    for i in range(n):
        if math.isfinite(y[i]):
            y[i] -= mean
            var += y[i] * y[i]
    var /= count
    if var <= 0.0:
        return 0
    top = min(max_period, n // 3)
    acf = np.zeros(top + 2)
    for lag in range(1, top + 2):
        s, c = 0.0, 0
        for i in range(n - lag):
            a, b = y[i], y[i + lag]
            if math.isfinite(a) and math.isfinite(b):
                s += a * b
                c += 1
        acf[lag] = s / c / var if c > 0 else 0.0
    lowest = acf[1]
    for lag in range(2, top + 1):
        lowest = min(lowest, acf[lag])
        if (lag >= _MIN_PERIOD and acf[lag] >= _MIN_ACF and acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1]
                and acf[lag] - lowest >= _MIN_ACF):
            return lag
    return 0


@numba.njit(cache=True)
def _seasonal_step(fs, season, f, x, phase, sigma_clip, p):  # pragma: no cover - compiled
    """One Holt–Winters update; the signed residual before it."""
    alpha, gamma, rate = p[0], p[2], p[3]
    e = x - (fs[f, _L2] + season[f, phase])
    c = sigma_clip * _ABS_TO_SIGMA * max(fs[f, _M2], fs[f, _FLOOR])
    ec = min(max(e, -c), c)
    fs[f, _L2] += alpha * ec
    season[f, phase] += gamma * (1.0 - alpha) * ec
    fs[f, _M2] += rate * (min(abs(e), c) - fs[f, _M2])
    return e


@numba.njit(cache=True)
def _rebuild_seasonal(fs, season, hist, ist, f, period, sigma_clip, p):  # pragma: no cover - compiled
    """Holt–Winters for a new period, warmed by replaying the history ring."""
    row = ist[f, _ROW]
    values = _ordered_history(hist[f], row)
    n = values.size
    first = row - n  # the row number of values[0]
    finite = values[np.isfinite(values)]
    centre = median(finite)
    for j in range(season.shape[1]):
        season[f, j] = 0.0
    sums = np.zeros(period)
    counts = np.zeros(period)
    for k in range(n):
        if math.isfinite(values[k]):
            ph = (first + k) % period
            sums[ph] += values[k] - centre
            counts[ph] += 1.0
    for j in range(period):
        season[f, j] = sums[j] / counts[j] if counts[j] > 0 else 0.0
    fs[f, _L2] = centre
    fs[f, _M2] = fs[f, _M1]
    for k in range(n):
        if math.isfinite(values[k]):
            _seasonal_step(fs, season, f, values[k], (first + k) % period, sigma_clip, p)
    ist[f, _PERIOD] = period


@numba.njit(cache=True)
def _kernel(X, fs, ist, warm, hist, season, p, out_score, out_z, out_warm):  # pragma: no cover - compiled
    alpha, beta, rate, limit, sigma_clip = p[0], p[1], p[3], p[4], p[5]
    detect_every, tail_rate, lam = int(p[6]), p[7], p[8]
    sigma_ew = math.sqrt(lam / (2.0 - lam))
    n_warm = warm.shape[1]
    h = hist.shape[1]
    max_period = season.shape[1]
    n, nf = X.shape
    for i in range(n):
        best = 0.0
        any_ready = False
        for f in range(nf):
            x = X[i, f]
            out_z[i, f] = 0.0
            row = ist[f, _ROW]
            ist[f, _ROW] = row + 1
            hist[f, row % h] = x
            if ist[f, _READY] == 1:
                any_ready = True
            if not math.isfinite(x):
                continue
            if ist[f, _READY] == 0:
                warm[f, ist[f, _NWARM]] = x
                ist[f, _NWARM] += 1
                fs[f, _LAST] = x
                if ist[f, _NWARM] == n_warm:
                    level, sigma, floor = baseline(warm[f])
                    mad = sigma / _ABS_TO_SIGMA
                    fs[f, _L0], fs[f, _M0] = level, mad
                    fs[f, _L1], fs[f, _B1], fs[f, _M1] = level, 0.0, mad
                    fs[f, _L2], fs[f, _M2], fs[f, _FLOOR] = level, mad, floor / _ABS_TO_SIGMA
                    fs[f, _TAIL] = _NORMAL_TAIL
                    ist[f, _READY] = 1
                    any_ready = True
                continue
            if x == fs[f, _LAST]:  # a stuck source repeating itself: nothing new
                continue
            fs[f, _LAST] = x
            floor = fs[f, _FLOOR]
            # the three residuals, before any learns
            e0 = x - fs[f, _L0]
            e1 = x - (fs[f, _L1] + fs[f, _B1])
            period = ist[f, _PERIOD]
            m0, m1 = max(fs[f, _M0], floor), max(fs[f, _M1], floor)
            e, m = e0, m0
            if m1 < m:
                e, m = e1, m1
            if period > 0:
                m2 = max(fs[f, _M2], floor)
                if m2 < m:
                    e, m = x - (fs[f, _L2] + season[f, row % period]), m2
            z = min(max(e / (_ABS_TO_SIGMA * m), -Z_CLIP), Z_CLIP)
            # heavy tails: z in units of the residuals' own 99th percentile (never below normal noise's)
            z_eff = z * _NORMAL_TAIL / max(fs[f, _TAIL], _NORMAL_TAIL)
            # a sustained bias (a small level shift the predictors absorb over a few rows) shows in the
            # EWMA of the residuals, z clipped to ±6 so that one spike cannot make it
            ew = lam * min(max(z_eff, -6.0), 6.0) + (1.0 - lam) * fs[f, _EW]
            fs[f, _EW] = ew
            s = max(hill(abs(z_eff), limit), hill(abs(ew) / sigma_ew, limit))
            if s < 0.5:  # the tail is learned from rows it does not flag: an anomaly must not widen it
                fs[f, _TAIL] += tail_rate * ((1.0 if abs(z) > fs[f, _TAIL] else 0.0) - 0.01)
            out_z[i, f] = z
            if s > best:
                best = s
            # learn, each predictor from its own residual clipped to sigma_clip of its own sigmas
            c0 = sigma_clip * _ABS_TO_SIGMA * m0
            fs[f, _L0] += alpha * min(max(e0, -c0), c0)
            fs[f, _M0] += rate * (min(abs(e0), c0) - fs[f, _M0])
            c1 = sigma_clip * _ABS_TO_SIGMA * m1
            e1c = min(max(e1, -c1), c1)
            level = fs[f, _L1] + fs[f, _B1] + alpha * e1c
            fs[f, _B1] += alpha * beta * e1c
            fs[f, _L1] = level
            fs[f, _M1] += rate * (min(abs(e1), c1) - fs[f, _M1])
            if period > 0:
                _seasonal_step(fs, season, f, x, row % period, sigma_clip, p)
        for f in range(nf):
            if ist[f, _READY] == 1 and ist[f, _ROW] % detect_every == 0:
                found = _find_period(_ordered_history(hist[f], ist[f, _ROW]), max_period)
                if found != ist[f, _PERIOD]:
                    if found > 0:
                        _rebuild_seasonal(fs, season, hist, ist, f, found, sigma_clip, p)
                    else:
                        ist[f, _PERIOD] = 0
        out_score[i] = best
        out_warm[i] = not any_ready


class Forecast(KernelDetector):
    """One-step forecast residuals per feature (level, linear, seasonal: the best predictor speaks);
    the score is the worst feature's, ``Score.features`` the residual z of every feature."""

    def __init__(self, features: Sequence[str], *, warmup: int = 30, alpha: float = 0.07, beta: float = 0.1,
                 gamma: float = 0.2, scale_rate: float = 0.02, limit: float = 5.0, clip: float = 3.0,
                 history: int = 512, max_period: int = 170, detect_every: int = 128, tail_rate: float = 0.1,
                 ewma_lambda: float = 0.3, name: str = "forecast") -> None:
        if not features:
            raise ValueError("Forecast needs at least one feature")
        if warmup < 5 or history < 3 * _MIN_PERIOD + 3 or not _MIN_PERIOD <= max_period or detect_every < 1:
            raise ValueError("warmup must be >= 5, history >= 12, max_period >= 3 and detect_every >= 1")
        for what, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("scale_rate", scale_rate),
                            ("tail_rate", tail_rate), ("ewma_lambda", ewma_lambda)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{what} must be in (0, 1), not {value!r}")
        if not (math.isfinite(limit) and limit > 0 and math.isfinite(clip) and clip > 0):
            raise ValueError("limit and clip must be positive numbers")
        self.name = name
        self.features = tuple(features)
        self.warmup, self.history, self.max_period = int(warmup), int(history), int(max_period)
        self._params = np.array([alpha, beta, gamma, scale_rate, limit, clip, detect_every, tail_rate,
                                 ewma_lambda], dtype=float)
        self._reset()

    def _reset(self) -> None:
        nf = len(self.features)
        self._fs = np.zeros((nf, _NF))
        self._ist = np.zeros((nf, _NI), dtype=np.int64)
        self._warm = np.zeros((nf, self.warmup))
        self._hist = np.full((nf, self.history), math.nan)
        self._season = np.zeros((nf, self.max_period))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self._fs, self._ist, self._warm, self._hist, self._season

    def _kernel_call(self, X: np.ndarray, arrays: tuple[np.ndarray, ...], score: np.ndarray, z: np.ndarray,
                     warming: np.ndarray) -> None:
        _kernel(X, *arrays, self._params, score, z, warming)

    @property
    def periods(self) -> dict[str, int]:
        """The cycle length (rows) found per feature; 0 where none."""
        return {f: int(p) for f, p in zip(self.features, self._ist[:, _PERIOD])}

    def state(self) -> dict[str, Any]:
        return {"detector": "forecast", "version": _VERSION, "name": self.name, "features": list(self.features),
                "params": pack(self._params), "warmup": self.warmup, "history": self.history,
                "max_period": self.max_period, "fs": pack(self._fs), "ist": self._ist.tolist(),
                "warm": pack(self._warm), "hist": pack(self._hist), "season": pack(self._season)}

    def restore(self, state: Mapping[str, Any]) -> None:
        check_header(state, "forecast", _VERSION, self.features)
        if (state.get("warmup"), state.get("history"), state.get("max_period")) != (
                self.warmup, self.history, self.max_period):
            raise DetectorStateError("state saved with another warmup / history / max_period")
        nf = len(self.features)
        params = unpack(state.get("params"), self._params.shape, "params")
        fs = unpack(state.get("fs"), (nf, _NF), "fs")
        ist = unpack(state.get("ist"), (nf, _NI), "ist", dtype=np.int64)
        warm = unpack(state.get("warm"), (nf, self.warmup), "warm")
        hist = unpack(state.get("hist"), (nf, self.history), "hist")
        season = unpack(state.get("season"), (nf, self.max_period), "season")
        ready = ist[:, _READY] == 1
        if (not np.isfinite(fs[ready]).all() or (ist < 0).any() or (ist[:, _NWARM] > self.warmup).any()
                or (ist[:, _PERIOD] > self.max_period).any() or not np.isin(ist[:, _READY], (0, 1)).all()
                or not np.isfinite(params).all() or not np.isfinite(season).all()):
            raise DetectorStateError("state counters or values out of range")
        self._params, self._fs, self._ist, self._warm, self._hist, self._season = params, fs, ist, warm, hist, season
