"""The decision channel, proxy side: every proxy reads every decision topic and applies what it reads.

Broadcast, not a consumer group: the subscriber assigns itself every partition of every
topic in ``[decisions] topics`` (topics that do not exist yet are looked for again every
few seconds) and, at start, seeks each partition ``lookback`` records back from its end, so
a restarted proxy applies the newest decisions at once. Then it reads forever. When the
broker is away it reconnects quietly with backoff; the proxy keeps serving on what it has
(decisions run out at their ``valid_until`` and routing falls back), and nothing here ever
waits on the call path.

Each record is decoded by the type its topic carries (``only1mcp.events.DECISION_TYPES``)
and checked against the running gateway before it is applied: a record that does not
decode, names an unknown server, tool or replica, targets a server whose policy does not
take it, or is past its ``valid_until`` is counted by outcome, logged (rate-limited) and
never applied. Applying is one reference swap inside the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from only1mcp.events import DECISION_TYPES, EventDecodeError, PrefetchDecision, Remediation, RoutingWeights
from only1mcp.streaming import DecisionSettings

if TYPE_CHECKING:
    from only1mcp.proxy.gateway import Gateway

__all__ = ["DecisionSubscriber", "OUTCOMES", "kind_of"]

log = logging.getLogger("only1mcp.decisions")

OUTCOMES = ("received", "applied", "alert_only", "rejected_decode", "rejected_unknown", "rejected_policy",
            "rejected_stale", "rejected_limit", "rejected_duplicate", "vetoed")
# Prefetch outcomes that are the executor doing its job, not a problem with the record: logged at info.
_ROUTINE = frozenset({"vetoed", "rejected_duplicate", "rejected_limit"})
_LOG_EVERY_S = 10.0


def kind_of(topic: str) -> str:
    """The decision kind a topic carries (its record type, e.g. ``routing_weights``)."""
    cls = DECISION_TYPES.get(topic)
    if cls is None:
        return "unknown"
    return cls.__dataclass_fields__["type"].default  # type: ignore[attr-defined, no-any-return]


class DecisionSubscriber:
    """Reads the decision topics with aiokafka and applies each record to the gateway's pools."""

    def __init__(self, gateway: Gateway, settings: DecisionSettings, bootstrap: str, *,
                 discover_interval: float = 2.0, refresh_interval: float = 5.0, fetch_wait_ms: int = 200,
                 consumer_options: dict[str, Any] | None = None) -> None:
        if not bootstrap:
            raise ValueError("DecisionSubscriber needs a bootstrap address")
        self.gateway = gateway
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = tuple(settings.topics)
        self.discover_interval = discover_interval  # while a topic is missing or nothing is assigned
        self.refresh_interval = refresh_interval  # otherwise (is the broker there? were partitions added?)
        self.fetch_wait_ms = fetch_wait_ms
        self.consumer_options = dict(consumer_options or {})
        self.counts: dict[tuple[str, str], int] = {}
        self.last_rejections: dict[str, str] = {}  # "kind/outcome" → why the newest such record was refused
        self.newest: dict[str, float] = {}  # server → ts (unix) of the newest applied decision
        self.connected = False
        self.last_error = ""
        self.assigned: list[str] = []  # "topic/partition", for the admin API
        self.missing: list[str] = []  # configured topics the broker does not have (yet)
        self._positions: dict[Any, int] = {}  # TopicPartition → next offset to read
        self._task: asyncio.Task[None] | None = None
        self._logged_at: dict[str, float] = {}
        for topic in self.topics:
            if topic not in DECISION_TYPES:
                log.warning("decisions: topic %s carries no known decision type (known: %s); its records will be "
                            "rejected", topic, ", ".join(sorted(DECISION_TYPES)))

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="only1mcp-decisions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5.0)
        self.connected = False

    # -- what the admin API and /metrics read ------------------------------------------------
    def ages(self) -> dict[str, float]:
        """Seconds since the newest applied decision was made, per server still configured."""
        now = time.time()
        return {server: max(0.0, now - ts) for server, ts in self.newest.items() if server in self.gateway.pools}

    def status(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "topics": list(self.topics), "connected": self.connected,
                "assigned": list(self.assigned), "missing_topics": list(self.missing),
                "last_error": self.last_error or None, "last_rejections": dict(self.last_rejections),
                "counts": {f"{kind}/{outcome}": n for (kind, outcome), n in sorted(self.counts.items())}}

    # -- applying one record -----------------------------------------------------------------
    def handle(self, topic: str, value: bytes | None) -> str:
        """Decode and apply one record; return its outcome (also counted)."""
        kind = kind_of(topic)
        self._count(kind, "received")
        cls = DECISION_TYPES.get(topic)
        if cls is None:
            return self._reject(kind, "rejected_decode", f"topic {topic} carries no known decision type")
        try:
            record = cls.from_json(value if value is not None else b"")
        except EventDecodeError as exc:
            return self._reject(kind, "rejected_decode", f"a record on {topic} does not decode: {exc}")
        except Exception as exc:  # the decoder promises EventDecodeError; a bug must not stop the channel
            return self._reject(kind, "rejected_decode", f"a record on {topic} does not decode: "
                                                         f"{type(exc).__name__}: {exc}")
        if isinstance(record, RoutingWeights):
            outcome, why = self._apply_weights(record)
        elif isinstance(record, Remediation):  # proxy/remediation.py checks it against the pool, applies it
            outcome, why = self.gateway.remediations.apply(record)
        elif isinstance(record, PrefetchDecision):  # proxy/prefetch: fills the arguments, runs it in the background
            prefetch = self.gateway.prefetch
            outcome, why = (prefetch.apply(record) if prefetch is not None else
                            ("rejected_policy", "prefetch decision, but [prefetch] enabled = false here"))
        else:  # a decision kind this proxy cannot apply yet
            outcome, why = "rejected_unknown", f"no handler for {type(record).__name__}"
        if outcome not in ("applied", "alert_only"):
            return self._reject(kind, outcome, why)
        self._count(kind, outcome)
        return outcome

    def _apply_weights(self, record: RoutingWeights) -> tuple[str, str]:
        gateway = self.gateway
        pool = gateway.pools.get(record.server)
        if pool is None:
            return "rejected_unknown", f"routing weights for unknown server {record.server!r}"
        policy = getattr(pool.policy, "inner", pool.policy)  # under a Sticky wrapper
        if policy.name not in ("learned", "weighted"):
            return "rejected_policy", (f"routing weights for server {record.server}, which routes with "
                                       f"{pool.policy.name}, not learned")
        upstream = None
        if record.tool is not None:
            if policy.name == "weighted":
                return "rejected_policy", (f"routing weights for tool {record.tool}: server {record.server} "
                                           f"routes with weighted, which takes server-wide weights only")
            entry = gateway.catalog.lookup("tools", record.tool)
            if entry is None or entry.server != record.server:
                return "rejected_unknown", f"routing weights for unknown tool {record.tool!r} of {record.server}"
            upstream = entry.upstream_name
        known = {replica.id for replica in pool.replicas}
        unknown = (set(record.weights) | set(record.predicted_ms)) - known
        if unknown:
            return "rejected_unknown", (f"routing weights for {record.server} name unknown replicas "
                                        f"{', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        now = time.time()
        if not record.valid_until > now:
            return "rejected_stale", (f"routing weights for {record.server} (model {record.model_version}) "
                                      f"stale: valid_until passed {now - record.valid_until:.1f}s ago")
        valid_until = asyncio.get_running_loop().time() + (record.valid_until - now)  # onto the pool's clock
        try:
            if policy.name == "weighted":
                policy.set_weights(record.weights, valid_until, record.model_version)
            else:
                policy.apply(upstream, record.weights, record.predicted_ms, valid_until, record.model_version,
                             record.source, ts=record.ts, valid_until_unix=record.valid_until)
        except ValueError as exc:
            return "rejected_decode", f"routing weights for {record.server} refused: {exc}"
        if record.ts > self.newest.get(record.server, -math.inf):
            self.newest[record.server] = record.ts
        return "applied", ""

    def _count(self, kind: str, outcome: str) -> None:
        key = (kind, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def _reject(self, kind: str, outcome: str, why: str) -> str:
        self._count(kind, outcome)
        self.last_rejections[f"{kind}/{outcome}"] = why  # the log is rate-limited; the admin API is not
        level = logging.INFO if kind == "prefetch" and outcome in _ROUTINE else logging.WARNING
        self._log(f"{kind}/{outcome}", f"decisions: {outcome}: {why}; not applied", level)
        return outcome

    def _log(self, key: str, message: str, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(key, -math.inf) >= _LOG_EVERY_S:
            self._logged_at[key] = now
            log.log(level, message)

    # -- the consumer ------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.2
        while True:
            consumer = self._consumer()
            try:
                await asyncio.wait_for(consumer.start(), 10.0)
            except asyncio.CancelledError:
                await _close(consumer)
                raise
            except Exception as exc:
                await _close(consumer)
                self._down(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away, or a bug: reconnect rather than stop reading
                if self.connected:  # it had worked: try again soon
                    backoff = 0.2
                self._down(exc)
            finally:
                self.connected = False
                await _close(consumer)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        options = {"bootstrap_servers": self.bootstrap, "group_id": None, "enable_auto_commit": False,
                   "auto_offset_reset": "latest", "fetch_max_wait_ms": self.fetch_wait_ms,
                   "request_timeout_ms": 10_000, "retry_backoff_ms": 200, "metadata_max_age_ms": 30_000,
                   "client_id": "only1mcp-decisions", **self.consumer_options}
        return AIOKafkaConsumer(**options)

    def _down(self, exc: BaseException) -> None:
        self.connected = False
        text = str(exc)
        self.last_error = text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"
        self._log("down", f"decisions: broker {self.bootstrap} unavailable ({self.last_error}); routing goes on "
                          f"with the decisions it has, retrying", logging.INFO)

    async def _consume(self, consumer: Any) -> None:
        loop = asyncio.get_running_loop()
        assigned: frozenset[Any] = frozenset()
        next_discovery = 0.0
        while True:
            if loop.time() >= next_discovery:
                # Also the liveness check: aiokafka reconnects by itself, silently; a failed metadata
                # request ends this consumer and the next one starts where this one left off.
                wanted = await asyncio.wait_for(self._discover(consumer), 10.0)
                if wanted != assigned:
                    await self._assign(consumer, wanted)
                    assigned = wanted
                    if assigned:
                        log.info("decisions: reading %d partitions of %s from %s", len(assigned),
                                 ", ".join(sorted({tp.topic for tp in assigned})), self.bootstrap)
                self.connected, self.last_error = True, ""
                quick = self.missing or not assigned
                next_discovery = loop.time() + (self.discover_interval if quick else self.refresh_interval)
            if not assigned:
                await asyncio.sleep(max(0.05, next_discovery - loop.time()))
                continue
            batches = await consumer.getmany(timeout_ms=self.fetch_wait_ms * 2, max_records=1000)
            for tp, records in batches.items():
                for record in records:
                    try:
                        self.handle(tp.topic, record.value)
                    except Exception:  # a bug applying one record must not stop the channel
                        self._log("bug", "decisions: applying a record failed", logging.ERROR)
                        log.debug("decisions: applying a record failed", exc_info=True)
                    self._positions[tp] = record.offset + 1
                await asyncio.sleep(0)  # a long backlog must not hold the loop from the calls

    async def _discover(self, consumer: Any) -> frozenset[Any]:
        """Every partition of every configured topic that exists now."""
        from aiokafka.structs import TopicPartition

        # The consumer's metadata only covers topics it tracks; one request for all topics tells
        # which of ours exist without auto-creating them (aiokafka has no public call for this).
        cluster = await consumer._client.fetch_all_metadata()
        wanted = set()
        missing = []
        for topic in self.topics:
            partitions = cluster.partitions_for_topic(topic)
            if not partitions:
                missing.append(topic)
                continue
            wanted.update(TopicPartition(topic, p) for p in partitions)
        if missing and missing != self.missing:
            log.info("decisions: topics %s do not exist yet; looking again every %.0fs", ", ".join(missing),
                     self.discover_interval)
        self.missing = missing
        return frozenset(wanted)

    async def _assign(self, consumer: Any, wanted: frozenset[Any]) -> None:
        """Assign ``wanted``; each partition resumes where this proxy left it (while the broker still has
        that offset), else starts ``lookback`` records before its end. (A broker restarted with empty
        memory storage whose new log already passed that offset is not told apart: the records before
        it are skipped, and the next published decision is read.)"""
        partitions = sorted(wanted, key=lambda tp: (tp.topic, tp.partition))
        consumer.assign(partitions)
        self.assigned = [f"{tp.topic}/{tp.partition}" for tp in partitions]
        if not partitions:
            return
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        lookback = self.settings.lookback
        for tp in partitions:
            begin, end = beginnings.get(tp, 0), ends.get(tp, 0)
            known = self._positions.get(tp)
            offset = known if known is not None and begin <= known <= end else max(begin, end - lookback)
            consumer.seek(tp, offset)
            self._positions[tp] = offset


async def _close(consumer: Any) -> None:
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(consumer.stop(), 2.0)
