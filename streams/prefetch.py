"""The prefetch agent: per session, the likeliest next tools, published as ``PrefetchDecision``s on
``mcp.prefetch`` (README: "Prefetch decisions"; settings ``[worker.prefetch]``).

Input: the session-route events of the ``mcp.feature-events`` partitions this worker owns
(streams/entity_stage.py hands them over a fetch at a time), so every event of a session reaches
one worker, whatever the number of workers. Per fetch, in event-time order:

1. each ``tools/call`` event is scored against the prediction made after the session's previous
   call (the online, prequential top-1 / top-3 accuracy), taught to the ``NextToolModel`` with the
   session's history (``learn_one``), remembered (streams/prefetch_sessions.py), and the session's
   next tools predicted again; a call older than the session's newest (sessions spread over source
   partitions) is taught with the history before it and decides nothing;
2. once the fetch is folded, each session's newest call, if it ended less than ``valid_for`` ago
   (a replayed backlog teaches, never decides), gets at most ``max_per_event`` decisions: the
   predicted tools with probability ≥ ``min_confidence`` that the session has already called,
   valid for ``valid_for`` s, with the arguments' hash of the tool's previous call in the session
   when that tool's calls repeated their previous arguments at least ``repeat_confidence`` of the
   time (else None: the proxy fills the arguments from its own memory);
3. the decisions go to a :class:`FreshPublisher` (never blocks the fold; key: the session id).

At start the model is the registry's live prefetch model (``only1mcp train prefetch``), which the
online learning continues; a refused artefact is logged with the reason and the model starts empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from only1mcp.events import PrefetchDecision
from only1mcp.models.errors import ModelError
from only1mcp.models.prefetch.markov import NextToolModel
from only1mcp.settings import Settings
from only1mcp.streams.prefetch_sessions import RepeatStats, SessionState, SessionTracker

__all__ = ["PrefetchAgent", "install", "registry_root", "load_model"]

log = logging.getLogger(__name__)
_STATUS_EVERY_S = 30.0
_TOP = 3  # predictions kept per session: the accuracy counts top-1 and top-3


def registry_root(settings: Settings) -> Path:
    from only1mcp.models.prefetch.registry import prefetch_root

    return prefetch_root(settings.learning.registry_dir or Path(settings.store.data_dir) / "models")


def load_model(root: Path, order: int) -> tuple[NextToolModel, str]:
    """The live model under ``root`` and its version, or an empty one (``order``) when there is none
    or it is refused (logged with the reason)."""
    from only1mcp.models.prefetch.registry import PrefetchRegistry

    try:
        found = PrefetchRegistry(root).load_live()
    except ModelError as exc:
        log.error("prefetch: the live model in %s is refused, starting from an empty model: %s", root, exc)
        return NextToolModel(order=order), "empty(refused)"
    if found is None:
        return NextToolModel(order=order), "empty"
    model, version = found
    log.info("prefetch: continuing from %s (order %d, %d calls learned)", version, model.order, model.learned)
    return model, version


class PrefetchAgent:
    """Sessions, the online model, decisions (see the module doc)."""

    def __init__(self, settings: Settings, *, publisher: Any = None, model: NextToolModel | None = None,
                 base_version: str | None = None, clock: Any = time.time) -> None:
        self.config = cfg = settings.worker.prefetch
        if model is None:
            model, base_version = load_model(registry_root(settings), cfg.order)
        self.model, self.clock = model, clock
        self.model_version = f"{base_version or 'empty'}+online"
        self.sessions = SessionTracker(cfg.max_sessions, cfg.session_idle, cfg.max_history)
        self.repeats = RepeatStats(cfg.repeat_confidence)
        if publisher is None:
            from only1mcp.streams.publisher import FreshPublisher

            publisher = FreshPublisher(settings.worker.bootstrap, cfg.topic, key=lambda d: d.session_id)
        self.publisher = publisher
        self.counters = {"events": 0, "calls": 0, "late_calls": 0, "scored": 0, "top1": 0, "top3": 0,
                         "decisions": 0, "stale": 0, "errors": 0}
        self._last_status = time.monotonic()
        # this fetch's predictions by context: (calls the model had learned, the prediction)
        self._predictions: dict[tuple[str, ...], tuple[int, list[tuple[str, float]]]] = {}

    # -- per fetch (the worker's hot path) ----------------------------------------------------------

    def observe(self, batches: Iterable[tuple[int, Sequence[dict[str, Any]]]]) -> list[PrefetchDecision]:
        """Session events of one fetch, as (partition, records); returns the decisions published.
        Never raises (a failure costs this fetch its decisions, counted and logged)."""
        calls: list[tuple[float, int, dict[str, Any]]] = []
        try:
            calls = [(r["ts"], partition, r) for partition, records in batches for r in records
                     if r.get("tool") and r.get("session_id") and r.get("method", "tools/call") in ("tools/call", None)]
            self.counters["events"] += len(calls)
            calls.sort(key=lambda c: c[0])
            newest: dict[str, SessionState] = {}
            self._predictions = {}
            for ts, partition, record in calls:
                state = self.sessions.get(record["session_id"], partition, ts)
                if self._learn(state, record, ts):
                    newest[record["session_id"]] = state
            self.sessions.expire()
            decisions = self._decide(newest)
            if decisions:
                self.publisher.publish(decisions)
                self.counters["decisions"] += len(decisions)
        except Exception:
            self.counters["errors"] += 1
            log.exception("prefetch: a fetch of %d session events failed; no decisions from it", len(calls))
            return []
        self._maybe_status()
        return decisions

    def _learn(self, state: SessionState, record: dict[str, Any], ts: float) -> bool:
        """Score, learn, remember, predict; False for a call older than the session's newest."""
        tool, args_hash, counters = record["tool"], record.get("args_hash"), self.counters
        if ts < state.last_ts:  # arrived after a newer call of its session: taught in its place, no decision
            self.model.learn_one(state.before(ts), tool)
            state.add(tool, ts, args_hash, record.get("server"), self.sessions.max_history)
            counters["late_calls"] += 1
            counters["calls"] += 1
            return False
        if state.predicted:  # the prediction made after the previous call, before learning this one
            counters["scored"] += 1
            counters["top1"] += state.predicted[0][0] == tool
            counters["top3"] += any(t == tool for t, _ in state.predicted)
        previous = state.last.get(tool)
        if previous is not None and previous[0] is not None and args_hash is not None:
            self.repeats.observe(tool, previous[0] == args_hash)
        self.model.learn_one(state.tools, tool)
        state.add(tool, ts, args_hash, record.get("server"), self.sessions.max_history)
        state.last_end = ts + float(record.get("latency_ms") or 0.0) / 1000.0
        state.last_event = record["event_id"].rsplit("/", 1)[0]  # the forwarded copy's id names its route
        # A context's prediction is reused within a fetch while the model has learned under 5 % more calls
        # since: sessions of one kind of agent share contexts, and a warm model moves little (this halved
        # the agent's cost on a backlog); a cold one recomputes every time.
        context = tuple(state.tools[-self.model.order:]) if self.model.order else ()
        learned = self.model.learned
        cached = self._predictions.get(context)
        if cached is None or learned - cached[0] > learned // 20:
            cached = self._predictions[context] = (learned, self.model.predict_one(state.tools, _TOP))
        state.predicted = cached[1]
        counters["calls"] += 1
        return True

    def _decide(self, sessions: dict[str, SessionState]) -> list[PrefetchDecision]:
        cfg, now, out = self.config, self.clock(), []
        for session_id, state in sessions.items():
            if now - state.last_end > cfg.valid_for:
                self.counters["stale"] += 1
                continue
            made = 0
            for tool, p in state.predicted:
                if p < cfg.min_confidence or made >= cfg.max_per_event:
                    break
                called = state.last.get(tool)
                if called is None:  # the eligibility rule: only a tool this session already called
                    continue
                args_hash, server = called
                out.append(PrefetchDecision(
                    decision_id=uuid.uuid4().hex, ts=now, valid_until=now + cfg.valid_for, session_id=session_id,
                    tool=tool, confidence=round(min(1.0, max(0.0, p)), 6), server=server,
                    args_hash=args_hash if args_hash and self.repeats.confident(tool) else None,
                    after_event=state.last_event, model_version=self.model_version))
                made += 1
        return out

    # -- ownership and status -----------------------------------------------------------------------

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions of mcp.feature-events revoked: their sessions are another worker's now."""
        self.sessions.drop_partitions(partitions)

    @property
    def accuracy(self) -> dict[str, float | None]:
        scored = self.counters["scored"]
        return {"top1": self.counters["top1"] / scored if scored else None,
                "top3": self.counters["top3"] / scored if scored else None}

    def status(self) -> dict[str, Any]:
        p = self.publisher
        return {**self.counters, **{f"accuracy_{k}": v for k, v in self.accuracy.items()},
                "sessions": len(self.sessions), "sessions_evicted": self.sessions.evicted,
                "sessions_expired": self.sessions.expired, "model_version": self.model_version,
                "model_learned": self.model.learned, "sent": getattr(p, "sent", 0),
                "expired": getattr(p, "expired", 0), "lost": getattr(p, "lost", 0),
                "publish_failures": getattr(p, "failed", 0)}

    def _maybe_status(self) -> None:
        now = time.monotonic()
        if now - self._last_status < _STATUS_EVERY_S:
            return
        self._last_status = now
        s = self.status()
        top1, top3 = s["accuracy_top1"], s["accuracy_top3"]
        log.info("prefetch: sessions=%d calls=%d decisions=%d sent=%d stale=%d lost=%d top1=%s top3=%s model=%s",
                 s["sessions"], s["calls"], s["decisions"], s["sent"], s["stale"], s["lost"],
                 "-" if top1 is None else f"{top1:.3f}", "-" if top3 is None else f"{top3:.3f}", s["model_version"])

    async def close(self) -> None:
        await self.publisher.close()


def install(app: Any, settings: Settings) -> PrefetchAgent:
    """Create the prefetch agent (fed by the feature agent's second stage); its publisher closes with
    the app."""
    agent = PrefetchAgent(settings)

    @app.task
    async def prefetch_publisher() -> None:  # nothing to do but close the publisher when the worker stops
        try:
            await asyncio.Event().wait()
        finally:
            await agent.close()

    return agent
