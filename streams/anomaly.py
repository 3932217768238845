"""The anomaly agent: watches every replica (and replica × tool) in the worker, publishes
``AnomalyEvent``s on ``mcp.anomalies`` and ``Remediation`` decisions on ``mcp.remediation`` (README:
"Anomalies"). ``FeatureWorker.fold`` hands it every valid ``mcp.requests`` record (O(1) each,
streams/anomaly_features.py); a task of the Faust app ticks every ``[anomaly] tick_interval``:

1. each entity's window that closed gives one observation, scored then learned by the entity's own
   ensemble (``models.anomaly.ensemble.default_ensemble``, made lazily); beside it the down rule
   (``down_after`` failed calls in a row → critical), checked every tick: a crash is ejected at once;
2. the verdicts drive each anomaly's life and the remediation policy (streams/anomaly_lifecycle.py);
3. records go out through a :class:`QueuedPublisher`: open / update / close, restore and alert are
   retried until delivered; eject / drain refreshes are skipped while a backlog waits. Key: replica.

A detector or ensemble that raises costs that entity its verdict (counted, logged once). The
ensembles' state is saved to ``<state_dir>/<group>.json`` (streams/anomaly_state.py) every
``save_interval`` and at stop, and restored at start. With several workers only the holder of
partition 0 of ``mcp.requests`` assesses and publishes, reading every partition itself
(streams/every_partition.py); the others stay passive. One worker holding every partition
(``only1mcp up``) assesses what it folds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from only1mcp.streams.every_partition import EveryPartition
from only1mcp.streams.every_partition import mode as every_partition_mode
from only1mcp.events import AnomalyEvent, Remediation
from only1mcp.settings import Settings
from only1mcp.streaming import AnomalySettings
from only1mcp.streams.anomaly_features import Aggregator, Entity, entity_name, is_thin
from only1mcp.streams.anomaly_lifecycle import Confirmation, Track, anomaly_event, down_verdict, remediations, step
from only1mcp.streams.anomaly_state import load_state, restore_ensembles, snapshot, state_path, write_state
from only1mcp.streams.publisher import QueuedPublisher

__all__ = ["AnomalyAgent", "install", "ensemble_options"]

log = logging.getLogger(__name__)
_STATUS_EVERY_S = 30.0
EnsembleFactory = Callable[..., Any]  # (features, on_error=…, timeout=…) → an Ensemble


def ensemble_options(config: AnomalySettings, timeout_ms: float | None) -> dict[str, Any]:
    """The options every entity's ensemble gets (also what a replay of the agent must use)."""
    options: dict[str, Any] = {}
    rates = {f: config.rate_scale for f in config.features if f in ("error_rate", "timeout_rate")}
    if rates and config.rate_scale > 0:
        options["spc"] = {"min_scale": rates}
    if timeout_ms is not None:  # the trend detector's time to failure: until calls would time out
        options["timeout"] = timeout_ms
    return options


def _default_factory() -> EnsembleFactory | None:
    try:
        from only1mcp.models.anomaly.ensemble import default_ensemble
    except ImportError as exc:
        log.warning("anomaly: the detector ensemble is unavailable (%s); the down rule alone judges replicas", exc)
        return None
    return default_ensemble


class AnomalyAgent:
    """Aggregation, per-entity ensembles, the down rule, anomaly lifecycles, remediation, state."""

    def __init__(self, settings: Settings, *, publisher: Any = None, ensemble_factory: EnsembleFactory | None = None,
                 assignment: Callable[[], set[int] | None] | None = None) -> None:
        self.settings, self.config = settings, settings.anomaly
        cfg = self.config
        self.assignment = assignment or (lambda: None)
        self.mode = "fold"  # fold: fed by the feature agent | own: reads every partition itself | passive
        self._own = EveryPartition(settings.worker.bootstrap, self._fold, "only1mcp-anomaly", self._log_once)
        self.agg = Aggregator(cfg.window, cfg.min_calls, cfg.per_tool, cfg.max_window)
        self.factory = ensemble_factory if ensemble_factory is not None else _default_factory()
        self.ensembles: dict[Entity, Any] = {}
        self.tracks: dict[Entity, Track] = {}
        self.verdicts: dict[Entity, tuple[float, Any]] = {}  # (when, the ensemble's verdict on its last window)
        self.confirmations: dict[Entity, Confirmation] = {}
        self.publisher = publisher or QueuedPublisher(settings.worker.bootstrap, key=lambda r: r.replica,
                                                      max_queued=cfg.queue_size)
        proxy = settings.proxy
        self.timeouts_ms = {s.name: (s.timeout or proxy.call_timeout) * 1000.0 for s in settings.servers}
        self.model_version = "down-rule/1" + ("+ensemble" if self.factory is not None else "")
        self.path = state_path(settings)
        self.counters: dict[str, Any] = {
            "events": 0, "calls": 0, "ticks": 0, "assessed": 0, "opened": 0, "updated": 0, "closed": 0,
            "anomaly_records": 0, "remediation_records": 0, "saves": 0,
            "errors": {"observe": 0, "ensemble": 0, "save": 0, "restore": 0, "detectors": {}}}
        self._logged: set[str] = set()
        self._last_status = self._last_save = time.monotonic()

    # -- per event (the worker's hot path) -------------------------------------------------------

    def observe(self, records: list[dict[str, Any]]) -> None:
        """Fold a batch of valid RequestEvent dicts from the feature agent. Never raises."""
        if self.mode != "fold":  # passive, or the own reader feeds it (another worker's partitions)
            return
        self._fold(records)

    def _fold(self, records: list[dict[str, Any]]) -> None:
        try:
            self.counters["calls"] += self.agg.add_many(records)
            self.counters["events"] += len(records)
        except Exception:
            self.counters["errors"]["observe"] += 1
            self._log_once("observe", "anomaly agent failed to fold a batch", exc_info=True)

    # -- per tick --------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> tuple[list[AnomalyEvent], list[Remediation]]:
        """Assess every entity, advance the anomalies, publish; returns this tick's records."""
        now = time.time() if now is None else now
        self.counters["ticks"] += 1
        self._update_mode()
        if self.mode == "passive":
            return [], []
        cfg = self.config
        for entity, x in self.agg.roll(now).items():  # the windows that closed: new verdicts
            verdict = self._assess(entity, x, now)
            if is_thin(x):  # no evidence: the last verdict stands until it lapses
                continue
            confirm = self.confirmations.get(entity) or Confirmation(cfg.confirm_windows, cfg.confirm_within)
            self.confirmations[entity] = confirm
            self.verdicts[entity] = (now, confirm(verdict, now))
        stale = now - cfg.max_window - cfg.tick_interval  # no evidence since: the verdict lapses
        self.verdicts = {e: v for e, v in self.verdicts.items() if v[0] >= stale}
        horizon = now - cfg.confirm_within
        self.confirmations = {e: c for e, c in self.confirmations.items() if c.recent and c.recent[-1][0] >= horizon}
        entities = set(self.verdicts) | set(self.tracks) | set(self.agg.streaks)
        events: list[AnomalyEvent] = []
        decisions: list[tuple[Remediation, bool]] = []
        for entity in entities:
            verdict = None
            if entity[2] is None and entity in self.agg.streaks:
                verdict = down_verdict(*self.agg.streak(entity), now, self.config)
            verdict = verdict or self.verdicts.get(entity, (0.0, None))[1]
            track, state = step(self.tracks.get(entity), verdict, entity, now, self.config)
            if track is None:
                continue
            if state is not None:
                events.append(anomaly_event(track, state, now, self.model_version))
                self.counters[{"open": "opened", "update": "updated", "close": "closed"}[state]] += 1
            held = track.held  # a record repeating what already holds is a refresh: droppable
            decisions += [(r, r.action == held) for r in remediations(track, now, self.config, self.model_version,
                                                                      closing=state == "close")]
            if state == "close":
                self.tracks.pop(entity, None)
            else:
                self.tracks[entity] = track
        self._publish(events, decisions)
        self._maybe_status()
        return events, [r for r, _ in decisions]

    def _assess(self, entity: Entity, x: Mapping[str, float], now: float) -> Any:
        if self.factory is None:
            return None
        self.counters["assessed"] += 1
        try:
            ensemble = self.ensembles.get(entity)
            if ensemble is None:
                ensemble = self.ensembles[entity] = self._new_ensemble(entity[0])
            return ensemble.assess_one({k: x[k] for k in self.config.features}, now)
        except Exception:
            self.counters["errors"]["ensemble"] += 1
            self._log_once("ensemble", f"anomaly: the ensemble of {entity_name(entity)} raised; no verdict this tick "
                                       "(logged once; further failures of any entity are counted)", exc_info=True)
            return None

    def _new_ensemble(self, server: str) -> Any:
        options = ensemble_options(self.config, self.timeouts_ms.get(server))
        options["on_error"] = self._detector_failed
        return self.factory(self.config.features, **options)  # type: ignore[misc]

    def _detector_failed(self, name: str, exc: Exception) -> None:
        """One detector of one ensemble raised (the ensemble skipped it): counted, logged once per detector."""
        failures = self.counters["errors"]["detectors"]
        failures[name] = failures.get(name, 0) + 1
        if failures[name] == 1:
            log.warning("anomaly: detector %s failed (skipped for that observation; further failures are counted): "
                        "%r", name, exc)

    def _publish(self, events: list[AnomalyEvent], decisions: list[tuple[Remediation, bool]]) -> None:
        cfg, publish = self.config, self.publisher.publish
        if events and publish(cfg.topic, events):
            self.counters["anomaly_records"] += len(events)
        for record, droppable in decisions:
            if publish(cfg.remediation_topic, [record], droppable=droppable):
                self.counters["remediation_records"] += 1
        for event in events:
            log.log(logging.WARNING if event.state == "open" else logging.INFO, "anomaly %s %s %s %s score=%.2f: %s",
                    event.state, event.severity, entity_name((event.server, event.replica, event.tool)), event.kind,
                    event.score, event.explanation)

    # -- state -----------------------------------------------------------------------------------

    async def save(self) -> None:
        """The ensembles' state to ``self.path`` (taken here, written in a thread)."""
        try:
            data = snapshot(self.ensembles, self.config.features)
            await asyncio.to_thread(write_state, self.path, data)
            self.counters["saves"] += 1
        except Exception as exc:  # a full disk, a detector whose state fails: the next save tries again
            self.counters["errors"]["save"] += 1
            self._log_once("save", f"anomaly: saving detector state to {self.path} failed: {exc!r}")

    def restore(self) -> int:
        """The ensembles saved at ``self.path``; returns how many were restored."""
        if self.factory is None:
            return 0
        self.ensembles, failed = restore_ensembles(load_state(self.path), self.config.features,
                                                   lambda entity: self._new_ensemble(entity[0]))
        self.counters["errors"]["restore"] += failed
        if self.ensembles or failed:
            log.info("anomaly: restored the detectors of %d entities from %s (%d failed)", len(self.ensembles),
                     self.path, failed)
        return len(self.ensembles)

    def _prepare(self) -> None:
        self.restore()
        if self.factory is not None:
            try:
                self._new_ensemble("").assess_one({k: 1.0 for k in self.config.features}, time.time())
            except Exception:  # the first real assessment will say what is wrong (logged once)
                pass

    # -- the task --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Restore, then tick every tick_interval until cancelled; save at stop (the Faust app's task)."""
        cfg = self.config
        # In a thread, before the first tick: restoring refits each saved forest (~0.25 s an entity)
        # and the first ensemble compiles its numba kernels; neither may stall a tick later.
        await asyncio.to_thread(self._prepare)
        log.info("anomaly agent: every %gs over %gs windows to %s and %s (%s)", cfg.tick_interval, cfg.window,
                 cfg.topic, cfg.remediation_topic, self.model_version)
        try:
            while True:
                started = time.monotonic()
                try:
                    self.tick()
                    if cfg.save_interval and started - self._last_save >= cfg.save_interval:
                        self._last_save = started
                        await self.save()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._log_once("tick", "anomaly tick failed", exc_info=True)
                await asyncio.sleep(max(0.01, cfg.tick_interval - (time.monotonic() - started)))
        finally:
            await self.close()

    async def close(self) -> None:
        await self._own.stop()
        if self.mode != "passive" and self.ensembles:
            await self.save()
        await self.publisher.close()

    def _update_mode(self) -> None:
        try:
            parts = self.assignment()
        except Exception:
            parts = None
        if parts is not None and not parts:  # mid-rebalance: nothing assigned yet, keep going as before
            return
        mode = every_partition_mode(parts, self.settings.worker.partitions)
        if mode != self.mode:
            log.info("anomaly: %s", {
                "fold": "assessing the events this worker folds (it holds every partition of mcp.requests)",
                "own": "this worker holds partition 0 of mcp.requests among others': reading every partition, "
                       "assessing and publishing",
                "passive": "another worker holds partition 0 of mcp.requests and publishes anomalies; this one "
                           "stays passive (its open anomalies lapse)"}[mode])
            if mode == "passive" or self.mode == "passive":  # gathered from a partial view, or nothing
                cfg = self.config
                self.tracks, self.verdicts, self.confirmations = {}, {}, {}
                self.agg = Aggregator(cfg.window, cfg.min_calls, cfg.per_tool, cfg.max_window)
            self.mode = mode
            if mode == "own":
                self._own.start()
            else:
                self._own.stop_soon()

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        p = self.publisher
        return {**{k: v for k, v in self.counters.items() if k != "errors"}, "errors": {**self.counters["errors"],
                                                                                  "detectors": dict(self.counters["errors"]["detectors"])},
                "mode": self.mode, "open": len(self.tracks), "entities": len(self.ensembles),
                "held": sorted(entity_name(e) for e, t in self.tracks.items() if t.held),
                "queued": getattr(p, "waiting", 0), "refreshes_dropped": p.dropped, "lost": getattr(p, "lost", 0),
                "publish_failures": p.failed, "records_sent": p.sent}

    def _maybe_status(self) -> None:
        now = time.monotonic()
        if now - self._last_status < _STATUS_EVERY_S:
            return
        self._last_status = now
        s = self.status()
        log.info("anomaly: mode=%s open=%d held=%s entities=%d ticks=%d calls=%d opened=%d closed=%d sent=%d "
                 "queued=%d lost=%d errors=%s", s["mode"], s["open"], s["held"], s["entities"], s["ticks"], s["calls"],
                 s["opened"], s["closed"], s["records_sent"], s["queued"], s["lost"], s["errors"])

    def _log_once(self, key: str, message: str, exc_info: bool = False) -> None:
        if key in self._logged:
            log.debug(message, exc_info=exc_info)
            return
        self._logged.add(key)
        log.warning(message, exc_info=exc_info)


def install(app: Any, settings: Settings) -> AnomalyAgent:
    """Create the anomaly agent and run its ticks as a task of the Faust app."""
    from only1mcp.streams.kafka import request_partitions

    agent = AnomalyAgent(settings, assignment=request_partitions(app))

    @app.task
    async def anomalies() -> None:
        await agent.run()

    return agent
