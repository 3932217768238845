"""Launchers of what the project runs beside itself: the embedded broker, Redis, compose support."""
