"""Anomaly detectors (one interface, ``base.Detector``), their ensemble, and offline scoring of any series.

Import the detectors from their modules (``spc``, ``iforest``, ``online``, ``trend``); the names
below are the ones the streaming worker and the CLI use.
"""

from only1mcp.models.anomaly.base import Assessment, Detector, DetectorStateError, Score
from only1mcp.models.anomaly.ensemble import DEFAULT_THRESHOLDS, Ensemble, default_ensemble

__all__ = ["Assessment", "Detector", "DetectorStateError", "Score", "Ensemble", "default_ensemble", "DEFAULT_THRESHOLDS"]
