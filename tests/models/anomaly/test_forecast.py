"""The forecast-residual detector on series built to show each of its parts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from only1mcp.models.anomaly import DetectorStateError
from only1mcp.models.anomaly.forecast import Forecast
from only1mcp.models.anomaly.spc import SPC


def cycle(n: int, period: int, amplitude: float = 4.0, seed: int = 0, level: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return level + amplitude * np.sin(2 * np.pi * i / period) + rng.normal(0.0, 1.0, n)


def scores(detector: Forecast | SPC, x: np.ndarray) -> np.ndarray:
    return detector.score_learn_many(x[:, None], np.arange(len(x), dtype=float))


def test_finds_the_cycle_and_does_not_flag_it_where_spc_does() -> None:
    x = cycle(3000, 24)
    forecast = Forecast(["v"])
    mine = scores(forecast, x)
    assert forecast.periods == {"v": 24}
    assert (mine[600:] >= 0.5).sum() <= 3  # noise beyond 5 sigma, at most
    assert (scores(SPC(["v"]), x)[600:] >= 0.5).sum() > 3  # a level chart calls the cycle an anomaly


def test_a_spike_inside_the_cycle_is_flagged_and_barely_moves_the_forecast() -> None:
    x = cycle(2000, 24, seed=1)
    x[1500] += 8.0  # 8 sigma, but within the cycle's range of ±4 plus noise: a level chart cannot tell
    got = scores(Forecast(["v"]), x)
    assert got[1500] >= 0.5
    assert (got[1501:1600] >= 0.5).sum() == 0
    assert scores(SPC(["v"]), x)[1500] < 0.5


def test_a_level_shift_is_flagged_then_absorbed() -> None:
    rng = np.random.default_rng(2)
    x = 50.0 + rng.normal(0.0, 1.0, 2000)
    x[1000:] += 10.0
    got = scores(Forecast(["v"]), x)
    assert got[1000] >= 0.5
    assert (got[1200:] >= 0.5).sum() <= 2


def test_a_slow_ramp_is_predicted_not_flagged() -> None:
    rng = np.random.default_rng(3)
    x = 10.0 + 0.05 * np.arange(3000) + rng.normal(0.0, 1.0, 3000)  # 150 sigma over the series
    assert (scores(Forecast(["v"]), x)[100:] >= 0.5).sum() <= 3


def test_stuck_values_teach_nothing_and_the_series_resumes_without_alarm() -> None:
    x = cycle(2000, 24, seed=4)
    x[1000:1300] = x[999]  # a source repeating its last value for 300 rows
    got = scores(Forecast(["v"]), x)
    assert (got[1000:1300] == 0.0).all()
    assert (got[1300:] >= 0.5).sum() <= 2


def test_nan_and_scale_free() -> None:
    x = cycle(2500, 12, seed=5)
    x[::17] = math.nan
    small, huge = scores(Forecast(["v"]), x * 1e-6), scores(Forecast(["v"]), x * 1e9)
    assert np.allclose(small, huge, atol=1e-6)
    assert (small[np.isnan(x)] == 0.0).all()


def test_constant_series_then_a_change_is_far() -> None:
    x = np.full(300, 7.0)
    x[250] = 7.5
    got = scores(Forecast(["v"]), x)
    assert (got[:250] == 0.0).all() and got[250] > 0.99


def test_restore_rejects_another_configuration_and_bad_values() -> None:
    detector = Forecast(["v"])
    scores(detector, cycle(400, 24))
    state = detector.state()
    with pytest.raises(DetectorStateError, match="another warmup"):
        Forecast(["v"], history=256).restore(state)
    broken = dict(state, season=[[None] * 170])
    with pytest.raises(DetectorStateError, match="out of range"):
        Forecast(["v"]).restore(broken)
    fresh = Forecast(["v"])
    fresh.restore(state)
    assert fresh.periods == detector.periods


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="alpha"):
        Forecast(["v"], alpha=1.5)
    with pytest.raises(ValueError, match="at least one feature"):
        Forecast([])


def test_a_small_level_shift_is_found_by_the_residual_ewma() -> None:
    """A 5 sigma shift is at the single-row limit: with noise, its first rows often stay below it, and
    the predictors absorb it in a few rows; the residuals' EWMA sees their bias. Over 20 seeds, every
    shift is found within 15 rows, and the single-row score alone finds fewer."""
    found = single = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = 20.0 + rng.normal(0.0, 1.0, 2000)
        x[1200:1400] += 5.0
        got = scores(Forecast(["v"]), x)
        found += bool((got[1200:1215] >= 0.5).any())
        assert (got[300:1200] >= 0.5).sum() <= 2
        single += bool((scores(Forecast(["v"], ewma_lambda=1e-9), x)[1200:1215] >= 0.5).any())
    assert found == 20 and single < found, (found, single)


def test_heavy_tailed_noise_widens_the_limit() -> None:
    rng = np.random.default_rng(7)
    x = 50.0 + rng.standard_t(3, 6000) / np.sqrt(3.0)
    adaptive = (scores(Forecast(["v"]), x)[500:] >= 0.5).sum()
    fixed = (scores(Forecast(["v"], tail_rate=1e-9), x)[500:] >= 0.5).sum()
    assert adaptive < fixed / 2, (adaptive, fixed)
    x[5000] += 25.0  # a real outlier still stands out
    assert scores(Forecast(["v"]), x)[5000] >= 0.5
