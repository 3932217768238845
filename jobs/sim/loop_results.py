"""What a learning run of the routing benchmark reads back: the events in the offline store (how
many have landed, what decided each call's routing), the routing weights the worker publishes, and
the latency training job with the model registry it writes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._procs import ProcessGroup

__all__ = ["WeightsWatcher", "classify_decision", "count_events", "registry_metadata", "routing_share",
           "train_latency_job", "wait_parquet"]


def classify_decision(policy: str | None, reason: str | None) -> tuple[str, str | None]:
    """(``learned`` | ``fallback`` | ``health`` | ``other``, source) of one call's routing, from its event.

    The learned policy names itself in ``policy``; when it falls back its reason says so
    ("…; fell back to p2c_ewma: …"); when its weights decide, the reason has
    "learned (tool|server): … by model M (SOURCE)", possibly after why the tool's own entry
    was not used ("weights for tool X … stale …; learned (server): …"). "the only routable
    replica" is health deciding (every other replica ejected or its breaker open): no policy chose.
    """
    text = reason or ""
    if policy is None:
        return "other", None
    if "fell back" in text:
        return "fallback", None
    at = text.find("learned (")
    if at >= 0 and policy in ("learned", "weighted"):
        part = text[at:]
        for source in ("latency_model", "tool_ewma"):
            if f"({source})" in part or f"by model {source}" in part:
                return "learned", source
        return "learned", None
    if "routable" in text:
        return "health", None
    if policy not in ("learned", "weighted"):
        return "fallback", None  # a classic policy's own reason
    return "other", None


def _fallback_reason(reason: str | None) -> str:
    """The cause of a fallback, without the numbers (to count them)."""
    text = (reason or "").split(";")[0]
    return re.sub(r"[-+]?\d[\d.:e+-]*", "#", text)[:80]


async def wait_parquet(data_dir: Path, expected: int, since: float, timeout_s: float,
                        until: float | None = None) -> int:
    """Until the offline store holds >= 98 % of ``expected`` events since ``since`` (bounded); the count."""
    began = time.perf_counter()
    count, last, still_since = 0, -1, time.perf_counter()
    while time.perf_counter() - began < timeout_s:
        count = await asyncio.to_thread(count_events, data_dir, since, until)
        if count >= 0.98 * expected:
            break
        if count != last:
            last, still_since = count, time.perf_counter()
        elif count >= 0.5 * expected and time.perf_counter() - still_since > 3.0:
            break  # not growing any more (calls the proxy refused, say): that is all there is
        await asyncio.sleep(0.5)
    return count


def count_events(data_dir: Path, since: float, until: float | None = None) -> int:
    from only1mcp.feature_store.offline.duckdb import query

    window = f"ts >= {since!r}" + (f" AND ts <= {until!r}" if until is not None else "")
    try:
        return int(query(data_dir, f"SELECT count(*) FROM requests WHERE {window} "
                                   f"AND method = 'tools/call' AND tool <> 'sim_stats'")[1][0][0])
    except Exception:
        return 0


def routing_share(data_dir: Path, since: float, until: float) -> dict[str, Any]:
    """What decided the measured calls, from their events: learned weights (by source) or the fallback."""
    from only1mcp.feature_store.offline.duckdb import query

    try:
        rows = query(data_dir, f"SELECT policy, reason FROM requests WHERE ts >= {since!r} AND ts <= {until!r} "
                               f"AND method = 'tools/call' AND tool <> 'sim_stats'")[1]
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    kinds: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for policy, reason in rows:
        kind, source = classify_decision(policy, reason)
        kinds[kind] += 1
        if kind == "learned":
            sources[source or "unnamed"] += 1
        elif kind == "fallback":
            fallbacks[_fallback_reason(reason)] += 1
        else:
            others[_fallback_reason(reason)] += 1
    n = len(rows)
    return {"events": n, "learned": kinds["learned"], "fallback": kinds["fallback"], "health": kinds["health"],
            "other": kinds["other"], "learned_share": round(kinds["learned"] / n, 4) if n else None,
            "by_source": dict(sources), "fallback_reasons": dict(fallbacks.most_common(5)),
            "health_or_other_reasons": dict(others.most_common(5)),
            "example_reason": next((r for _, r in rows if r), None)}


async def train_latency_job(py: list[str], config: Path, registry: Path, procs: ProcessGroup, timeout_s: float,
                 until: float, min_rows: int | None) -> dict[str, Any]:
    """``only1mcp train latency --config FILE --until T`` as a subprocess (the warm-up's calls only);
    its metrics and whether a model is live. Status ``ok`` (a model is live), ``refused`` (trained, and
    the gate refused it) or ``failed``."""
    began = time.perf_counter()
    argv = [*py, "train", "latency", "--config", str(config), "--until", f"{until:.3f}"]
    if min_rows:
        argv += ["--min-rows", str(min_rows)]
    proc = procs.start("train", argv)
    while proc.alive() and time.perf_counter() - began < timeout_s:
        await asyncio.sleep(0.5)
    timed_out = proc.alive()
    code = procs.stop(proc)
    elapsed = round(time.perf_counter() - began, 2)
    log = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
    meta = registry_metadata(registry)
    lines = [line for line in log.replace("\r", "\n").splitlines() if line.strip() and "[" not in line[:40]]
    out: dict[str, Any] = {"argv": argv[2:], "exit_code": code, "wall_s": elapsed, "log_tail": "\n".join(lines[-8:]),
                           **meta}
    if timed_out:
        return {**out, "status": "failed", "reason": f"`only1mcp train latency` still running after {timeout_s:g}s"}
    if code != 0:
        last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "no output")
        return {**out, "status": "failed", "reason": f"`only1mcp train latency` exited with code {code}: {last[:240]}"}
    if not meta.get("live"):
        if (meta.get("model") or {}).get("status") == "refused":
            return {**out, "status": "refused", "reason": "the gate refused the model: " + str(meta.get("gate"))[:300]}
        return {**out, "status": "failed",
                "reason": "no live latency model after training (the gate refused it, or nothing was registered): "
                          + str(meta.get("gate") or meta.get("registry_error") or "see the training log")[:300]}
    return {**out, "status": "ok"}


def registry_metadata(registry: Path) -> dict[str, Any]:
    """The newest registered model's metrics and status, and which version is live."""
    try:
        from only1mcp.models.registry import ModelRegistry

        reg = ModelRegistry(registry)
        entries = reg.list()
        live = reg.live()
    except Exception as exc:  # the registry is being written by another session, or the artefact is broken
        return {"live": None, "registry_error": f"{type(exc).__name__}: {exc}"[:300]}
    found: dict[str, Any] = {"live": live.version if live else None, "versions": len(entries)}
    if entries:
        meta = entries[-1].metadata
        found["model"] = {k: meta.get(k) for k in ("version", "status", "status_reason", "rows", "metrics",
                                                   "improvement", "parity", "rounds", "window", "timings",
                                                   "predict_batch20_p99_us")}
        found["model"]["sizes_bytes"] = {name: f.get("bytes") for name, f in (meta.get("files") or {}).items()}
        found["gate"] = meta.get("status_reason")
    return found


class WeightsWatcher:
    """Reads ``mcp.routing-weights`` (every partition, no group, from its end) and keeps what it saw."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.records: list[dict[str, Any]] = []  # {at, source, model_version, tool, server, valid_for}
        self.rejected = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> WeightsWatcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from only1mcp.events import RoutingWeights

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="latest", fetch_max_wait_ms=200)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(self.topic, p) for p in range(self.partitions)])
            await consumer.seek_to_end()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                now = time.time()
                for messages in batches.values():
                    for message in messages:
                        try:
                            record = RoutingWeights.from_json(message.value)
                        except Exception:
                            self.rejected += 1
                            continue
                        self.records.append({"at": now, "source": record.source, "model_version": record.model_version,
                                             "tool": record.tool, "server": record.server,
                                             "valid_for": round(record.valid_until - record.ts, 3),
                                             "curves": bool(record.predicted_ms)})
        finally:
            await consumer.stop()

    def seen(self, source: str, since: float = 0.0) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r["source"] == source and r["at"] >= since), None)

    def summary(self, since: float, until: float) -> dict[str, Any]:
        window = [r for r in self.records if since <= r["at"] <= until]
        return {"records": len(window), "by_source": dict(Counter(r["source"] or "?" for r in window)),
                "model_versions": sorted({r["model_version"] for r in window if r["model_version"]})[:10],
                "with_load_curves": sum(1 for r in window if r["curves"]), "rejected": self.rejected}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
