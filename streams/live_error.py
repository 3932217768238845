"""How well each predictor's P50 did on completed calls, and when the live model is rolled back.

The routing agent (streams/routing.py) scores every completed call against the curves each
predictor published at the previous tick (live model, the learner as the baseline, shadow, river)
and keeps an EWMA of the absolute error per predictor (:class:`LiveError`). :class:`RollbackWatch`
turns the live model's and the baseline's errors into one decision: roll back once the live model
has done worse for ``rollback_after`` seconds, judged only when both have seen enough calls.
"""

from __future__ import annotations

__all__ = ["LiveError", "RollbackWatch"]

ERROR_ALPHA = 0.02  # weight of the newest call in the live-error EWMAs (~50 calls)
MIN_COMPARED = 50  # calls each side must have been judged on before a rollback can happen


class LiveError:
    """EWMA of a predictor's absolute P50 error on completed calls."""

    __slots__ = ("value", "n", "alpha")

    def __init__(self, alpha: float = ERROR_ALPHA) -> None:
        self.value, self.n, self.alpha = 0.0, 0, alpha

    def add(self, err: float) -> None:
        if self.n == 0:
            self.value = err
        else:
            self.value += self.alpha * (err - self.value)
        self.n += 1


class RollbackWatch:
    """Since when the live model has done worse than the baseline; whether it has lasted long enough."""

    def __init__(self, min_compared: int = MIN_COMPARED) -> None:
        self.min_compared = min_compared
        self.since: float | None = None

    def reset(self) -> None:
        self.since = None

    def due(self, live: LiveError, baseline: LiveError, now: float, after_s: float) -> float | None:
        """The seconds the live model has been worse, once they reach ``after_s``; else None. A tie or
        too few calls on either side resets the clock (the first worse tick only starts it)."""
        if live.n < self.min_compared or baseline.n < self.min_compared or live.value <= baseline.value:
            self.since = None
            return None
        if self.since is None:
            self.since = now
            return None
        worse = now - self.since
        return worse if worse >= after_s else None
