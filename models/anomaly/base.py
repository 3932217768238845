"""The detector interface every anomaly detector implements, and what detectors and the ensemble return.

River's style: a detector sees one observation at a time, ``score_one`` before ``learn_one``, so a
score only ever uses earlier observations (causal, the same online and offline). An observation is
a mapping of feature name to float, with the time in unix seconds beside it; a missing value is NaN
or an absent key, and a detector must cope with both, with gaps in time, constant stretches and
any scale or unit. Scores are normalised by each detector to [0, 1] (0 normal, 0.5 suspicious,
1 certainly anomalous) so the ensemble can combine them. State is JSON-able, so a worker saves it
and a restarted worker restores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Observation", "Score", "Assessment", "Detector", "BatchDetector", "DetectorStateError"]

Observation = Mapping[str, float]  # feature name → value (NaN or absent = missing)


class DetectorStateError(ValueError):
    """A saved detector state cannot be restored (corrupt, another detector's, another version)."""


@dataclass(frozen=True, slots=True)
class Score:
    """One detector's verdict on one observation."""

    value: float  # [0, 1]
    features: Mapping[str, float] = field(default_factory=dict)  # feature → signed deviation (robust z) behind it
    time_to_failure_s: float | None = None  # trend detectors: seconds until the series crosses its failure limit
    warming_up: bool = False  # too little history yet: value is 0 and means nothing


@dataclass(frozen=True, slots=True)
class Assessment:
    """The ensemble's verdict on one observation."""

    score: float  # [0, 1]
    severity: str | None  # None (normal) | low | medium | high | critical
    confidence: float  # [0, 1]
    detectors: Mapping[str, float]  # detector name → its score
    features: Mapping[str, float]  # feature → deviation, the strongest first
    kind: str  # latency | errors | down | trend | traffic | mixed | "" when normal
    explanation: str  # one sentence
    time_to_failure_s: float | None = None


@runtime_checkable
class Detector(Protocol):
    """One anomaly detector over a stream of observations of one entity (a replica, a replica × tool, a
    column of a CSV)."""

    name: str

    def score_one(self, x: Observation, t: float) -> Score:
        """How anomalous ``x`` (at time ``t``) is given what was learned so far; never learns."""
        ...

    def learn_one(self, x: Observation, t: float) -> None:
        """Take ``x`` into the detector's notion of normal (a detector may skip observations it flags)."""
        ...

    def state(self) -> dict[str, Any]:
        """Everything needed to continue where it is, as JSON-able data (with its name and a version)."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state()``; DetectorStateError if it cannot (the detector is then unchanged)."""
        ...


@runtime_checkable
class BatchDetector(Detector, Protocol):
    """A detector with a vectorised path for offline scoring (every detector here has one)."""

    features: tuple[str, ...]  # the column order of ``X``

    def score_learn_many(self, X: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Scores of every row of ``X`` (n × len(features), NaN = missing) at times ``t``, each row scored
        and then learned: exactly what looping ``score_one`` then ``learn_one`` gives, only faster."""
        ...
