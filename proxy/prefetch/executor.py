"""The prefetch executor: applies ``PrefetchDecision`` records from the learning loop by running the
predicted call in the background and storing its answer in the response cache for the session's client.

``apply`` is called by the decision subscriber for each record and answers (outcome, why) at once:

* ``rejected_stale``: past ``valid_until`` (it never runs later either: nothing is queued);
* ``rejected_unknown``: no such tool (or not of the named server), or no live session with that hash
  remembered here (another proxy's session, or one that ended);
* ``rejected_policy``: the tool is not eligible — not safe to repeat *and* cacheable (the rule retries and
  the cache follow: ``Calls.safety``; an idempotent write is safe to repeat but never cached, so running
  it ahead would only be a write the client did not ask for), opted out (``[[servers]] prefetch = false``,
  ``[servers.tools.NAME] prefetch = false``), or not yet called by this session;
* ``vetoed``: no filling of the arguments from the session's memory (or none whose keyed hash is the
  decision's ``args_hash``), or confidence × the filling's confidence under ``min_confidence``;
* ``rejected_duplicate``: the same call of the same client is in flight or cached and fresh;
* ``rejected_limit``: the budget (``max_concurrent``, ``max_share``) is spent;
* ``applied``: the call runs now, through the pool (routing, health, timeouts; at most one retry). It
  emits no request event (it is not a client's call) and counts as ``issued``.

A stored prefetch answer is marked; the first client call it answers counts ``used`` (and carries
``prefetch_hit``); one that expires, is evicted or is invalidated first counts ``wasted``.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from only1mcp.events import PrefetchDecision
from only1mcp.proxy.cache import cache_key, scoped_key
from only1mcp.proxy.catalog import Entry
from only1mcp.proxy.prefetch.budget import Budget
from only1mcp.proxy.prefetch.learn import SessionLearner
from only1mcp.proxy.routing import RouteRequest

if TYPE_CHECKING:
    from only1mcp.proxy.gateway import Gateway
    from only1mcp.proxy.sessions import ClientSession

__all__ = ["PrefetchExecutor", "COUNTERS", "MAX_MARKED", "FILLINGS"]

log = logging.getLogger("only1mcp.prefetch")

COUNTERS = ("issued", "stored", "used", "joined", "wasted", "vetoed", "failed", "discarded", "limited",
            "duplicates")
MAX_MARKED = 10_000  # prefetched entries awaiting their first use; past it the oldest count as wasted
FILLINGS = 4  # argument fillings the model proposes per decision (an args_hash is checked against each)
_SWEEP_S = 1.0  # housekeeping: unused entries lost, idle memories expired


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[dict[str, Any] | None]
    session: str  # the session hash, for the admin view's counts
    stored: str = ""  # the key the answer went under (the client's, or the shared one for a public answer)


class PrefetchExecutor:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        settings = gateway.settings.prefetch
        self.learner = SessionLearner(settings, gateway.telemetry.session_hash)
        self.budget = Budget(settings.max_concurrent, settings.max_share, settings.window_s)
        self.learner.client_calls = self.budget.client_call
        self.learner.teaches = self.teachable
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.pending: dict[str, _Pending] = {}  # scoped cache key → the prefetch fetching it
        self.marked: dict[str, float] = {}  # cache key of a stored, unused prefetch → expiry (loop clock)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="only1mcp-prefetch")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        self._sweeper = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.learner.close()

    def configure(self) -> None:
        """Follow a reload's [prefetch] (enabled itself changes at restart only)."""
        settings = self.gateway.settings.prefetch
        self.learner.configure(settings)
        self.budget.configure(settings.max_concurrent, settings.max_share, settings.window_s)

    # -- the call path (Calls) -------------------------------------------------------------------------
    def observe(self, session: ClientSession, tool: str, arguments: Any, result: Any) -> None:
        self.learner.observe(session, tool, arguments, result)

    def used(self, mine: str, shared: str, context: Any) -> None:
        """A client call was answered from the cache: if by a prefetched entry, its first use."""
        marked = self.marked
        if marked.pop(mine, None) is None and marked.pop(shared, None) is None:
            return
        self.counts["used"] += 1
        if context is not None:
            context.prefetch_hit = True

    async def join(self, mine: str, context: Any) -> dict[str, Any] | None:
        """Wait for the prefetch fetching ``mine``; its answer, or None if it failed (the caller goes on)."""
        pending = self.pending.get(mine)
        if pending is None:
            return None
        result = await asyncio.shield(pending.future)  # a client that gives up does not cancel the prefetch
        if result is None:
            return None
        self.marked.pop(pending.stored or mine, None)
        self.counts["used"] += 1
        self.counts["joined"] += 1
        if context is not None:
            context.cache_hit = context.prefetch_hit = True
        return result

    def end_session(self, session: ClientSession) -> None:
        self.learner.end(session)

    # -- decisions -------------------------------------------------------------------------------------
    def apply(self, record: PrefetchDecision) -> tuple[str, str]:
        """Check one decision and start its call, or say why not (see the module doc)."""
        now_wall = time.time()
        if not record.valid_until > now_wall:
            return "rejected_stale", (f"prefetch of {record.tool} stale: valid_until passed "
                                      f"{now_wall - record.valid_until:.1f}s ago")
        gateway = self.gateway
        entry = gateway.catalog.lookup("tools", record.tool)
        if entry is None or (record.server is not None and record.server != entry.server):
            return "rejected_unknown", f"prefetch of unknown tool {record.tool!r}" + (
                f" of server {record.server!r}" if record.server is not None else "")
        found = self.learner.memory(record.session_id)
        if found is None:
            return "rejected_unknown", f"prefetch for session {record.session_id[:8]}…: not a live session here"
        session, memory = found
        refusal = self.ineligible(entry)
        if refusal:
            return "rejected_policy", f"prefetch of {record.tool}: {refusal}"
        if record.tool not in memory.called:
            return "rejected_policy", f"prefetch of {record.tool}: not yet called in this session"
        filling, why = self._fill(memory, record)
        if filling is None:
            self.counts["vetoed"] += 1
            return "vetoed", f"prefetch of {record.tool}: {why}"
        arguments, args_confidence = filling
        settings = gateway.settings.prefetch
        confidence = record.confidence * args_confidence
        if confidence < settings.min_confidence:
            self.counts["vetoed"] += 1
            return "vetoed", (f"prefetch of {record.tool}: confidence {record.confidence:.2f} × arguments "
                              f"{args_confidence:.2f} = {confidence:.2f} < min_confidence {settings.min_confidence:g}")
        return self._issue(entry, session, record.session_id, arguments)

    def teachable(self, tool: str) -> bool:
        """Whether the argument model should learn this exposed tool's calls: it could be prefetched."""
        entry = self.gateway.catalog.lookup("tools", tool)
        return entry is not None and not self.ineligible(entry)

    def ineligible(self, entry: Entry) -> str:
        """Why a tool may not be prefetched, or "" if it may."""
        pool = self.gateway.pools.get(entry.server)
        if pool is None:
            return f"server {entry.server} is gone"
        if not pool.settings.prefetch:
            return f"server {entry.server} has prefetch = false"
        calls = self.gateway.calls
        override, retry_safe, cache_safe, ttl = calls.safety(entry)
        if override is not None and not override.prefetch:
            return f"[servers.tools.{entry.upstream_name}] prefetch = false"
        if not retry_safe:
            return "not safe to repeat (neither readOnlyHint nor idempotentHint, nor safe = true)"
        if not cache_safe or ttl <= 0 or calls.cache is None:
            return "its results are not cached (not read-only, no cache_ttl / default_ttl, or no cache)"
        return ""

    def _fill(self, memory: Any, record: PrefetchDecision) -> tuple[tuple[dict[str, Any], float] | None, str]:
        """The arguments to call with and their confidence, from the session's memory; else None and why.

        With ``args_hash`` the worker predicted a whole call it saw: the filling whose keyed hash matches it
        (among the model's fillings and the tool's latest arguments in this session) is that call, so its
        confidence is 1; no match is a veto."""
        fillings = self.learner.model.predict_one(memory, record.tool, FILLINGS)
        if record.args_hash is None:
            if not fillings:
                return None, "no filling of its arguments from this session's memory"
            return fillings[0], ""
        latest = memory.latest.get(record.tool)
        candidates = [args for args, _ in fillings] + ([latest.args] if latest is not None else [])
        hashed = self.gateway.telemetry.hash
        for args in candidates:
            if hashed(args) == record.args_hash:
                return (args, 1.0), ""
        return None, f"none of {len(candidates)} fillings from this session's memory has the decision's args_hash"

    def _issue(self, entry: Entry, session: ClientSession, session_hash: str,
               arguments: dict[str, Any]) -> tuple[str, str]:
        calls = self.gateway.calls
        cache = calls.cache
        assert cache is not None  # ineligible() refused otherwise
        loop = asyncio.get_running_loop()
        now = loop.time()
        override, _, _, _ = calls.safety(entry)
        shared = cache_key(entry.server, entry.upstream_name, arguments)
        mine = scoped_key(shared, calls.client_key(session))
        shared_scope = override is not None and override.cache_scope == "shared"
        if mine in self.pending or cache.live(mine, now) or (shared_scope and cache.live(shared, now)):
            self.counts["duplicates"] += 1
            return "rejected_duplicate", f"prefetch of {entry.exposed}: the same call is in flight or cached"
        refusal = self.budget.refusal(now)
        if refusal:
            self.counts["limited"] += 1
            return "rejected_limit", f"prefetch of {entry.exposed}: {refusal}"
        self.budget.start(now)
        self.counts["issued"] += 1
        pending = self.pending[mine] = _Pending(loop.create_future(), session_hash)
        # A fresh context: the prefetch is nobody's request (no request id, no request event).
        task = loop.create_task(self._run(entry, session, arguments, shared, mine, shared_scope, pending),
                                context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return "applied", ""

    async def _run(self, entry: Entry, session: ClientSession, arguments: dict[str, Any], shared: str, mine: str,
                   shared_scope: bool, pending: _Pending) -> None:
        """The prefetch itself; never raises (a failure is counted and logged at debug level)."""
        result: dict[str, Any] | None = None
        try:
            gateway = self.gateway
            pool = gateway.pools.get(entry.server)
            if pool is None:
                raise LookupError(f"server {entry.server} is gone")
            override, retry_safe, _, ttl = gateway.calls.safety(entry)
            route = RouteRequest(entry.server, "tools/call", entry.upstream_name, session.id)
            answer = await pool.call("tools/call", {"name": entry.upstream_name, "arguments": arguments}, route,
                                     timeout=override.timeout if override is not None else None,
                                     retry_safe=retry_safe, max_attempts=2)
            if answer.get("isError") or gateway.calls.cache is None or session.ended:
                self.counts["discarded"] += 1
                return
            loop = asyncio.get_running_loop()
            stored, stored_ttl = gateway.calls.store(entry, answer, shared, mine, shared_scope, ttl, loop.time())
            if stored_ttl <= 0:  # a ttlMs 0 hint: not to be kept
                self.counts["discarded"] += 1
                return
            self.counts["stored"] += 1
            pending.stored = stored
            self._mark(stored, loop.time() + stored_ttl)
            result = answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an upstream error, a timeout, a reload that removed the server
            self.counts["failed"] += 1
            log.debug("prefetch of %s failed: %s: %s", entry.exposed, type(exc).__name__, exc)
        finally:
            self.budget.finish()
            if self.pending.get(mine) is pending:
                del self.pending[mine]
            if not pending.future.done():
                pending.future.set_result(result)

    def _mark(self, key: str, expires: float) -> None:
        marked = self.marked
        marked.pop(key, None)
        marked[key] = expires
        while len(marked) > MAX_MARKED:
            del marked[next(iter(marked))]
            self.counts["wasted"] += 1

    # -- housekeeping ----------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Count as wasted the prefetched entries gone unused (expired, evicted, invalidated); expire idle
        memories. How many were wasted."""
        cache = self.gateway.calls.cache
        now = asyncio.get_running_loop().time()
        lost = [key for key, expires in self.marked.items()
                if now >= expires or cache is None or not cache.live(key, now)]
        for key in lost:
            del self.marked[key]
        self.counts["wasted"] += len(lost)
        self.learner.expire(time.monotonic())
        return len(lost)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                self.sweep()
            except Exception:  # housekeeping must go on
                log.exception("prefetch housekeeping failed")

    # -- what /metrics and /admin/prefetch read (counts only: never arguments nor results) --------------
    def metrics(self) -> dict[str, float]:
        return {**{key: float(value) for key, value in self.counts.items()}, "inflight": float(self.budget.inflight),
                "sessions": float(len(self.learner.store)), "entries": float(len(self.marked))}

    def snapshot(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        issued = self.counts["issued"]
        return {"enabled": True, "settings": dataclasses.asdict(self.gateway.settings.prefetch),
                "counts": dict(self.counts),
                "precision": round(self.counts["used"] / issued, 4) if issued else None,
                "budget": self.budget.snapshot(now), "unused_entries": len(self.marked),
                "memory": self.learner.stats()}
