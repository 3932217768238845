"""Offline scoring of any series (models/anomaly/series.py): causal, any interval, scale, unit, gaps, NaN."""

from __future__ import annotations

import numpy as np
import pytest

from only1mcp.models.anomaly.series import score_series


def _series(n: int = 3000, seed: int = 0, interval: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(40.0, 2.0, n)
    x[1500:1700] += 16.0  # a level shift of 8 sigma for 200 rows
    x[2500] += 30.0  # a spike
    return 1.7e9 + interval * np.arange(n), x


def test_one_score_per_row_in_unit_interval_with_flags_where_the_anomalies_are() -> None:
    t, x = _series()
    result = score_series(t, x)
    assert result.score.shape == (3000,) and ((result.score >= 0) & (result.score <= 1)).all()
    flags = np.flatnonzero(result.is_anomaly)
    assert flags.size and result.is_anomaly[1500:1510].any() and result.is_anomaly[2500]
    outside = [i for i in flags if not (1500 <= i < 1760 or 2500 <= i < 2505)]
    assert len(outside) <= 5  # few flags on the noise


def test_causal_prefix_scores_do_not_depend_on_the_rest() -> None:
    t, x = _series()
    full = score_series(t, x).score
    assert np.array_equal(score_series(t[:1600], x[:1600]).score, full[:1600])


@pytest.mark.parametrize("factor,offset", [(1e-6, 0.0), (1e9, 0.0), (1.0, 1e6)])
def test_any_scale_and_unit(factor: float, offset: float) -> None:
    t, x = _series()
    base = score_series(t, x).is_anomaly
    assert np.array_equal(score_series(t, x * factor + offset).is_anomaly, base)


@pytest.mark.parametrize("interval", [1.0, 3600.0, 86_400.0])
def test_any_sampling_interval_and_irregular_times(interval: float) -> None:
    t, x = _series(interval=interval)
    rng = np.random.default_rng(1)
    irregular = 1.7e9 + np.cumsum(rng.exponential(interval, len(x)))
    irregular[1000:] += 90 * interval  # and a gap
    base = score_series(t, x).is_anomaly
    assert np.array_equal(score_series(irregular, x).is_anomaly, base)


def test_nan_constant_stretches_and_several_columns() -> None:
    t, x = _series()
    x[100:130] = np.nan
    x[800:1000] = 40.0
    two = np.column_stack([x, np.full(len(x), 7.0)])
    result = score_series(t, two, ["latency_ms", "error_rate"])
    assert np.isfinite(result.score).all() and result.is_anomaly[1500:1510].any()
    assert not result.is_anomaly[100:130].any()
    constant = score_series(t, np.full(len(t), 3.0))
    assert not constant.is_anomaly.any()


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="times for"):
        score_series(np.arange(3.0), np.arange(4.0))
    with pytest.raises(ValueError, match="column names"):
        score_series(np.arange(3.0), np.ones((3, 2)), ["a"])
