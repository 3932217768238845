"""The specialisation learner: an EMA of latency and of errors per (server, tool, replica).

Pure and I/O-free, river-style (``learn_one`` per event, ``predict`` any time, state to bytes
and back). It learns only from calls that reached an upstream replica: ``tools/call`` events
with a server and a replica, not answered from the cache, whose status is ``ok``, ``error``
or ``timeout`` (the other statuses — unavailable, cancelled, rejected — say nothing about a
replica's speed). Errors and timeouts count as errors, and their latency counts as observed:
a replica that fails fast must not look fast, which is why routing costs divide the latency
by the success rate (models/routing/weights.py ``error_adjusted``).

A key counts once it has ``min_samples`` calls. Keys not seen for ``ttl_s`` seconds of event
time are forgotten by :meth:`prune` (a replica taken out of the configuration must disappear
from the decisions, or the proxy would reject them for naming an unknown replica).

The per-event cost is a few dict operations (the worker calls :meth:`learn_one` for every
record of ``mcp.requests``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from only1mcp.models.routing.weights import Curves, error_adjusted

__all__ = ["ToolEwma", "COUNTED_STATUSES", "ERROR_STATUSES", "counts"]

COUNTED_STATUSES = frozenset({"ok", "error", "timeout"})
ERROR_STATUSES = frozenset({"error", "timeout"})
_STATE_VERSION = 1


def counts(event: Mapping[str, Any]) -> bool:
    """Whether a request event is a call that reached an upstream replica (what routing learns from)."""
    return (event.get("method") == "tools/call" and not event.get("cache_hit")
            and event.get("status") in COUNTED_STATUSES
            and bool(event.get("server")) and bool(event.get("replica")))


class ToolEwma:
    """Per (server, tool, replica): latency EMA (ms), error EMA (0..1), call count, last event time."""

    source = "tool_ewma"

    def __init__(self, alpha: float = 0.1, min_samples: int = 10, ttl_s: float = 600.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], not {alpha!r}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, not {min_samples!r}")
        self.alpha, self.min_samples, self.ttl_s = float(alpha), int(min_samples), float(ttl_s)
        # (server, tool) → replica → [latency_ewma, error_ewma, n, last_ts]
        self._state: dict[tuple[str, str | None], dict[str, list[float]]] = {}
        self.learned = 0

    @property
    def version(self) -> str:
        return f"tool_ewma:a{self.alpha:g}:n{self.min_samples}"

    def learn_one(self, event: Mapping[str, Any]) -> bool:
        """Fold one request event (a dict with RequestEvent's fields); True when it counted."""
        if not counts(event):
            return False
        self.learn_counted(event)
        return True

    def learn_counted(self, event: Mapping[str, Any]) -> None:
        """:meth:`learn_one` for an event already known to count (``counts(event)``): no checks."""
        latency, ts = float(event["latency_ms"]), float(event.get("ts") or 0.0)
        err = 1.0 if event["status"] in ERROR_STATUSES else 0.0
        key = (event["server"], event.get("tool"))
        replicas = self._state.get(key)
        if replicas is None:
            replicas = self._state[key] = {}
        entry = replicas.get(event["replica"])
        if entry is None:
            replicas[event["replica"]] = [latency, err, 1, ts]
        else:
            a = self.alpha
            entry[0] += a * (latency - entry[0])
            entry[1] += a * (err - entry[1])
            entry[2] += 1
            if ts > entry[3]:
                entry[3] = ts
        self.learned += 1

    def learn_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """:meth:`learn_one` over many events, inlined (the worker's hot path); returns how many counted."""
        state, a, counted_statuses, error_statuses = self._state, self.alpha, COUNTED_STATUSES, ERROR_STATUSES
        n = 0
        for event in events:
            get = event.get
            status = get("status")
            if (get("method") != "tools/call" or get("cache_hit") or status not in counted_statuses):
                continue
            server, replica = get("server"), get("replica")
            if not server or not replica:
                continue
            latency, ts = float(event["latency_ms"]), float(get("ts") or 0.0)
            err = 1.0 if status in error_statuses else 0.0
            key = (server, get("tool"))
            replicas = state.get(key)
            if replicas is None:
                replicas = state[key] = {}
            entry = replicas.get(replica)
            if entry is None:
                replicas[replica] = [latency, err, 1, ts]
            else:
                entry[0] += a * (latency - entry[0])
                entry[1] += a * (err - entry[1])
                entry[2] += 1
                if ts > entry[3]:
                    entry[3] = ts
            n += 1
        self.learned += n
        return n

    def predict(self, server: str, tool: str | None) -> dict[str, tuple[float, float, int]]:
        """replica → (latency EMA ms, error EMA, calls), for the replicas with ≥ min_samples calls."""
        replicas = self._state.get((server, tool), {})
        return {rid: (e[0], e[1], int(e[2])) for rid, e in replicas.items() if e[2] >= self.min_samples}

    def keys(self) -> list[tuple[str, str | None]]:
        """Every (server, tool) seen."""
        return list(self._state)

    def curves(self, now: float | None = None) -> Curves:
        """(server, tool) → replica → [cost]: the error-adjusted latency EMA (one value: the EMA
        knows nothing of load), for the replicas with ≥ min_samples calls. A replica seen on the tool
        but with n < min_samples calls is priced between the best known cost (optimism) and its own:
        ``(n × own + (min_samples - n) × best) / min_samples``. So a replica that looks fast or is
        unmeasured is tried until it is measured, rather than left to the proxy's exploration floor
        (a fast replica unlucky early would stay unmeasured as long as the floor takes), while one
        whose first calls were 10x slow stops being tried after one or two, not min_samples."""
        out: Curves = {}
        m = self.min_samples
        for key, replicas in self._state.items():
            known = self.predict(*key)
            if not known:
                continue
            curves = {rid: [error_adjusted(lat, err)] for rid, (lat, err, _) in known.items()}
            best = min(c[0] for c in curves.values())
            for rid, (lat, err, n, _) in replicas.items():
                if rid not in curves:
                    curves[rid] = [(n * error_adjusted(lat, err) + (m - n) * best) / m]
            out[key] = curves
        return out

    def p50(self) -> dict[tuple[str, str | None, str], list[float]]:
        """(server, tool, replica) → [latency EMA]: its plain latency estimate, for live-error tracking."""
        return {(key[0], key[1], rid): [e[0]] for key, replicas in self._state.items()
                for rid, e in replicas.items() if e[2] >= self.min_samples}

    def prune(self, now: float) -> int:
        """Forget the keys whose newest call is older than ``now - ttl_s``; returns how many."""
        cutoff, dropped = now - self.ttl_s, 0
        for key in list(self._state):
            replicas = self._state[key]
            for rid in [rid for rid, e in replicas.items() if e[3] < cutoff]:
                del replicas[rid]
                dropped += 1
            if not replicas:
                del self._state[key]
        return dropped

    # -- state ---------------------------------------------------------------------------------

    def state_to_bytes(self) -> bytes:
        rows = [[server, tool, rid, *entry] for (server, tool), replicas in self._state.items()
                for rid, entry in replicas.items()]
        return orjson.dumps({"v": _STATE_VERSION, "alpha": self.alpha, "min_samples": self.min_samples,
                             "ttl_s": self.ttl_s, "learned": self.learned, "rows": rows})

    @classmethod
    def from_bytes(cls, data: bytes) -> ToolEwma:
        raw = orjson.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != _STATE_VERSION:
            raise ValueError("not a ToolEwma state of a known version")
        learner = cls(raw["alpha"], raw["min_samples"], raw.get("ttl_s", 600.0))
        learner.learned = int(raw.get("learned", 0))
        for server, tool, rid, latency, err, n, ts in raw["rows"]:
            learner._state.setdefault((server, tool), {})[rid] = [float(latency), float(err), int(n), float(ts)]
        return learner
