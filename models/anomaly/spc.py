"""Statistical process control per feature: Shewhart with Western Electric run rules, EWMA, CUSUM.

Each feature gets a robust baseline from its first ``warmup`` finite values (median, MAD → sigma,
floored by ``scale_floor`` so a constant stretch gives a finite z), and every value becomes a
robust z = (x − level) / sigma. The three charts read z:

- Shewhart: |z| against ``shewhart_z`` (0.5 there), plus the Western Electric rules (2 of 3
  beyond 2, 4 of 5 beyond 1, 8 in a row on one side) as fixed supporting scores below 0.5 (alone
  they fire too often on noise; the ensemble's threshold decides what they are worth);
- EWMA of z (λ = ``ewma_lambda``) against ``ewma_l`` of its own standard deviation;
- two-sided CUSUM (slack ``cusum_k``, decision ``cusum_h``), capped at 2h so it forgets quickly.

EWMA and CUSUM read z clipped to ±6: one huge spike must not keep them high for thousands of rows.

**Adapting.** The baseline follows the data slowly (EW level and mean absolute deviation, rate
``adapt``) but only learns from points it does not flag, so an anomaly does not teach itself
normal. A flagged run of ``accept_after`` consecutive points is a new normal: the baseline is
re-estimated from those points and the charts restart. So a level shift is flagged for
``accept_after`` rows and then accepted; a spike or a short excursion never moves the baseline.
The last settled normal (one that lasted 2 × ``accept_after`` rows) is remembered: a value back at it (within 2 of its sigma
while over 2.5 sigma from the current one) switches back at once, without an alarm — a replica that
recovers is not an anomaly. Sigma adapts only within [1/2, 2] × its last estimate, so a stuck
(constant) stretch cannot shrink it to nothing; ``min_scale`` (per feature, in its unit) is a floor
the caller knows and the data may not show (the step of a rate over a few calls).

The per-row work is one numba kernel used by ``score_one`` / ``learn_one`` (one row) and by
``score_learn_many`` (a whole array): the same code, so the batch path equals the loop exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np

from only1mcp.models.anomaly._kernel import KernelDetector
from only1mcp.models.anomaly._compiled import baseline, hill
from only1mcp.models.anomaly._common import Z_CLIP, check_header, pack, unpack
from only1mcp.models.anomaly.base import DetectorStateError

__all__ = ["SPC"]

_VERSION = 1
# float state columns, int state columns
_MU, _SIGMA, _MADEW, _FLOOR, _EWMA, _CPOS, _CNEG, _BASE_SIGMA, _PREV_MU, _PREV_SIGMA, _PREV_FLOOR = range(11)
_NF = 11
_NWARM, _READY, _RUN, _RINGN, _AGE = range(5)
_NI = 5
_RING = 8


@numba.njit(cache=True)
def _kernel(X, fs, ist, warm, cand, ring, p, min_sigma, out_score, out_z, out_warm):  # pragma: no cover - compiled
    adapt, lam, ewma_l, cusum_k, cusum_h, shew_z, r2, r3, r4 = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
    sigma_e = math.sqrt(lam / (2.0 - lam))
    n_warm = warm.shape[1]
    accept = cand.shape[1]
    n, nf = X.shape
    for i in range(n):
        best = 0.0
        any_ready = False
        for f in range(nf):
            x = X[i, f]
            out_z[i, f] = 0.0
            if not math.isfinite(x):
                if ist[f, _READY] == 1:
                    any_ready = True
                continue
            if ist[f, _READY] == 0:
                warm[f, ist[f, _NWARM]] = x
                ist[f, _NWARM] += 1
                if ist[f, _NWARM] == n_warm:
                    level, sigma, floor = baseline(warm[f])
                    fs[f, _MU], fs[f, _SIGMA], fs[f, _FLOOR], fs[f, _BASE_SIGMA] = level, sigma, floor, sigma
                    fs[f, _MADEW] = sigma / 1.2533
                    fs[f, _PREV_SIGMA] = 0.0  # no previous normal yet
                    ist[f, _READY] = 1
                continue
            any_ready = True
            ist[f, _AGE] = min(ist[f, _AGE] + 1, 1 << 40)
            if (fs[f, _PREV_SIGMA] > 0.0 and abs(x - fs[f, _MU]) > 2.5 * fs[f, _SIGMA]
                    and abs(x - fs[f, _PREV_MU]) < 2.0 * fs[f, _PREV_SIGMA]):
                # back at the normal before the last accepted shift: that normal again, no alarm
                fs[f, _MU], fs[f, _SIGMA], fs[f, _FLOOR] = fs[f, _PREV_MU], fs[f, _PREV_SIGMA], fs[f, _PREV_FLOOR]
                fs[f, _PREV_SIGMA] = 0.0  # the abandoned level is not a normal to return to
                ist[f, _AGE] = 2 * accept  # the restored normal is a settled one
                fs[f, _BASE_SIGMA] = fs[f, _SIGMA]
                fs[f, _MADEW] = fs[f, _SIGMA] / 1.2533
                fs[f, _EWMA], fs[f, _CPOS], fs[f, _CNEG] = 0.0, 0.0, 0.0
                ist[f, _RUN], ist[f, _RINGN] = 0, 0
            d = x - fs[f, _MU]
            z = min(max(d / max(fs[f, _SIGMA], min_sigma[f]), -Z_CLIP), Z_CLIP)
            zc = min(max(z, -6.0), 6.0)
            e = lam * zc + (1.0 - lam) * fs[f, _EWMA]
            cpos = min(max(0.0, fs[f, _CPOS] + zc - cusum_k), 2.0 * cusum_h)
            cneg = min(max(0.0, fs[f, _CNEG] - zc - cusum_k), 2.0 * cusum_h)
            # run rules over the last 8 clipped z, the current one first
            for j in range(_RING - 1, 0, -1):
                ring[f, j] = ring[f, j - 1]
            ring[f, 0] = zc
            count = min(ist[f, _RINGN] + 1, _RING)
            ist[f, _RINGN] = count
            rule = 0.0
            side = 1.0 if zc > 0 else -1.0
            if count >= 2:
                k2 = 0
                for j in range(min(count, 3)):
                    if ring[f, j] * side > 2.0:
                        k2 += 1
                if k2 >= 2 and zc * side > 2.0:
                    rule = max(rule, r2)
            if count >= 4:
                k3 = 0
                for j in range(min(count, 5)):
                    if ring[f, j] * side > 1.0:
                        k3 += 1
                if k3 >= 4 and zc * side > 1.0:
                    rule = max(rule, r3)
            if count >= 8:
                k4 = 0
                for j in range(8):
                    if ring[f, j] * side > 0.0:
                        k4 += 1
                if k4 == 8:
                    rule = max(rule, r4)
            s = max(hill(abs(z), shew_z), hill(abs(e) / sigma_e, ewma_l), hill(max(cpos, cneg), cusum_h), rule)
            fs[f, _EWMA], fs[f, _CPOS], fs[f, _CNEG] = e, cpos, cneg
            out_z[i, f] = z
            if s > best:
                best = s
            if s < 0.5:  # learn only from points not flagged
                fs[f, _MU] += adapt * d
                fs[f, _MADEW] += adapt * (abs(d) - fs[f, _MADEW])
                # sigma follows the data within [1/2, 2] × its last estimate: a quiet or stuck stretch
                # must not shrink it to nothing (then the first ordinary value would alarm)
                base = fs[f, _BASE_SIGMA]
                fs[f, _SIGMA] = max(min(max(1.2533 * fs[f, _MADEW], 0.5 * base), 2.0 * base), fs[f, _FLOOR])
                ist[f, _RUN] = 0
            else:
                cand[f, ist[f, _RUN]] = x
                ist[f, _RUN] += 1
                if ist[f, _RUN] == accept:  # persisted: the new normal (the old one is kept as previous)
                    level, sigma, floor = baseline(cand[f])
                    if ist[f, _AGE] >= 2 * accept or fs[f, _PREV_SIGMA] == 0.0:  # a settled normal, not a passing one
                        fs[f, _PREV_MU], fs[f, _PREV_SIGMA], fs[f, _PREV_FLOOR] = fs[f, _MU], fs[f, _SIGMA], fs[f, _FLOOR]
                    ist[f, _AGE] = 0
                    fs[f, _MU], fs[f, _SIGMA], fs[f, _FLOOR], fs[f, _BASE_SIGMA] = level, sigma, floor, sigma
                    fs[f, _MADEW] = sigma / 1.2533
                    fs[f, _EWMA], fs[f, _CPOS], fs[f, _CNEG] = 0.0, 0.0, 0.0
                    ist[f, _RUN], ist[f, _RINGN] = 0, 0
        out_score[i] = best
        out_warm[i] = not any_ready


class SPC(KernelDetector):
    """EWMA + CUSUM + Shewhart/Western Electric per feature; the score is the worst chart of the
    worst feature, ``Score.features`` the robust z of every feature."""

    def __init__(self, features: Sequence[str], *, warmup: int = 30, accept_after: int = 60, adapt: float = 0.02,
                 ewma_lambda: float = 0.2, ewma_l: float = 3.5, cusum_k: float = 0.5, cusum_h: float = 6.0,
                 shewhart_z: float = 4.0, rule_scores: tuple[float, float, float] = (0.4, 0.35, 0.3),
                 min_scale: Mapping[str, float] | None = None, name: str = "spc") -> None:
        if not features:
            raise ValueError("SPC needs at least one feature")
        if warmup < 5 or accept_after < 3:
            raise ValueError("warmup must be >= 5 and accept_after >= 3")
        if not 0.0 < adapt < 1.0 or not 0.0 < ewma_lambda <= 1.0:
            raise ValueError("adapt must be in (0, 1) and ewma_lambda in (0, 1]")
        self.name = name
        self.features = tuple(features)
        self.warmup, self.accept_after = int(warmup), int(accept_after)
        self._params = np.array([adapt, ewma_lambda, ewma_l, cusum_k, cusum_h, shewhart_z, *rule_scores], dtype=float)
        unknown = set(min_scale or {}) - set(self.features)
        if unknown or any(not (math.isfinite(v) and v >= 0) for v in (min_scale or {}).values()):
            raise ValueError(f"min_scale: finite values >= 0 for known features, got {dict(min_scale or {})!r}")
        # What the caller knows and the data cannot show: e.g. an error rate over ~20 calls moves in steps of
        # 0.05, so a baseline of zeros must not make one failed call a million-sigma event.
        self._min_sigma = np.array([float((min_scale or {}).get(f, 0.0)) for f in self.features])
        self._reset()

    def _reset(self) -> None:
        nf = len(self.features)
        self._fs = np.zeros((nf, _NF))
        self._ist = np.zeros((nf, _NI), dtype=np.int64)
        self._warm = np.zeros((nf, self.warmup))
        self._cand = np.zeros((nf, self.accept_after))
        self._ring = np.zeros((nf, _RING))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self._fs, self._ist, self._warm, self._cand, self._ring

    def _kernel_call(self, X: np.ndarray, arrays: tuple[np.ndarray, ...], score: np.ndarray, z: np.ndarray,
                     warming: np.ndarray) -> None:
        _kernel(X, *arrays, self._params, self._min_sigma, score, z, warming)

    def state(self) -> dict[str, Any]:
        return {"detector": "spc", "version": _VERSION, "name": self.name, "features": list(self.features),
                "params": pack(self._params), "warmup": self.warmup, "accept_after": self.accept_after,
                "fs": pack(self._fs), "ist": self._ist.tolist(), "warm": pack(self._warm),
                "cand": pack(self._cand), "ring": pack(self._ring)}

    def restore(self, state: Mapping[str, Any]) -> None:
        check_header(state, "spc", _VERSION, self.features)
        if state.get("warmup") != self.warmup or state.get("accept_after") != self.accept_after:
            raise DetectorStateError("state saved with another warmup / accept_after")
        nf = len(self.features)
        params = unpack(state.get("params"), self._params.shape, "params")
        fs = unpack(state.get("fs"), (nf, _NF), "fs")
        ist = unpack(state.get("ist"), (nf, _NI), "ist", dtype=np.int64)
        warm = unpack(state.get("warm"), (nf, self.warmup), "warm")
        cand = unpack(state.get("cand"), (nf, self.accept_after), "cand")
        ring = unpack(state.get("ring"), (nf, _RING), "ring")
        if (not np.isfinite(fs).all() or (ist < 0).any() or (ist[:, _NWARM] > self.warmup).any() or (ist[:, _RUN] >= self.accept_after).any()
                or (ist[:, _RINGN] > _RING).any() or not np.isin(ist[:, _READY], (0, 1)).all()):
            raise DetectorStateError("state counters out of range")
        self._params, self._fs, self._ist, self._warm, self._cand, self._ring = params, fs, ist, warm, cand, ring
