"""The river challenger: an online latency regressor that learns beside the live model and earns
its place through the same gate as any trained version.

The routing agent hands it every counted call (:meth:`RiverChallenger.learn`) with the call's causal
feature vector, computed before the call is learned. River costs tens of µs per call, so a token
bucket lets at most ``per_s`` calls a second through. Each example is learned ``holdout`` examples
late: the newest ones stay unseen, and they are the hold-out the registry's gate judges a snapshot
on. Every ``retrain_interval`` (:meth:`maybe_gate`) a snapshot is registered
(``ModelRegistry.add_online``) and the gate decides, in a thread; promoted, it is loaded as the live
model like any other version (``on_promoted``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RiverChallenger", "PER_S", "HOLDOUT"]

log = logging.getLogger(__name__)

PER_S = 200  # calls river learns per second at most (token bucket)
HOLDOUT = 1000  # river learns each example this many examples late (its unseen hold-out for the gate)

Example = tuple[list[float], float, float]  # (features, latency ms, ts)


class RiverChallenger:
    """A river model, its unseen hold-out and its registration, counted in the agent's ``counters``
    (``river_learned``, ``river_registered``, ``promotions``, ``errors["river"]``)."""

    def __init__(self, model: Any, counters: dict[str, Any], registry: Callable[[], Any],
                 on_promoted: Callable[[], None], log_once: Callable[..., None], first_gate_in_s: float) -> None:
        self.model = model
        self.counters, self._registry, self._on_promoted, self._log_once = counters, registry, on_promoted, log_once
        self.per_s, self.holdout = PER_S, HOLDOUT
        self._tokens, self._at = float(PER_S), time.monotonic()
        self.pending: collections.deque[Example] = collections.deque()
        self.gate: asyncio.Future[Any] | None = None  # the registration being judged, if any
        self.next_gate = time.monotonic() + first_gate_in_s

    def refill(self) -> None:
        """Top the token bucket up for the time since the last batch (once per batch, not per call)."""
        now = time.monotonic()
        self._tokens = min(float(self.per_s), self._tokens + (now - self._at) * self.per_s)
        self._at = now

    def learn(self, features: Callable[[dict[str, Any]], list[float]], record: dict[str, Any]) -> None:
        """One causal example, if the bucket has a token: ``features(record)`` is the call's vector as
        of its routing time. Never raises (counted and logged once)."""
        if self._tokens < 1.0:
            return
        self._tokens -= 1.0
        try:
            pending = self.pending
            pending.append((features(record), float(record["latency_ms"]), float(record["ts"])))
            if len(pending) > self.holdout:
                old_x, old_y, _ = pending.popleft()
                self.model.learn_one(old_x, old_y)
                self.counters["river_learned"] += 1
        except Exception:
            self.counters["errors"]["river"] += 1
            self._log_once("river-learn", "river challenger failed to learn", exc_info=True)

    def maybe_gate(self, retrain_interval: float, min_train_calls: int) -> None:
        """Every ``retrain_interval``, once river has learned ``min_train_calls`` calls and holds a full
        hold-out: register a snapshot and let the gate decide, in a thread."""
        if retrain_interval <= 0 or (self.gate is not None and not self.gate.done()):
            return
        now = time.monotonic()
        if now < self.next_gate or self.counters["river_learned"] < min_train_calls \
                or len(self.pending) < self.holdout:
            return
        self.next_gate = now + retrain_interval
        try:  # a copy, taken here: the loop keeps teaching the original while the thread judges it
            snapshot = type(self.model).from_bytes(self.model.to_bytes())
            rows = list(self.pending)
        except Exception:
            self.counters["errors"]["river"] += 1
            self._log_once("river-snapshot", "routing: snapshotting the river challenger failed", exc_info=True)
            return
        self.gate = asyncio.ensure_future(asyncio.to_thread(self._judge, snapshot, rows))
        self.gate.add_done_callback(self._judged)

    def _judge(self, snapshot: Any, rows: list[Example]) -> dict[str, Any]:
        import numpy as np

        X = np.asarray([r[0] for r in rows], dtype=np.float32)
        y = np.asarray([r[1] for r in rows], dtype=np.float64)
        ts = np.asarray([r[2] for r in rows], dtype=np.float64)
        registry = self._registry()
        version = registry.add_online(snapshot, X, y, ts, extra={"registered_by": "routing agent (worker)"})
        verdict = registry.promote(version)
        return {"version": version, "promoted": verdict.promoted, "reason": verdict.reason}

    def _judged(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            self.counters["errors"]["river"] += 1
            log.warning("routing: registering the river challenger failed: %r", future.exception())
            return
        result = future.result()
        self.counters["river_registered"] += 1
        if result["promoted"]:
            self.counters["promotions"] += 1
            log.info("routing: river challenger %s promoted by the gate: %s", result["version"], result["reason"])
            self._on_promoted()
        else:
            log.info("routing: river challenger %s refused by the gate: %s", result["version"], result["reason"])
