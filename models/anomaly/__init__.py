"""Anomaly detectors (one interface, ``base.Detector``), their ensemble, and offline scoring of any series."""
