"""Call traces for cache replay: the format, and the loadgen's sessions as a trace.

A trace is JSONL, one call per line, an object with

* ``session`` (string): the MCP session the call belongs to,
* ``ts`` (number): when the call was made, seconds (any origin; the file need not be sorted),
* ``tool`` (string) and ``args`` (object): the call,
* optionally ``result`` (string: the result's text, e.g. its JSON) and ``client`` (string).

Other keys are ignored. ``read_trace`` checks every line and names the first bad one; calls come
back ordered by time (ties keep the file's order).

``loadgen_trace`` turns the load generator's sessions (``workload.open_loop_schedule``: Markov
chains over tools, Zipf-distributed ``key`` arguments) into such a trace. The loadgen talks to the
sim-server, whose replies carry no data, so the trace's results are a deterministic function of
the arguments and of the record's version: each write tool (``update_record``, ``delete_record``:
not ``readOnlyHint`` in the sim profile) bumps the version of its key, and the reads of that key
answer differently from then on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["TraceCall", "TraceError", "read_trace", "parse_trace", "write_trace", "loadgen_trace",
           "LOADGEN_READ_ONLY"]


class TraceError(ValueError):
    """A trace file that is not valid; the message names the line."""


@dataclass(frozen=True)
class TraceCall:
    session: str
    ts: float
    tool: str
    args: dict[str, Any] = field(hash=False)
    result: str | None = None
    client: str | None = None
    line: int = 0  # 1-based line in the file (0: not from a file)


def parse_trace(lines: Iterable[str | bytes], source: str = "<trace>") -> list[TraceCall]:
    """Validate and parse JSONL lines (blank lines skipped); sorted by ``ts``, stable."""
    calls = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TraceError(f"{source}:{number}: not JSON ({exc})") from None
        calls.append(_call(obj, f"{source}:{number}", number))
    calls.sort(key=lambda c: c.ts)
    return calls


def _call(obj: Any, where: str, number: int) -> TraceCall:
    if not isinstance(obj, Mapping):
        raise TraceError(f"{where}: a call must be a JSON object")
    for name in ("session", "tool"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise TraceError(f"{where}: {name!r} must be a non-empty string")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise TraceError(f"{where}: 'ts' must be a finite number")
    args = obj.get("args", {})
    if not isinstance(args, Mapping):
        raise TraceError(f"{where}: 'args' must be an object")
    result = obj.get("result")
    if result is not None and not isinstance(result, str):
        result = json.dumps(result, sort_keys=True)  # a structured result: keep its JSON text
    client = obj.get("client")
    if client is not None and not isinstance(client, str):
        raise TraceError(f"{where}: 'client' must be a string")
    return TraceCall(obj["session"], float(ts), obj["tool"], dict(args), result, client, number)


def read_trace(path: str | Path) -> list[TraceCall]:
    path = Path(path)
    with open(path, "rb") as fh:
        return parse_trace(fh, str(path))


def write_trace(path: str | Path, calls: Iterable[Mapping[str, Any]]) -> Path:
    """Write calls (mappings with the trace's keys) as JSONL, keys in the format's order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for call in calls:
            row = {k: call[k] for k in ("session", "ts", "tool", "args", "result", "client") if call.get(k) is not None}
            fh.write(orjson.dumps(row) + b"\n")
    return path


def _loadgen_read_only() -> frozenset[str]:
    from only1mcp.jobs.sim.model import DEFAULT_PROFILE

    return frozenset(name for name, spec in DEFAULT_PROFILE["tools"].items() if spec.get("read_only", True))


LOADGEN_READ_ONLY = _loadgen_read_only()  # search, get_document, summarize: the sim-server's readOnlyHint


def _digest(*parts: Any) -> str:
    return hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=4).hexdigest()


def _loadgen_result(tool: str, key: str, version: int, prefix: str, keys: int) -> dict[str, Any]:
    if tool == "search":  # hits depend on the query only
        hits = sorted({int(_digest("hit", key, i), 16) % keys + 1 for i in range(3)})
        return {"query": key, "hits": [f"{prefix}{h}" for h in hits]}
    if tool in ("update_record", "delete_record"):
        return {"key": key, "ok": True, "version": version, "deleted": tool == "delete_record"}
    return {"key": key, "version": version, "tool": tool, "body": _digest(tool, key, version)}


def loadgen_trace(workload: Any = None, seed: int | str = 0, sessions: int = 32, rate: float = 10.0,
                  calls: int = 4000) -> list[dict[str, Any]]:
    """The loadgen's open-loop schedule as trace rows, ``calls`` of them, with results (module doc)."""
    from only1mcp.jobs.sim.workload import Workload, open_loop_schedule

    workload = workload or Workload.load(None)
    planned = open_loop_schedule(workload, seed, sessions, rate, duration=1.2 * calls / rate + 10.0)[:calls]
    versions: dict[str, int] = {}
    rows = []
    for call in planned:
        if call.tool not in LOADGEN_READ_ONLY:
            versions[call.key] = versions.get(call.key, 0) + 1
        result = _loadgen_result(call.tool, call.key, versions.get(call.key, 0), workload.key_prefix, workload.keys)
        rows.append({"session": f"loadgen-{call.session}", "ts": round(call.t, 4), "tool": call.tool,
                     "args": {"key": call.key}, "result": json.dumps(result, separators=(",", ":")),
                     "client": f"only1mcp-loadgen-{call.session}"})
    return rows
