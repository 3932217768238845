"""Point-in-time features for the latency model, the same code offline and online.

A call's latency is predicted when the proxy routes it, so its features may only use calls that
had *completed* by then (completion = ``ts + latency_ms / 1000``): a call that started earlier but
was still running is not known yet, and using it would leak the future into the training set.
:class:`CausalFeatures` enforces that by construction: ``learn_one`` puts a finished call in a
small heap keyed by its completion time, and every ``features(…, ts)`` first applies, in
completion order, the calls that completed before ``ts`` — and only those. The training job
replays the offline store through it (:func:`training_frame`: each row's features are computed
*before* the row is learned) and the worker feeds it the live stream; both call the same methods in
the same order, so a row of the training frame and a live feature vector are equal (tested), not
merely computed by similar code.

The class is river-style (``learn_one`` / ``features``) and does no I/O. Time is event time: the
state is as of the largest ``ts`` asked so far; asking for an earlier ``ts`` answers from the
current state (the worker's clock only moves forward, and the replay is in ``ts`` order).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FEATURE_NAMES", "FEATURE_VERSION", "CausalFeatures", "FrameMeta", "training_frame", "is_training_row",
    "EWMA_FEATURE", "LAST_FEATURE",
]

#: Bump when a feature's meaning, order or computation changes: a model trained on another version
#: is refused when loaded (models/latency/onnx.py).
FEATURE_VERSION = 1

FEATURE_NAMES: tuple[str, ...] = (
    "inflight",  # calls the proxy had in flight on the replica when it routed this one (None → 0)
    "request_bytes",
    "rt_latency_ewma_ms",  # per replica × tool, over completed calls (falls back to replica, then global)
    "rt_latency_last_ms",  # the last completed call's latency (same fallback)
    "rt_error_ewma",
    "rt_inflight_ewma",  # the load the EWMA was measured under: lets the model rescale it to today's load
    "rt_count",  # completed calls seen, capped at COUNT_CAP (how far the EWMA can be trusted)
    "rt_window_rate",  # completed calls per second over the last window_s
    "rt_window_mean_ms",  # over the last window_s (the EWMA when the window is empty)
    "rt_window_p95_ms",  # approximate (log-bucket histogram, ±5 %)
    "replica_latency_ewma_ms",  # the same, per replica over every tool
    "replica_error_ewma",
    "replica_inflight_ewma",
    "replica_count",
    "replica_window_rate",
    "replica_window_mean_ms",
    "replica_window_p95_ms",
    "hour_sin", "hour_cos",  # UTC hour of day
    "dow_sin", "dow_cos",  # day of week
)

EWMA_FEATURE = "rt_latency_ewma_ms"  # the per-(replica, tool) EWMA baseline's prediction
LAST_FEATURE = "rt_latency_last_ms"  # the last-value baseline's prediction

COUNT_CAP = 100  # counts grow without bound over time; past this the EWMA is simply "warm"
_MIN_MS, _GAMMA = 0.1, 1.1  # histogram buckets: [0.1 ms · 1.1^b, 0.1 ms · 1.1^(b+1))
_LOG_GAMMA = math.log(_GAMMA)
_BUCKETS = 200  # up to 0.1 ms · 1.1^200 ≈ 5 hours; larger values share the last bucket
_DAY, _WEEK = 86400.0, 7 * 86400.0
_TWO_PI = 2.0 * math.pi


def is_training_row(event: Mapping[str, Any]) -> bool:
    """A call the latency model learns from: a ``tools/call`` that went upstream (not a cache hit)
    to a known replica, with a latency."""
    return (event.get("method") == "tools/call" and not event.get("cache_hit")
            and event.get("replica") is not None and event.get("latency_ms") is not None)


def _bucket(latency_ms: float) -> int:
    if latency_ms <= _MIN_MS:
        return 0
    return min(int(math.log(latency_ms / _MIN_MS) / _LOG_GAMMA), _BUCKETS - 1)


def _bucket_value(b: int) -> float:
    return _MIN_MS * _GAMMA ** (b + 0.5)  # geometric middle of the bucket


class _Stats:
    """EWMAs, a count and a sliding window (by completion time) of one replica or replica × tool."""

    __slots__ = ("ewma", "last", "err", "inflight", "n", "win", "win_sum", "hist", "top")

    def __init__(self) -> None:
        self.ewma = self.last = self.err = self.inflight = 0.0
        self.n = 0
        self.win: deque[tuple[float, float, int]] = deque()  # (completion, latency, bucket)
        self.win_sum = 0.0
        self.hist = [0] * _BUCKETS
        self.top = 0  # highest bucket ever used: an upper bound to start the p95 walk from

    def learn(self, completion: float, latency: float, error: float, inflight: float, alpha: float) -> None:
        if self.n == 0:
            self.ewma, self.err, self.inflight = latency, error, inflight
        else:
            self.ewma += alpha * (latency - self.ewma)
            self.err += alpha * (error - self.err)
            self.inflight += alpha * (inflight - self.inflight)
        self.last = latency
        self.n += 1
        b = _bucket(latency)
        self.win.append((completion, latency, b))
        self.win_sum += latency
        self.hist[b] += 1
        if b > self.top:
            self.top = b

    def expire(self, horizon: float) -> None:
        """Forget window entries that completed at or before ``horizon``."""
        win, hist = self.win, self.hist
        while win and win[0][0] <= horizon:
            _, latency, b = win.popleft()
            self.win_sum -= latency
            hist[b] -= 1
        if not win:
            self.win_sum = 0.0  # no float drift carried across an empty window

    def window(self, window_s: float) -> tuple[float, float, float]:
        """(rate per second, mean, approximate p95) over the current window; EWMA when it is empty."""
        count = len(self.win)
        if count == 0:
            return 0.0, self.ewma, self.ewma
        above = count - math.ceil(0.95 * count)  # entries strictly above the p95 rank
        seen, b, hist = 0, self.top, self.hist
        while b > 0:
            seen += hist[b]
            if seen > above:
                break
            b -= 1
        return count / window_s, max(self.win_sum, 0.0) / count, _bucket_value(b)


class CausalFeatures:
    """Latency features as of a routing instant, from the calls that completed before it.

    ``alpha`` weighs the newest call in the EWMAs (the specialisation learner's default, 0.1);
    ``window_s`` is the sliding window of the rate, mean and p95 features.
    """

    def __init__(self, alpha: float = 0.1, window_s: float = 10.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.alpha, self.window_s = alpha, window_s
        self._pending: list[tuple[float, float, str, str, float, float, float]] = []
        self._rt: dict[tuple[str, str], _Stats] = {}
        self._replica: dict[str, _Stats] = {}
        self._global = _Stats()
        self._now = -math.inf  # completions before this are applied

    # -- learning ---------------------------------------------------------------------------

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Record a finished call (``ts``, ``latency_ms``, ``replica``, ``tool``, ``status``, ``inflight``).

        It becomes visible to ``features`` only for instants after its completion. Only training
        rows count (:func:`is_training_row`: an upstream ``tools/call``; an event without a
        ``method`` is taken for one), so a live instance fed every event learns exactly what the
        training job's rows teach the offline one. The heap key is the whole record, so calls that
        tie on completion time are applied in the same order whatever order they arrived in.
        """
        replica, latency = event.get("replica"), event.get("latency_ms")
        if replica is None or latency is None or event.get("cache_hit") \
                or event.get("method", "tools/call") != "tools/call":
            return
        ts, latency = float(event["ts"]), max(float(latency), 0.0)
        error = 0.0 if event.get("status", "ok") == "ok" else 1.0
        inflight = float(event.get("inflight") or 0)
        tool = event.get("tool") or ""
        heapq.heappush(self._pending, (ts + latency / 1000.0, ts, str(replica), str(tool), latency, error, inflight))

    def _advance(self, ts: float) -> None:
        """Apply, in completion order, every pending call that completed strictly before ``ts``."""
        if ts > self._now:
            self._now = ts
        pending, alpha = self._pending, self.alpha
        while pending and pending[0][0] < ts:
            completion, _, replica, tool, latency, error, inflight = heapq.heappop(pending)
            rt = self._rt.get((replica, tool))
            if rt is None:
                rt = self._rt[(replica, tool)] = _Stats()
            rs = self._replica.get(replica)
            if rs is None:
                rs = self._replica[replica] = _Stats()
            for stats in (rt, rs):
                stats.learn(completion, latency, error, inflight, alpha)
            g = self._global  # only its EWMA and last value are used (the cold-start fallback)
            if g.n == 0:
                g.ewma = latency
            else:
                g.ewma += alpha * (latency - g.ewma)
            g.last, g.n = latency, g.n + 1

    # -- reading ----------------------------------------------------------------------------

    def _lookup(self, replica: str, tool: str | None) -> tuple[_Stats | None, _Stats | None]:
        return self._rt.get((replica, tool or "")), self._replica.get(replica)

    def _fallback(self, rt: _Stats | None, rs: _Stats | None) -> _Stats:
        for stats in (rt, rs):
            if stats is not None and stats.n:
                return stats
        return self._global

    def ewma_of(self, replica: str, tool: str | None) -> float:
        """The per-(replica, tool) EWMA baseline's prediction (replica, then global, when cold).

        State as of the last ``features`` call (the baseline answers for the same instant)."""
        return self._fallback(*self._lookup(replica, tool)).ewma

    def last_of(self, replica: str, tool: str | None) -> float:
        """The last-value baseline's prediction: the latest completed call's latency."""
        return self._fallback(*self._lookup(replica, tool)).last

    def features(self, replica: str, tool: str | None, inflight: float | None, ts: float,
                 request_bytes: float | None = None) -> list[float]:
        """The feature vector (in ``FEATURE_NAMES`` order) of a call routed to ``replica`` at ``ts``
        with ``inflight`` calls already in flight there."""
        self._advance(ts)
        horizon = ts - self.window_s
        rt, rs = self._lookup(replica, tool)
        best = self._fallback(rt, rs)
        out = [float(inflight or 0), float(request_bytes or 0), best.ewma, best.last]
        if rt is not None and rt.n:
            rt.expire(horizon)
            out += [rt.err, rt.inflight, float(min(rt.n, COUNT_CAP)), *rt.window(self.window_s)]
        else:
            out += [0.0, 0.0, 0.0, 0.0, best.ewma, best.ewma]
        if rs is not None and rs.n:
            rs.expire(horizon)
            out += [rs.ewma, rs.err, rs.inflight, float(min(rs.n, COUNT_CAP)), *rs.window(self.window_s)]
        else:
            g = self._global.ewma
            out += [g, 0.0, 0.0, 0.0, 0.0, g, g]
        hour = (ts % _DAY) / _DAY * _TWO_PI
        day = ((ts + 3 * _DAY) % _WEEK) / _WEEK * _TWO_PI  # 1970-01-01 was a Thursday; Monday = 0
        out += [math.sin(hour), math.cos(hour), math.sin(day), math.cos(day)]
        return out


@dataclass(frozen=True)
class FrameMeta:
    """Per-row context of a training frame: time, entity and the baselines' predictions."""

    ts: np.ndarray  # float64 unix seconds (routing time)
    replica: np.ndarray  # object (str)
    tool: np.ndarray  # object (str)
    ewma: np.ndarray  # the per-(replica, tool) EWMA baseline, as of the row's ts
    last: np.ndarray  # the last-value baseline


def training_frame(events_sorted: Iterable[Mapping[str, Any]], alpha: float = 0.1,
                   window_s: float = 10.0) -> tuple[np.ndarray, np.ndarray, FrameMeta]:
    """Replay calls in ``ts`` order: each row's features (and baselines) as of its routing time,
    computed *before* the row is learned. Events that are not training rows are dropped (as
    ``learn_one`` drops them). Returns ``(X float32 [n, len(FEATURE_NAMES)],
    y float64 latency ms, meta)``. Input not in ``ts`` order is sorted (stably) first."""
    events = [e for e in events_sorted if e.get("replica") is not None and e.get("latency_ms") is not None
              and not e.get("cache_hit") and e.get("method", "tools/call") == "tools/call"]
    if any(events[i]["ts"] > events[i + 1]["ts"] for i in range(len(events) - 1)):
        events.sort(key=lambda e: e["ts"])
    cf = CausalFeatures(alpha, window_s)
    n, width = len(events), len(FEATURE_NAMES)
    X = np.empty((n, width), dtype=np.float32)
    y = np.empty(n, dtype=np.float64)
    ts = np.empty(n, dtype=np.float64)
    replica, tool = np.empty(n, dtype=object), np.empty(n, dtype=object)
    ewma_col, last_col = FEATURE_NAMES.index(EWMA_FEATURE), FEATURE_NAMES.index(LAST_FEATURE)
    for i, e in enumerate(events):
        X[i] = cf.features(e["replica"], e.get("tool"), e.get("inflight"), e["ts"], e.get("request_bytes"))
        y[i], ts[i], replica[i], tool[i] = e["latency_ms"], e["ts"], e["replica"], e.get("tool") or ""
        cf.learn_one(e)
    meta = FrameMeta(ts, replica, tool, X[:, ewma_col].astype(np.float64), X[:, last_col].astype(np.float64))
    return X, y, meta
