"""The cache benchmark's replay: a trace against a simulated upstream, a cache and a prefetcher.

Calls are replayed in time order. The upstream answers as recorded: a call's answer is its
``result`` in the trace; a prefetch's answer is the key's recorded answer nearest in time (a key
the trace never calls answers nothing, and such a prefetch is never used). The latency of an upstream call is simulated, deterministic per (tool,
arguments, time): lognormal, σ = 0.5, around a per-tool median between 50 and 400 ms; a hit costs
``HIT_MS``.

The cache is the proxy's own (``proxy/cache``: ``lru``, ``s3fifo``, ``sieve``), holding every
result at size 1, so ``capacity`` counts entries; keys are the proxy's (server + tool + canonical
arguments), shared by every session. Only safe calls are looked up and stored; every call feeds
the predictors. A prefetch is issued when the call that triggered it returns, for a predicted safe
call not fresh in the cache, and lands in the cache marked *prefetched* when its own upstream call
would have returned; a client call that finds it earlier waits for the rest (counted a hit). A
prefetch is *used* when a client call first hits it (any session: the cache is shared).

``predictions`` runs a predictor over the trace once — it learns from every call whatever the cache
does — and records, before each call, the predicted top-3 tools and, after it, the candidate
prefetches with their confidences; ``simulate`` then replays the cache for any threshold cheaply.
``belady`` is the offline optimum at the same capacity (no prefetch, no TTL: it evicts the entry
needed furthest in the future, and knows when a result changes); ``ceilings`` are the trace's upper
bounds.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from only1mcp.jobs.bench._report import percentile
from only1mcp.jobs.sim.traces import TraceCall
from only1mcp.models.prefetch import (
    AdaptiveTTL, NextCallPredictor, NextToolModel, SessionStore, WriteInvalidation, recent_arguments, result_values,
)
from only1mcp.prefetch import value_key
from only1mcp.proxy.cache import cache_key, make_cache

__all__ = ["Call", "Upstream", "Predictions", "prepare", "predictions", "simulate", "belady", "ceilings", "HIT_MS",
           "SERVER"]

HIT_MS = 0.1
SERVER = "trace"  # the one upstream server of a replay (the cache key's server part)
_IDLE_S = 1800.0  # a session idle this long has ended: its memory is dropped


@dataclass(frozen=True)
class Call:
    index: int
    session: str
    ts: float
    tool: str
    args: dict[str, Any] = field(hash=False)
    key: str = ""
    digest: str | None = None
    safe: bool = False
    latency_ms: float = 0.0
    result: str | None = None
    client: str = ""  # the trace's client ("" when it names none): the learned policy keeps constants per client


def _unit(*parts: Any) -> float:
    """A deterministic uniform in [0, 1) from ``parts``."""
    h = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def upstream_latency_ms(tool: str, key: str, t: float) -> float:
    median = 50.0 * 2 ** (3 * _unit("median", tool))  # 50 … 400 ms per tool
    z = _normal(_unit("call", key, round(t, 3)))
    return median * math.exp(0.5 * z)


def _normal(u: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(max(u, 1e-9), 1 - 1e-9))


def prepare(trace: Sequence[TraceCall], safe: Callable[[str], bool]) -> list[Call]:
    """Trace calls with their cache key, result digest, safety and simulated upstream latency."""
    out = []
    for i, c in enumerate(trace):
        key = cache_key(SERVER, c.tool, c.args)
        digest = None if c.result is None else hashlib.blake2b(c.result.encode(), digest_size=8).hexdigest()
        out.append(Call(i, c.session, c.ts, c.tool, c.args, key, digest, bool(safe(c.tool)),
                        upstream_latency_ms(c.tool, key, c.ts), c.result, c.client or ""))
    return out


class Upstream:
    """The recorded answers per key, for prefetches (see the module doc)."""

    def __init__(self, calls: Sequence[Call]) -> None:
        self._times: dict[str, list[float]] = {}
        self._digests: dict[str, list[str | None]] = {}
        for c in calls:
            self._times.setdefault(c.key, []).append(c.ts)
            self._digests.setdefault(c.key, []).append(c.digest)

    def answer(self, key: str, t: float) -> str | None:
        """The recorded answer nearest in time to ``t`` (results change seldom between two records;
        the nearer one is the likelier to be what the upstream said at ``t``)."""
        times = self._times.get(key)
        if not times:
            return None
        i = bisect.bisect_right(times, t)
        if i == len(times) or (i > 0 and t - times[i - 1] <= times[i] - t):
            i -= 1
        return self._digests[key][i]


@dataclass
class Predictions:
    """What a predictor said over a trace: top-3 tools before each call (None: a session's first),
    candidate prefetches after each call, most confident first."""

    kind: str
    top: list[list[str] | None]
    candidates: list[list[tuple[str, str, float, tuple[str, ...]]]]  # (key, tool, confidence, argument values)
    learn_us: float = 0.0  # mean CPU time per call of learning + predicting

    def accuracy(self, calls: Sequence[Call]) -> tuple[float | None, float | None]:
        pairs = [(top, c.tool) for top, c in zip(self.top, calls) if top is not None]
        if not pairs:
            return None, None
        return (sum(t[:1] == [tool] for t, tool in pairs) / len(pairs),
                sum(tool in t[:3] for t, tool in pairs) / len(pairs))


def predictions(calls: Sequence[Call], kind: str, k: int = 3, floor: float = 0.05) -> Predictions:
    """Run the ``learned`` predictor (variable-order Markov + argument model) or the ``markov1``
    baseline (order-1 Markov, the top tool only, the session's latest values by argument name) over
    the trace, prequentially (each prediction from earlier calls only)."""
    import time

    top: list[list[str] | None] = []
    candidates: list[list[tuple[str, str, float, tuple[str, ...]]]] = []
    safe_tools = {c.tool for c in calls if c.safe}
    began = time.process_time()
    if kind == "learned":
        predictor = NextCallPredictor(sessions=SessionStore(idle_s=_IDLE_S))
        store = predictor.sessions
    elif kind == "markov1":
        model, store = NextToolModel(order=1), SessionStore(idle_s=_IDLE_S)
    else:
        raise ValueError(f"unknown predictor {kind!r}")
    for i, c in enumerate(calls):
        if i % 200 == 0:
            store.expire(c.ts)
        memory = store.peek(c.session)
        history = list(memory.history) if memory else []
        if kind == "learned":
            top.append([t for t, _ in predictor.tools.predict_one(history, k)] if memory else None)
            predictor.learn_one(c.session, c.tool, c.args, c.result, c.ts, client=c.client)
            found = predictor.predict_one(c.session, k, eligible=safe_tools.__contains__, min_confidence=floor)
            candidates.append([(cache_key(SERVER, p.tool, p.args), p.tool, p.confidence, _values(p.args))
                               for p in found])
        else:
            top.append([t for t, _ in model.predict_one(history, k)] if memory else None)
            model.learn_one(history, c.tool)
            memory = store.get(c.session, c.ts)
            memory.observe(c.tool, c.args, c.result, c.ts)
            out = []
            for tool, p in model.predict_one(list(memory.history), 1):
                args = recent_arguments(memory, tool) if tool in safe_tools and tool in memory.called else None
                if args is not None and p >= floor:
                    out.append((cache_key(SERVER, tool, args), tool, p, _values(args)))
            candidates.append(out)
    per_call = 1e6 * (time.process_time() - began) / max(1, len(calls))
    return Predictions(kind, top, candidates, round(per_call, 1))


class _Cached:
    __slots__ = ("digest", "prefetched", "used", "ready")

    def __init__(self, digest: str | None, prefetched: bool, ready: float) -> None:
        self.digest, self.prefetched, self.used, self.ready = digest, prefetched, False, ready


def _peek(cache: Any, key: str, now: float) -> Any:
    """The live entry under ``key`` without touching the policy's order, or None (``get`` would count
    a hit and move the entry). Reads the cache's index: the benchmark's business only."""
    entry = cache._entries.get(key)
    return None if entry is None or entry.expired(now) else entry


class _Replay:
    """One replay's cache, learners and counters (``simulate`` runs it)."""

    def __init__(self, policy: str, capacity: int, ttl: float, adaptive: AdaptiveTTL | None,
                 invalidation: WriteInvalidation | None) -> None:
        self.cache = make_cache(policy, capacity) if policy != "none" else None
        self.ttl_of = adaptive.predict_one if adaptive is not None else (lambda tool: ttl)
        self.adaptive, self.invalidation = adaptive, invalidation
        self.by_value: dict[str, set[str]] = {}  # argument value → every key stored with it (cached or no longer)
        self.tool_of: dict[str, str] = {}
        self.pending: dict[str, tuple[str, str, str | None]] = {}  # key → (write, read, answer cached then)
        self.counts = dict.fromkeys(("safe", "hits", "stale", "issued", "used", "upstream", "invalidated"), 0)

    def store(self, key: str, tool: str, values: Sequence[str], entry: _Cached, now: float) -> None:
        assert self.cache is not None
        self.cache.put(key, entry, 1, self.ttl_of(tool), now, tool)
        self.answered(key, tool, entry.digest, entry.ready)
        if self.invalidation is not None:
            self.tool_of[key] = tool
            for value in values:
                self.by_value.setdefault(value, set()).add(key)

    def answered(self, key: str, tool: str, digest: str | None, at: float) -> None:
        """The upstream answered ``key``: the learners compare it with what they knew."""
        if digest is None:
            return
        if self.adaptive is not None:
            self.adaptive.learn_one(tool, key, digest, at)
        pending = self.pending.pop(key, None)
        if pending is not None and pending[2] is not None and self.invalidation is not None:
            self.invalidation.learn_one(pending[0], pending[1], digest != pending[2])

    def write(self, tool: str, values: Sequence[str], now: float) -> None:
        """An unsafe call: the reads sharing an argument value with it may have changed. A cached one
        is remembered for the invalidation model to learn from its next answer, and dropped if the
        model says (write, read) changes things; then, cached or not, its last answer makes no TTL
        pair with the next one (a change the write explains says nothing of the tool's TTL)."""
        assert self.cache is not None and self.invalidation is not None
        for value in values:
            for key in self.by_value.get(value, ()):
                read = self.tool_of[key]
                drop = self.invalidation.invalidates(tool, read)
                entry = _peek(self.cache, key, now)
                if entry is not None:
                    self.pending[key] = (tool, read, entry.value.digest)
                    if drop:
                        self.cache.put(key, None, 0, 0.0, now, read)  # a TTL of 0 drops the entry
                        self.counts["invalidated"] += 1
                if drop and self.adaptive is not None:
                    self.adaptive.forget(key)


def _values(args: dict[str, Any]) -> tuple[str, ...]:
    return tuple(value_key(v) for v in args.values())


def simulate(calls: Sequence[Call], upstream: Upstream, policy: str, capacity: int, ttl: float,
             adaptive: AdaptiveTTL | None = None, prefetch: Predictions | None = None,
             threshold: float = math.inf, max_prefetch: int = 1,
             invalidation: WriteInvalidation | None = None) -> dict[str, Any]:
    """Replay ``calls`` through a ``policy`` cache (``none``: no cache) of ``capacity`` entries;
    TTL fixed, or learned by ``adaptive``; prefetching ``prefetch``'s candidates with confidence
    ≥ ``threshold`` (at most ``max_prefetch`` per call); dropping entries a write may have changed
    when ``invalidation`` says so. Counts and latencies.

    A hit is a call answered from the cache with the result the upstream would have given; one
    answered with an outdated result is *stale*, not a hit. A prefetch is *used* when a client call
    first hits it."""
    replay = _Replay(policy, capacity, ttl, adaptive, invalidation)
    cache, counts = replay.cache, replay.counts
    safe_tools = {c.tool for c in calls if c.safe}  # a prefetch of anything else is refused, whoever proposed it
    latencies = []
    for c in calls:
        t, latency = c.ts, c.latency_ms
        if c.safe:
            counts["safe"] += 1
            entry = cache.get(c.key, t) if cache is not None else None
            if entry is not None:
                latency = max(HIT_MS, (entry.ready - t) * 1000.0)
                fresh = entry.digest == c.digest
                counts["hits" if fresh else "stale"] += 1
                if entry.prefetched and not entry.used:
                    entry.used = True
                    counts["used"] += fresh
            else:
                counts["upstream"] += 1
                if cache is not None:
                    replay.store(c.key, c.tool, _values(c.args), _Cached(c.digest, False, t), t)
        else:
            counts["upstream"] += 1
            if cache is not None and invalidation is not None:
                replay.write(c.tool, _values(c.args), t)
        latencies.append(latency)
        if prefetch is None or cache is None:
            continue
        done, sent = t + latency / 1000.0, 0
        for key, tool, confidence, values in prefetch.candidates[c.index]:
            if confidence < threshold or sent >= max_prefetch:
                break  # candidates come most confident first
            if tool not in safe_tools or _peek(cache, key, done) is not None:
                continue
            ready = done + upstream_latency_ms(tool, key, done) / 1000.0
            replay.store(key, tool, values, _Cached(upstream.answer(key, done), True, ready), done)
            sent += 1
            counts["issued"] += 1
            counts["upstream"] += 1
    return _metrics(counts, latencies)


def _metrics(counts: dict[str, int], latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    safe, issued, used = counts["safe"], counts["issued"], counts["used"]
    return {
        "safe_calls": safe, "hits": counts["hits"], "hit_rate": round(counts["hits"] / safe, 4) if safe else None,
        "stale_hits": counts["stale"], "stale_rate": round(counts["stale"] / safe, 4) if safe else None,
        "prefetch_issued": issued, "prefetch_used": used,
        "prefetch_precision": round(used / issued, 4) if issued else None,
        "extra_upstream_calls": round((issued - used) / safe, 4) if safe else None,
        "upstream_calls": counts["upstream"], "invalidations": counts.get("invalidated", 0),
        "latency_mean_ms": round(sum(ordered) / len(ordered), 2) if ordered else None,
        "latency_p95_ms": round(percentile(ordered, 95), 2) if ordered else None,
    }


def belady(calls: Sequence[Call], capacity: int) -> dict[str, Any]:
    """The offline optimum without prefetch: on a miss, keep the ``capacity`` entries whose next
    use comes soonest (the new one bypasses the cache if it is the furthest); an entry is useful
    only until its key is next asked for with another result."""
    safe = [c for c in calls if c.safe]
    following = [math.inf] * len(safe)
    seen: dict[str, int] = {}
    for i in range(len(safe) - 1, -1, -1):
        j = seen.get(safe[i].key)
        following[i] = j if j is not None and safe[j].digest == safe[i].digest else math.inf
        seen[safe[i].key] = i
    cached: dict[str, float] = {}  # key → its next use
    heap: list[tuple[float, str]] = []  # (−next use, key), lazily cleaned
    hits = 0
    latencies = [c.latency_ms for c in calls if not c.safe]
    for i, c in enumerate(safe):
        nxt = following[i]
        if cached.get(c.key, -1.0) == i:
            hits += 1
            latencies.append(HIT_MS)
        else:
            latencies.append(c.latency_ms)
            cached.pop(c.key, None)
        if nxt == math.inf:
            cached.pop(c.key, None)
            continue
        if c.key not in cached and len(cached) >= capacity:
            while heap and cached.get(heap[0][1]) != -heap[0][0]:
                heapq.heappop(heap)
            if not heap or -heap[0][0] <= nxt:
                continue  # the newcomer is needed last: bypass
            del cached[heapq.heappop(heap)[1]]
        cached[c.key] = nxt
        heapq.heappush(heap, (-nxt, c.key))
    counts = {"safe": len(safe), "hits": hits, "stale": 0, "issued": 0, "used": 0, "upstream": len(calls) - hits}
    return _metrics(counts, latencies)


def ceilings(calls: Sequence[Call]) -> dict[str, Any]:
    """The trace's upper bounds on the hit rate over safe calls: an infinite cache told when a result
    changes (a hit when the key was asked before and its result is unchanged); plus perfect prefetch
    of every call whose argument values all appeared earlier in its session (in arguments or
    results); and the same restricted to tools the session had already called (the eligibility
    rule every prefetch here obeys)."""
    last: dict[str, str | None] = {}
    seen_values: dict[str, set[str]] = {}
    called: dict[str, set[str]] = {}
    safe = infinite = perfect = eligible = 0
    for c in calls:
        values = seen_values.setdefault(c.session, set())
        tools = called.setdefault(c.session, set())
        if c.safe:
            safe += 1
            hit = c.key in last and last[c.key] == c.digest
            known = all(value_key(v) in values for v in c.args.values())
            infinite += hit
            perfect += hit or known
            eligible += hit or (known and c.tool in tools)
            last[c.key] = c.digest
        values.update(value_key(v) for v in c.args.values())
        values.update(value_key(v) for _, v in result_values(c.result, max_values=256))
        tools.add(c.tool)
    rate = (lambda n: round(n / safe, 4) if safe else None)
    return {"infinite_cache": rate(infinite), "infinite_cache_perfect_prefetch": rate(perfect),
            "infinite_cache_perfect_prefetch_eligible": rate(eligible), "safe_calls": safe}
