"""Active health of one replica, from periodic checks (the proxy sends an MCP ``ping``).

A replica starts healthy, turns unhealthy after ``unhealthy_threshold`` failed checks in a
row, and healthy again after ``healthy_threshold`` good checks in a row: two thresholds, so a
single lucky or unlucky check does not flap it. ``interval == 0`` turns the checks off.

This is only the state machine; the caller runs the checks. Pure and synchronous: every
time-dependent call takes ``now`` (seconds, monotonic).
"""

from __future__ import annotations

from typing import Any

from only1mcp.traffic import HealthSettings

__all__ = ["ActiveHealth"]


class ActiveHealth:
    """Counters for metrics: ``went_unhealthy`` and ``went_healthy`` (transitions)."""

    def __init__(self, settings: HealthSettings) -> None:
        self.settings = settings
        self._healthy = True  # innocent until checked: a new replica takes traffic at once
        self._streak = 0  # consecutive checks disagreeing with the current verdict
        self._last_check: float | None = None
        self._last_ok: bool | None = None
        self.checks = 0
        self.failed_checks = 0
        self.went_unhealthy = 0
        self.went_healthy = 0

    @property
    def enabled(self) -> bool:
        return self.settings.interval > 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    def due(self, now: float) -> bool:
        """Is the next check due? The first one is due at once; after that one per
        ``interval``, counted from when the last result was recorded. Never when disabled."""
        if not self.enabled:
            return False
        return self._last_check is None or now - self._last_check >= self.settings.interval

    def record_check(self, ok: bool, now: float) -> None:
        self._last_check, self._last_ok = now, ok
        self.checks += 1
        self.failed_checks += not ok
        if ok == self._healthy:
            self._streak = 0  # agrees with the verdict: any run towards a change is broken
            return
        self._streak += 1
        needed = self.settings.healthy_threshold if ok else self.settings.unhealthy_threshold
        if self._streak >= needed:
            self._healthy, self._streak = ok, 0
            if ok:
                self.went_healthy += 1
            else:
                self.went_unhealthy += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "healthy": self._healthy,
            "streak": self._streak,
            "last_check": self._last_check,
            "last_ok": self._last_ok,
            "checks": self.checks,
            "failed_checks": self.failed_checks,
            "went_unhealthy": self.went_unhealthy,
            "went_healthy": self.went_healthy,
        }
