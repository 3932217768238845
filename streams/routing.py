"""The routing agent: learns from every request event in the worker and publishes routing weights.

It lives in the worker process beside the feature agent: ``FeatureWorker.fold`` hands it every
valid ``mcp.requests`` record (already decoded to a dict) once per fold (:meth:`RoutingAgent.observe`,
a few dict updates per record), and a task of the Faust app (:meth:`RoutingAgent.run`) ticks every
``[learning] publish_interval``:

1. **Which predictor publishes.** The specialisation learner (models/routing/tool_ewma.py) needs
   only ``min_samples`` calls per replica × tool, so weights go out within seconds of the first
   traffic. When the registry (``[learning] registry_dir``, or ``<[store] data_dir>/models``) has a
   live version that loads, the latency model takes over every (server, tool) where it is warm: it
   scores every known (server, tool, replica) at inflight ``0 … inflight_levels-1`` in ONE batch
   (onnxruntime, models/routing/model.py) and publishes its P50 curves (expected latency by
   calls in flight, only over the levels the replica has had calls at, never falling) for the keys with
   ``_WARM_CALLS`` calls, taking a (server, tool) where it is warm on two replicas or more; a
   replica it is not warm on yet keeps the learner's curve inside the model's record
   (``weights.split``); the learner keeps the other tools. If loading or scoring raises, that tick
   is the learner's (logged, counted, never fatal).
   The causal features the model reads cost ~10 µs an event (a heap push, then the window and EWMA
   updates at the next tick), several times the learner's ~2 µs; they are fed only once a model
   (live or shadow) exists in the registry, and the model publishes ``_WARMUP_S`` after that.
2. **Shadow and challenger.** A registry shadow version is scored on the same batch; a river online
   regressor (models/latency/online.py, driven by streams/challenger.py) learns from the same causal
   feature vectors and is scored on the same batch. Neither is acted on. Every ``retrain_interval``
   a snapshot of river goes through the registry's gate, judged on the newest calls it has not
   learned yet.
3. **Live error.** For each predictor (live model, the learner as the baseline, shadow, river), an
   EWMA of the absolute error of its P50 prediction on completed calls: the prediction from the last
   tick's curves at the call's own inflight. A live model doing worse than the baseline for
   ``rollback_after`` seconds is rolled back in the registry (or, with no previous version, benched:
   the learner publishes until a new version is live); logged and counted.
4. **Retraining.** Every ``retrain_interval``, once the offline store holds ``min_train_calls``
   calls of the last hour, ``jobs/train_latency.train_latency`` runs on them in a subprocess
   (streams/retrain.py) (niced; it registers and gates the candidate itself), then the live model
   is reloaded.

Records go to ``[learning] topic`` keyed by server, through the agent's own aiokafka producer, from
a background send: with the broker away a tick is dropped (logged once, counted) and the worker
goes on folding; the next tick after it is back publishes again.

Several workers in one consumer group (compose): each folds only the replicas of its partitions
(``mcp.requests`` is keyed by replica), and partial views would publish conflicting records. So the
agent of the worker holding partition 0 reads every partition itself (its own aiokafka consumer, no
group, from the end: a second decode of every event, on that worker only) and publishes and
retrains; the others stay passive. One worker holding every partition (``only1mcp up``) learns
from what it folds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from only1mcp.streams.every_partition import EveryPartition
from only1mcp.streams.every_partition import mode as every_partition_mode
from only1mcp.events import RoutingWeights
from only1mcp.models.routing.tool_ewma import ToolEwma, counts
from only1mcp.models.routing.weights import Curves, decisions_for, split
from only1mcp.settings import Settings
from only1mcp.streams.challenger import RiverChallenger
from only1mcp.streams.live_error import LiveError, RollbackWatch
from only1mcp.streams.publisher import DecisionPublisher
from only1mcp.streams.retrain import Retrainer
from only1mcp.streams.routing_history import recent_calls

__all__ = ["RoutingAgent", "install", "registry_root"]

log = logging.getLogger(__name__)

_STATUS_EVERY_S = 30.0
_RELOAD_EVERY_S = 5.0  # how often the registry is asked whether the live version changed
_WARMUP_S = 10.0  # after the first model shows up, its features' windows (10 s) fill before it publishes
_WARM_CALLS = 30  # and a (server, tool, replica) needs this many calls since then (the EWMAs, the counts)
PREDICTORS = ("live", "baseline", "shadow", "river")


def registry_root(settings: Settings) -> Path:
    return Path(settings.learning.registry_dir or Path(settings.store.data_dir) / "models")


class RoutingAgent:
    """Specialisation learner, latency model serving, live-error tracking, rollback and retraining."""

    def __init__(self, settings: Settings, *, publisher: DecisionPublisher | None = None,
                 registry: Any = None, assignment: Callable[[], set[int] | None] | None = None) -> None:
        self.settings, learning = settings, settings.learning
        # The partitions of mcp.requests this worker's group gave it (None: unknown, as if all)
        self.assignment = assignment or (lambda: None)
        self.mode = "fold"  # fold: fed by the feature agent | own: reads every partition itself | passive
        self._own = EveryPartition(settings.worker.bootstrap, self._observe_own, "only1mcp-routing", self._log_once)
        self.learning = learning
        self.tool_ewma = ToolEwma(learning.ewma_alpha, learning.min_samples)
        self.publisher = publisher or DecisionPublisher(settings.worker.bootstrap, learning.topic)
        self.registry_dir = registry_root(settings)
        self._registry = registry
        self.model_side: Any = None  # ModelRouting, when models.latency imports
        self.challenger: RiverChallenger | None = None
        try:
            self.model_side = self._new_side()
        except Exception as exc:  # the latency side is optional: the learner alone still publishes
            log.info("latency model unavailable (%s: %s): the specialisation learner publishes alone",
                     type(exc).__name__, exc)
        self.armed_at: float | None = None  # when a model first showed up: the causal features are fed since
        self._warm_buffer: list[dict[str, Any]] | None = None  # records seen while the store is read
        self.live: Any = None  # the loaded live LatencyModel
        self.live_version: str | None = None
        self.shadow: Any = None
        self.shadow_version: str | None = None
        self.benched: set[str] = set()  # live versions rolled back with no previous one to go to
        # (server, tool, replica) → P50 curve, per predictor, from the last tick
        self.p50: dict[str, dict[tuple[Any, ...], list[float]]] = {name: {} for name in PREDICTORS}
        self.live_error = {name: LiveError() for name in PREDICTORS}
        self.counters: dict[str, Any] = {
            "events": 0, "calls": 0, "ticks": 0, "published": 0, "records": 0, "rollbacks": 0, "benched": 0,
            "fallback_ticks": 0, "own_read": 0, "retrains": 0, "promotions": 0, "retrain_failures": 0,
            "model_loads": 0, "river_learned": 0, "river_registered": 0,
            "errors": {"latency_model": 0, "shadow": 0, "river": 0, "tool_ewma": 0, "load": 0},
        }
        self.source: str | None = None
        self.model_version: str | None = None
        self.rollback_watch = RollbackWatch()
        self._last_reload = -math.inf
        self._generation = 0
        self._last_status = time.monotonic()
        self._reloading: asyncio.Future[Any] | None = None
        self.retrainer = Retrainer(settings.store.data_dir, self.registry_dir, min(learning.retrain_interval, 60.0),
                                   self.counters, functools.partial(self._maybe_reload, force=True))
        self._logged: set[str] = set()
        if self.model_side is not None:
            try:
                from only1mcp.models.latency.online import RiverLatency

                self.challenger = RiverChallenger(RiverLatency(), self.counters, lambda: self.registry,
                                                  functools.partial(self._maybe_reload, force=True), self._log_once,
                                                  learning.retrain_interval)
            except Exception as exc:
                log.info("river challenger unavailable (%s: %s)", type(exc).__name__, exc)

    # -- per event (the worker's hot path) -------------------------------------------------------

    def observe(self, records: list[dict[str, Any]]) -> None:
        """Learn from a fold's valid records (RequestEvent dicts). Never raises."""
        if self.mode != "fold":  # another worker's partitions are missing here: the own reader feeds it
            return
        try:
            self._observe(records)
        except Exception:  # the feature worker must not stop for the learner
            self.counters["errors"]["tool_ewma"] += 1
            self._log_once("observe", "routing agent failed to learn from a batch", exc_info=True)

    def _observe(self, records: list[dict[str, Any]]) -> None:
        learn, model_side = self.tool_ewma.learn_counted, self.model_side
        if self._warm_buffer is not None:  # the features are being built from the store: keep these for them
            self._warm_buffer.extend(records)
        if self.armed_at is None:  # no model yet: nothing to compare, and the features would cost ~10 µs/event
            self.counters["calls"] += self.tool_ewma.learn_many(records)
            self.counters["events"] += len(records)
            return
        tables = [(self.p50[name], self.live_error[name]) for name in PREDICTORS if self.p50[name]]
        challenger = self.challenger if model_side is not None else None
        if challenger is not None:
            challenger.refill()
        calls = 0
        side_learn = model_side.learn if model_side is not None else None
        for record in records:
            counted = counts(record)
            if counted:
                calls += 1
                if tables and record["status"] == "ok":
                    key = (record["server"], record.get("tool"), record["replica"])
                    inflight, latency = record.get("inflight") or 0, record["latency_ms"]
                    for table, errors in tables:
                        curve = table.get(key)
                        if curve is not None:
                            errors.add(abs(curve[inflight if inflight < len(curve) else -1] - latency))
                learn(record)
                if challenger is not None:
                    challenger.learn(self._features_of, record)
            if side_learn is not None:
                side_learn(record, counted)
        self.counters["events"] += len(records)
        self.counters["calls"] += calls

    def _features_of(self, record: dict[str, Any]) -> list[float]:
        """The call's causal feature vector, as of its routing time (before it is learned)."""
        return self.model_side.features.features(record["replica"], record.get("tool"), record.get("inflight"),
                                                 record["ts"], record.get("request_bytes"))

    # -- ticks -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every publish_interval until cancelled (the Faust app's task)."""
        interval = self.learning.publish_interval
        log.info("routing agent: publishing to %s every %gs (registry %s)", self.learning.topic, interval,
                 self.registry_dir)
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._log_once("tick", "routing tick failed", exc_info=True)
                await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))
        finally:
            await self.close()

    async def tick(self) -> list[RoutingWeights]:
        """Decide, publish (in the background) and return this tick's records."""
        now = time.time()
        self.counters["ticks"] += 1
        self._update_mode()
        if self.mode == "passive":  # another worker of the group learns and publishes
            self._maybe_status()
            return []
        self._maybe_reload()
        if self.model_side is not None:
            self.retrainer.maybe_start(self.learning.retrain_interval, self.learning.min_train_calls,
                                       self.counters["calls"])
        if self.challenger is not None and self.armed_at is not None:
            self.challenger.maybe_gate(self.learning.retrain_interval, self.learning.min_train_calls)
        self.tool_ewma.prune(now)
        self.p50["baseline"] = self.tool_ewma.p50()
        records = self._decide(now)
        await self._check_rollback(time.monotonic())
        if records:
            if self.publisher.publish(records):
                self.counters["published"] += 1
                self.counters["records"] += len(records)
        self._maybe_status()
        return records

    def _decide(self, now: float) -> list[RoutingWeights]:
        """The live model's records where it is warm and predicts every replica, the learner's elsewhere."""
        learning, ewma = self.learning, self.tool_ewma
        baseline = ewma.curves(now)
        model = self._model_curves(now)
        common = {"now": now, "valid_for": learning.valid_for, "temperature": learning.temperature}
        if not model:
            if self.live is not None:
                self.counters["fallback_ticks"] += 1
            self.source, self.model_version = ewma.source, ewma.version
            return decisions_for(baseline, model_version=ewma.version, source=ewma.source, **common)
        mine, rest, servers = split(model, baseline)
        version, source = f"latency_model:{self.live_version}", self.model_side.source
        records = decisions_for(mine, model_version=version, source=source, server_wide=False, **common)
        records += decisions_for(rest, model_version=ewma.version, source=ewma.source, server_wide=False, **common)
        records += decisions_for({k: v for k, v in mine.items() if k[0] in servers}, model_version=version,
                                 source=source, per_tool=False, **common)
        records += decisions_for({k: v for k, v in baseline.items() if k[0] not in servers},
                                 model_version=ewma.version, source=ewma.source, per_tool=False, **common)
        self.source = source if not rest else f"{source}+{ewma.source}" if mine else ewma.source
        self.model_version = version
        return records

    def _model_curves(self, now: float) -> Curves | None:
        """Score live, shadow and river on one batch; the live model's routing curves of the keys it is
        warm for, or None (the learner decides alone)."""
        side = self.model_side
        if side is None or self.armed_at is None:
            return None
        try:
            side.prune(now)
            design = side.design(now)
        except Exception:
            self.counters["errors"]["latency_model"] += 1
            self._log_once("design", "routing: building the feature batch failed", exc_info=True)
            return None
        if not design.keys:
            return None
        for name, model in (("shadow", self.shadow), ("river", self.river)):
            if model is None:
                continue
            try:
                self.p50[name] = side.curves_of(design, model.predict(design.X))[1]
            except Exception:
                self.counters["errors"][name] += 1
                self.p50[name] = {}
                self._log_once(f"score-{name}", f"routing: scoring the {name} model failed", exc_info=True)
        if self.live is None:
            return None
        warm = max(self.learning.min_samples, _WARM_CALLS)
        try:
            curves, medians = side.curves_of(design, self.live.predict(design.X), lambda k: side.calls(k) >= warm)
        except Exception:
            self.counters["errors"]["latency_model"] += 1
            self.p50["live"] = {}
            self._log_once("score-live", "routing: scoring the live model failed; the learner publishes this tick",
                           exc_info=True)
            return None
        self.p50["live"] = medians
        if time.monotonic() - self.armed_at < _WARMUP_S:
            return None  # the windows are still filling: the learner publishes meanwhile
        return curves

    @property
    def river(self) -> Any:
        """The challenger's river model (None without one)."""
        return self.challenger.model if self.challenger is not None else None

    # -- the registry: reload, rollback ---------------------------------------------------------

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from only1mcp.models.registry import ModelRegistry

            self._registry = ModelRegistry(self.registry_dir)
        return self._registry

    def _maybe_reload(self, force: bool = False) -> None:
        """Every few seconds (in a thread): whether the live or shadow version changed; load it."""
        if self.model_side is None:
            return
        now = time.monotonic()
        if self._reloading is not None and not self._reloading.done():
            return
        if not force and now - self._last_reload < _RELOAD_EVERY_S:
            return
        self._last_reload = now
        self._reloading = asyncio.ensure_future(asyncio.to_thread(self._load_models))
        self._reloading.add_done_callback(functools.partial(self._loaded, self._generation))

    def _load_models(self) -> tuple[Any, Any]:
        """(live, shadow): each (version, model) — model None if it is not there — or an exception."""
        registry = self.registry
        out: list[Any] = []
        for which in ("live", "shadow"):
            try:
                version = _version_of(getattr(registry, which)())
                if version is None or version in self.benched:
                    out.append((None, None))
                elif version == (self.live_version if which == "live" else self.shadow_version):
                    out.append((version, self.live if which == "live" else self.shadow))  # unchanged
                elif which == "live":
                    out.append((version, registry.load_live()))
                else:
                    out.append((version, _load_version(registry, version)))
            except Exception as exc:
                out.append(exc)
        return out[0], out[1]

    def _loaded(self, generation: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if generation != self._generation:  # a rollback happened meanwhile: this answer is stale
            self._last_reload = -math.inf
            return
        if future.exception() is not None:
            self.counters["errors"]["load"] += 1
            self._log_once("load", f"routing: reading the model registry failed: {future.exception()!r}")
            return
        for which, result in zip(("live", "shadow"), future.result()):
            if isinstance(result, Exception):
                self.counters["errors"]["load"] += 1
                if which == "live" and self.live is not None:
                    log.warning("routing: the live model no longer loads (%s); the learner publishes", result)
                    self.live, self.live_version = None, None
                self._log_once(f"load-{which}-{result}", f"routing: {which} model not loaded: {result}")
                continue
            version, model = result
            if model is not None:
                self._arm()
            if which == "live":
                if model is not self.live:
                    if model is not None:
                        self.counters["model_loads"] += 1
                        log.info("routing: live latency model %s loaded; it publishes from now on", version)
                    elif self.live is not None:
                        log.info("routing: no live latency model any more; the learner publishes")
                    self.live_error["live"] = LiveError()
                    self.p50["live"] = {}
                    self.rollback_watch.reset()
                self.live, self.live_version = model, (version if model is not None else None)
            else:
                if model is not self.shadow:
                    self.live_error["shadow"] = LiveError()
                    self.p50["shadow"] = {}
                    if model is not None:
                        log.info("routing: shadow latency model %s loaded (scored, not acted on)", version)
                self.shadow, self.shadow_version = model, (version if model is not None else None)

    # -- arming: causal features from the offline store ----------------------------------------

    def _new_side(self) -> Any:
        from only1mcp.models.latency.features import CausalFeatures
        from only1mcp.models.routing.model import ModelRouting

        # The training job's feature parameters (training_frame's defaults): a model only means what it
        # learned on features computed the same way.
        return ModelRouting(CausalFeatures(), self.learning.inflight_levels, self.learning.min_samples)

    def _arm(self) -> None:
        """A model exists: build the causal features from the offline store's recent calls (in a
        thread), then feed them every event. Records seen meanwhile are kept and applied after."""
        if self.armed_at is not None or self._warm_buffer is not None or self.model_side is None:
            return
        self._warm_buffer = []
        until = time.time()
        future = asyncio.ensure_future(asyncio.to_thread(self._side_from_store, until))
        future.add_done_callback(self._armed)

    def _side_from_store(self, until: float) -> tuple[Any, set[str], float]:
        """(a predictor fed with the store's recent calls before ``until``, their event ids, the
        seconds they span)."""
        side = self._new_side()
        calls = recent_calls(self.settings.store.data_dir, until)
        for event in calls:
            side.learn_one(event)
        side.design(until)  # applies the pending calls here, not on the worker's loop at the first tick
        span = calls[-1]["ts"] - calls[0]["ts"] if calls else 0.0
        return side, {event["event_id"] for event in calls}, float(span)

    def _armed(self, future: asyncio.Future[Any]) -> None:
        buffer, self._warm_buffer = self._warm_buffer or [], None
        if future.cancelled():
            return
        if future.exception() is not None:
            self._log_once("history", f"routing: reading recent calls from the store failed "
                                      f"({future.exception()!r}); the features start empty")
            side, ids, span = self._new_side(), set(), 0.0
        else:
            side, ids, span = future.result()
        for record in buffer:
            if record.get("event_id") not in ids:
                side.learn_one(record)
        self.model_side = side
        warm = span >= _WARMUP_S
        self.armed_at = time.monotonic() - (_WARMUP_S if warm else 0.0)
        log.info("routing: a latency model is registered; its causal features start from %d stored calls "
                 "(%.0f s)%s", len(ids), span, "" if warm else f"; the model publishes after {_WARMUP_S:g} s")

    async def _check_rollback(self, now: float) -> None:
        """Roll the live model back once it has done worse than the baseline for rollback_after s."""
        live, base = self.live_error["live"], self.live_error["baseline"]
        if self.live is None:
            self.rollback_watch.reset()
            return
        worse_s = self.rollback_watch.due(live, base, now, self.learning.rollback_after)
        if worse_s is None:
            return
        version = self.live_version
        self.counters["rollbacks"] += 1
        log.warning("routing: live model %s has done worse than the baseline for %.0f s (P50 error %.1f ms vs "
                    "%.1f ms): rolling back", version, worse_s, live.value, base.value)
        self._generation += 1  # a load already under way must not bring the rolled-back model back
        try:
            reason = (f"live P50 error {live.value:.1f} ms > baseline {base.value:.1f} ms for "
                      f"{worse_s:.0f} s")
            await asyncio.to_thread(self.registry.rollback, reason)
        except Exception as exc:  # no previous version (or the registry refuses): bench this one
            self.counters["benched"] += 1
            if version is not None:
                self.benched.add(version)
            log.warning("routing: no rollback for %s (%s); the learner publishes until a new version is live",
                        version, exc)
        self.live, self.live_version = None, None
        self.rollback_watch.reset()
        self.live_error["live"], self.p50["live"] = LiveError(), {}
        self._maybe_reload(force=True)

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            **{k: v for k, v in c.items() if k != "errors"},
            "errors": dict(c["errors"]),
            "mode": self.mode, "source": self.source, "model_version": self.model_version,
            "live_version": self.live_version, "shadow_version": self.shadow_version,
            "benched_versions": sorted(self.benched),
            "ticks_dropped": self.publisher.dropped, "publish_failures": self.publisher.failed,
            "records_sent": self.publisher.sent,
            "live_error_ms": {name: (round(e.value, 3) if e.n else None) for name, e in self.live_error.items()},
            "live_error_n": {name: e.n for name, e in self.live_error.items()},
        }

    def _maybe_status(self) -> None:
        now = time.monotonic()
        if now - self._last_status < _STATUS_EVERY_S:
            return
        self._last_status = now
        s = self.status()
        log.info("routing: source=%s version=%s ticks=%d published=%d records=%d dropped=%d failed=%d rollbacks=%d "
                 "calls=%d live_error_ms=%s", s["source"], s["model_version"], s["ticks"], s["published"],
                 s["records"], s["ticks_dropped"], s["publish_failures"], s["rollbacks"], s["calls"],
                 s["live_error_ms"])

    def _log_once(self, key: str, message: str, exc_info: bool = False) -> None:
        if key in self._logged:
            log.debug(message, exc_info=exc_info)
            return
        self._logged.add(key)
        log.warning(message, exc_info=exc_info)

    async def close(self) -> None:
        self.retrainer.cancel()
        await self._stop_own()
        await self.publisher.close()

    # -- several workers in one group -------------------------------------------------------------

    def _update_mode(self) -> None:
        """One worker holding every partition of mcp.requests learns from what it folds (exact). In a
        group of several, each folds only some replicas' events (the topic is keyed by replica), so
        partial views would publish conflicting records: the worker holding partition 0 reads every
        partition itself (streams/every_partition.py) and publishes; the others stay passive."""
        try:
            parts = self.assignment()
        except Exception:
            parts = None
        total = self.settings.worker.partitions
        mode = every_partition_mode(parts, total)
        if mode == self.mode:
            return
        log.info("routing: %s (mcp.requests partitions here: %s of %d)", {
            "fold": "learning from the events this worker folds",
            "own": "another worker folds some partitions: reading every partition of mcp.requests for routing",
            "passive": "another worker of the group learns and publishes routing weights"}[mode],
            "all" if parts is None else sorted(parts), total)
        self.mode = mode
        if mode == "own":
            self._own.start()
        else:
            self._own.stop_soon()

    def _observe_own(self, records: list[dict[str, Any]]) -> None:
        self._observe(records)
        self.counters["own_read"] += len(records)

    async def _stop_own(self) -> None:
        await self._own.stop()


def _version_of(entry: Any) -> str | None:
    """A registry entry (metadata object, dict, or a version string) → its version, or None."""
    if entry is None:
        return None
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry.get("version")) if entry.get("version") is not None else None
    version = getattr(entry, "version", None)
    return None if version is None else str(version)


def _load_version(registry: Any, version: str) -> Any:
    for name in ("load_shadow", "load"):
        method = getattr(registry, name, None)
        if method is not None:
            return method() if name == "load_shadow" else method(version)
    return None


def install(app: Any, settings: Settings) -> RoutingAgent:
    """Create the routing agent and run its ticks as a task of the Faust app."""
    from only1mcp.streams.kafka import request_partitions

    agent = RoutingAgent(settings, assignment=request_partitions(app))

    @app.task
    async def routing_weights() -> None:
        await agent.run()

    return agent
