"""Labelled metric series for ``only1mcp bench anomaly``, generated from a seed.

No installed package ships labelled anomaly series on disk (river's anomaly sets — credit card,
HTTP, SMTP — are downloaded on first use; pyod ships none), and nothing may be downloaded at run
time, so the series are generated here, with their ground truth known by construction.

A series is a level (2–50 noise sigmas above 0, times a scale from 1e-3 to 1e6), noise, a
background, missing values (1 %), sometimes a constant stretch (a source repeating its average for
100 rows, not an anomaly) and sometimes a gap in time, sampled every 1 s to 1 day (or irregularly), with
anomalies injected after the first 300 rows, at least 400 rows apart. The kinds:

- ``spike``: 1–3 rows at 6–12 sigma (either sign); the window is the spike and 2 rows after;
- ``level_shift``: a shift of 4–8 sigma for 80–250 rows, then back; the window is the shift and
  30 rows after its end (the return is a change too);
- ``drift``: a ramp to 6–10 sigma over 150–400 rows, held 100 rows, then back; the window is all of it
  and 30 rows after;
- ``seasonal``: spikes and shifts over a daily (or, for daily samples, weekly) cycle of 2–4 sigma;
- ``noisy``: spikes of 10–16 and shifts of 6–10 sigma in heavy-tailed noise (Student t, 3 d.o.f.).

Ground truth: ``events`` — one (start, end) row window per anomaly; a flag inside a window detects
that anomaly, a run of flags outside every window is one false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["KINDS", "LabelledSeries", "make_series", "make_split", "SPLITS"]

KINDS = ("spike", "level_shift", "drift", "seasonal", "noisy")
_DAY = 86_400.0

# Splits by seed and by shape: thresholds and weights are tuned on "tuning" only; "holdout" has
# other seeds and the same shapes; "shifted" has other seeds and other scales, intervals, lengths.
SPLITS = {
    "tuning": {"seeds": range(0, 1000), "scales": (1.0, 1e3), "intervals": (60.0,), "lengths": (4000,)},
    "holdout": {"seeds": range(1000, 2000), "scales": (1.0, 1e3), "intervals": (60.0,), "lengths": (4000,)},
    "shifted": {"seeds": range(2000, 3000), "scales": (1e-3, 1e6), "intervals": (1.0, 3600.0, _DAY, -60.0),
                "lengths": (2500, 8000)},  # a negative interval: irregular, exponential gaps of that mean
}


@dataclass
class LabelledSeries:
    name: str
    kind: str
    split: str
    seed: int
    t: np.ndarray  # unix seconds, increasing
    x: np.ndarray  # values (NaN = missing)
    events: list[tuple[int, int]] = field(default_factory=list)  # [start, end) rows of each anomaly
    scale: float = 1.0
    interval_s: float = 60.0


def _times(rng: np.random.Generator, n: int, interval: float) -> np.ndarray:
    if interval < 0:
        steps = rng.exponential(-interval, n)
    else:
        steps = np.full(n, interval)
    if rng.random() < 0.5:  # a gap: the source was silent for 50 intervals
        steps[rng.integers(n // 4, 3 * n // 4)] *= 50
    return 1.7e9 + np.cumsum(steps)


def make_series(kind: str, seed: int, *, scale: float = 1.0, interval_s: float = 60.0, n: int = 4000,
                split: str = "") -> LabelledSeries:
    """One labelled series of ``kind`` (see the module docstring), reproducible from ``seed``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    t = _times(rng, n, interval_s)
    heavy = kind == "noisy"
    noise = rng.standard_t(3, n) / np.sqrt(3.0) if heavy else rng.normal(0.0, 1.0, n)
    level = rng.uniform(2.0, 50.0)
    signal = np.full(n, level)
    if kind == "seasonal":
        mean_step = abs(interval_s)
        period = _DAY / mean_step if _DAY / mean_step <= n / 3 else 7 * _DAY / mean_step
        period = float(np.clip(period, 7.0, n / 3))
        signal += rng.uniform(2.0, 4.0) * np.sin(2 * np.pi * (t - t[0]) / (period * mean_step) + rng.uniform(0, 6.3))
    x = signal + noise
    events: list[tuple[int, int]] = []
    pos = 300 + int(rng.integers(0, 200))
    turn = 0
    while pos < n - 450:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        what = kind if kind in ("spike", "level_shift", "drift") else ("spike", "level_shift")[turn % 2]
        turn += 1
        if what == "spike":
            width = int(rng.integers(1, 4))
            x[pos:pos + width] += sign * rng.uniform(*((10.0, 16.0) if heavy else (6.0, 12.0)))
            events.append((pos, pos + width + 2))
            end = pos + width
        elif what == "level_shift":
            width = int(rng.integers(80, 251))
            x[pos:pos + width] += sign * rng.uniform(*((6.0, 10.0) if heavy else (4.0, 8.0)))
            events.append((pos, min(n, pos + width + 30)))
            end = pos + width
        else:  # drift: ramp, hold, back
            ramp, hold = int(rng.integers(150, 401)), 100
            top = sign * rng.uniform(6.0, 10.0)
            x[pos:pos + ramp] += np.linspace(0.0, top, ramp)
            x[pos + ramp:pos + ramp + hold] += top
            events.append((pos, min(n, pos + ramp + hold + 30)))
            end = pos + ramp + hold
        pos = end + 400 + int(rng.integers(0, 300))
    if rng.random() < 0.3:  # a stuck sensor between two anomalies: constant, and not an anomaly
        free = [i for i in range(300, n - 100) if all(i + 100 < a or i > b + 50 for a, b in events)]
        if free:
            start = free[int(rng.integers(0, len(free)))]
            x[start:start + 100] = signal[start]  # repeating its average
    x[rng.random(n) < 0.01] = np.nan
    x = x * scale
    name = f"{kind}-s{seed}-x{scale:g}-dt{interval_s:g}-n{n}"
    return LabelledSeries(name, kind, split, seed, t, x, events, scale, interval_s)


def make_split(split: str, per_kind: int, *, length_factor: float = 1.0, seed_offset: int = 0) -> list[LabelledSeries]:
    """``per_kind`` series of every kind for one split, cycling through the split's shapes
    (``seed_offset`` moves all seeds by 10,000 × offset: other series, splits still disjoint)."""
    spec = SPLITS[split]
    seeds = [seed + 10_000 * seed_offset for seed in spec["seeds"]]
    out = []
    for kind in KINDS:
        for i in range(per_kind):
            scale = spec["scales"][i % len(spec["scales"])]
            interval = spec["intervals"][i % len(spec["intervals"])]
            n = int(spec["lengths"][i % len(spec["lengths"])] * length_factor)
            out.append(make_series(kind, seeds[i], scale=scale, interval_s=interval, n=max(n, 1200), split=split))
    return out
