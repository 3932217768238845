"""The live-error EWMAs and the rollback clock the routing agent acts on."""

from __future__ import annotations

import pytest

from only1mcp.streams.live_error import LiveError, RollbackWatch


def _error(value: float, n: int) -> LiveError:
    e = LiveError()
    for _ in range(n):
        e.add(value)
    return e


def test_live_error_starts_at_the_first_error_then_moves_by_alpha() -> None:
    e = LiveError(alpha=0.5)
    e.add(10.0)
    assert (e.value, e.n) == (10.0, 1)
    e.add(20.0)
    assert (e.value, e.n) == (15.0, 2)


def test_rollback_is_due_only_after_being_worse_for_the_whole_period() -> None:
    watch = RollbackWatch(min_compared=5)
    worse, base = _error(20.0, 5), _error(10.0, 5)
    assert watch.due(worse, base, now=100.0, after_s=30.0) is None  # starts the clock
    assert watch.due(worse, base, now=129.0, after_s=30.0) is None
    assert watch.due(worse, base, now=130.0, after_s=30.0) == pytest.approx(30.0)


@pytest.mark.parametrize("live, base", [
    (_error(10.0, 5), _error(10.0, 5)),  # a tie is not worse
    (_error(20.0, 4), _error(10.0, 5)),  # too few calls judged on the live side
    (_error(20.0, 5), _error(10.0, 4)),  # or on the baseline's
])
def test_a_tie_or_too_few_calls_resets_the_clock(live: LiveError, base: LiveError) -> None:
    watch = RollbackWatch(min_compared=5)
    worse, baseline = _error(20.0, 5), _error(10.0, 5)
    watch.due(worse, baseline, now=0.0, after_s=30.0)
    assert watch.due(live, base, now=10.0, after_s=30.0) is None and watch.since is None
    assert watch.due(worse, baseline, now=40.0, after_s=30.0) is None  # the clock starts again here
    assert watch.due(worse, baseline, now=70.0, after_s=30.0) == pytest.approx(30.0)
