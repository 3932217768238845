"""Synthetic but realistic request events for ``bench stream``: one fleet model, three shapes.

The fleet: four upstream servers with 1-3 replicas each and a few tools each (names exposed as
``<server>__<tool>``), latencies lognormal per replica (one replica of ``search`` is slow),
about 3 % failures (error, timeout, unavailable, cancelled), 8 % cache hits (no replica, sub-ms),
a few ``tools/list`` calls (no tool, server or replica), sessions that live a few minutes.

- :func:`backlog`: ``n`` encoded events (Kafka key, JSON value) spread over a past time span,
  in time order, as the proxy would have sent them (numpy draws, orjson encoding);
- :class:`LiveEvents`: one event at a time with ``ts`` = now, for paced live traffic;
- :func:`write_dataset`: ``n`` events straight to Parquet in the offline store's layout
  (``requests/date=…/hour=…/part-….parquet``, REQUEST_SCHEMA, zstd), one sorted file per hour
  partition as ``only1mcp features compact`` leaves it, generated vectorised with numpy/pyarrow.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

__all__ = ["FLEET", "REPLICAS", "TOOLS", "backlog", "LiveEvents", "write_dataset", "hex_ids"]

# server -> (replicas as (id, median latency ms, sigma), tools)
FLEET: dict[str, tuple[tuple[tuple[str, float, float], ...], tuple[str, ...]]] = {
    "github": ((("github-0", 45.0, 0.5), ("github-1", 50.0, 0.5), ("github-2", 48.0, 0.6)),
               ("create_issue", "search_code", "get_file", "list_prs")),
    "search": ((("search-0", 120.0, 0.7), ("search-1", 380.0, 0.9)), ("web_search", "fetch_page")),
    "files": ((("files-0", 4.0, 0.4), ("files-1", 5.0, 0.4)), ("read_file", "write_file", "list_dir")),
    "db": ((("db-0", 25.0, 0.8),), ("query", "schema")),
}
REPLICAS = [r for replicas, _ in FLEET.values() for r in replicas]
TOOLS = [(server, f"{server}__{tool}") for server, (_, tools) in FLEET.items() for tool in tools]
_STATUSES = np.array(["ok", "error", "timeout", "unavailable", "cancelled"], dtype=object)
_STATUS_P = [0.97, 0.018, 0.006, 0.003, 0.003]
_ERRORS = {"error": (-32603, "tool_error"), "timeout": (-32001, "timeout"), "unavailable": (-32011, "upstream_failed"),
           "cancelled": (-32800, "cancelled")}
_TIMEOUT_MS = 30_000.0
_SESSION_LIFE_S = 300.0  # a session id is drawn from those started in the last five minutes
_SESSIONS_PER_LIFE = 60
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random 32-hex-digit ids (uint8 array of shape (n, 32))."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    out = np.empty((n, 32), dtype=np.uint8)
    out[:, 0::2], out[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 15]
    return out


def _hex_strings(rng: np.random.Generator, n: int) -> list[str]:
    return hex_ids(rng, n).view("S32").ravel().astype(str).tolist()


@dataclass
class _Draws:
    """The random columns of ``n`` events (numpy arrays), shared by every shape."""

    ts: np.ndarray
    tool: np.ndarray  # index into TOOLS, -1 = tools/list
    replica: np.ndarray  # index into REPLICAS, -1 = none (cache hit, tools/list)
    status: np.ndarray  # index into _STATUSES
    latency_ms: np.ndarray
    request_bytes: np.ndarray
    response_bytes: np.ndarray
    cache_hit: np.ndarray
    session: np.ndarray  # session number (time bucket * sessions per bucket + slot)
    args: np.ndarray  # argument-hash number per tool (a small vocabulary: repeated calls)


def _draw(rng: np.random.Generator, ts: np.ndarray) -> _Draws:
    n = len(ts)
    tool = rng.integers(0, len(TOOLS), n)
    tool[rng.random(n) < 0.04] = -1  # tools/list
    server_of = {s: i for i, s in enumerate(FLEET)}
    tool_server = np.array([server_of[s] for s, _ in TOOLS] + [-1])[tool]  # -1 wraps to the sentinel
    replica = np.full(n, -1)
    first = 0
    for index, (replicas, _) in enumerate(FLEET.values()):
        mask = tool_server == index
        replica[mask] = first + rng.integers(0, len(replicas), int(mask.sum()))
        first += len(replicas)
    cache_hit = (rng.random(n) < 0.08) & (replica >= 0)
    replica[cache_hit] = -1
    medians = np.array([m for _, m, _ in REPLICAS] + [0.3])
    sigmas = np.array([s for _, _, s in REPLICAS] + [0.3])
    latency = medians[replica] * np.exp(sigmas[replica] * rng.standard_normal(n))
    status = rng.choice(len(_STATUSES), n, p=_STATUS_P)
    status[cache_hit | (tool < 0)] = 0
    latency[status == 2] = _TIMEOUT_MS + rng.random(int((status == 2).sum())) * 50
    latency[status == 3] = 1.0 + rng.random(int((status == 3).sum())) * 5  # failed fast
    bucket = np.floor(ts / _SESSION_LIFE_S).astype(np.int64) - rng.integers(0, 2, n)
    session = bucket * _SESSIONS_PER_LIFE + rng.integers(0, _SESSIONS_PER_LIFE, n)
    return _Draws(ts, tool, replica, status, np.round(latency, 3),
                  np.round(rng.lognormal(5.5, 0.8, n)).astype(np.int64),
                  np.round(rng.lognormal(7.5, 1.4, n)).astype(np.int64), cache_hit, session,
                  rng.integers(0, 500, n))


@functools.lru_cache(maxsize=65536)
def _session_id(number: int) -> str:
    """A stable keyed-hash-like id per session number (the proxy never sends the raw id)."""
    return hashlib.blake2b(number.to_bytes(8, "little", signed=True), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=65536)
def _client_id(number: int) -> str:
    """A client holds a few sessions at once: one id per four session numbers."""
    return hashlib.blake2b(b"client" + (number // 4).to_bytes(8, "little", signed=True), digest_size=16).hexdigest()


def _event(d: _Draws, i: int, event_id: str, ts: float | None = None) -> tuple[bytes | None, dict[str, Any]]:
    t, r, s = int(d.tool[i]), int(d.replica[i]), int(d.status[i])
    status = str(_STATUSES[s])
    server, tool = TOOLS[t] if t >= 0 else (None, None)
    replica = REPLICAS[r][0] if r >= 0 else None
    code, error_class = _ERRORS.get(status, (None, None))
    session = _session_id(int(d.session[i]))
    event = {
        "event_id": event_id, "ts": float(d.ts[i]) if ts is None else ts, "latency_ms": float(d.latency_ms[i]),
        "method": "tools/call" if t >= 0 else "tools/list", "status": status, "proxy_id": f"proxy-{i % 2}",
        "client_id": _client_id(int(d.session[i])), "session_id": session, "tool": tool, "server": server,
        "replica": replica, "error_code": code, "error_class": error_class,
        "request_bytes": int(d.request_bytes[i]), "response_bytes": int(d.response_bytes[i]) if status == "ok" else 120,
        "args_hash": f"{t + 1:04x}{int(d.args[i]):028x}" if t >= 0 else None, "cache_hit": bool(d.cache_hit[i]),
        "prefetch_hit": False, "policy": "p2c_latency" if replica else None, "reason": "lowest ewma" if replica else None,
        "attempts": 0 if d.cache_hit[i] or t < 0 else 1 + int(s == 3),
        "inflight": int(d.args[i]) % 4 if replica else None, "schema_version": 1, "type": "request",
    }
    return (replica.encode() if replica else None), event


def backlog(n: int, start_ts: float, end_ts: float, seed: int = 1) -> list[tuple[bytes | None, bytes]]:
    """``n`` encoded (key, value) events evenly spread, in order, over [start_ts, end_ts)."""
    rng = np.random.default_rng(seed)
    ts = np.round(np.sort(start_ts + rng.random(n) * (end_ts - start_ts)), 6)
    draws = _draw(rng, ts)
    ids = _hex_strings(rng, n)
    dumps = orjson.dumps
    out = []
    for i in range(n):
        key, event = _event(draws, i, ids[i])
        out.append((key, dumps(event)))
    return out


class LiveEvents:
    """Events of the same fleet, one at a time, stamped with the current time when made."""

    def __init__(self, seed: int = 2, block: int = 4096) -> None:
        self.rng, self.block, self.index = np.random.default_rng(seed), block, block
        self.draws: _Draws | None = None
        self.ids: list[str] = []

    def next(self, session_id: str | None = None) -> tuple[bytes | None, bytes, dict[str, Any]]:
        """(key, value, event); ``session_id`` replaces the drawn session (a probe)."""
        if self.index >= self.block:
            self.draws = _draw(self.rng, np.full(self.block, time.time()))
            self.ids, self.index = _hex_strings(self.rng, self.block), 0
        assert self.draws is not None
        key, event = _event(self.draws, self.index, self.ids[self.index], ts=time.time())
        if session_id is not None:
            event["session_id"] = session_id
        self.index += 1
        return key, orjson.dumps(event), event


# -- straight to Parquet, vectorised -------------------------------------------------------------


def _strings(values: list[str | None], index: np.ndarray) -> pa.Array:
    """``values[index]`` as a plain string column (nulls where the value is None)."""
    return pa.array(values, pa.string()).take(pa.array(index))


def _table(draws: _Draws, rng: np.random.Generator, schema: pa.Schema) -> pa.Table:
    n = len(draws.ts)
    ids = hex_ids(rng, n)
    offsets = pa.py_buffer(np.arange(0, 32 * (n + 1), 32, dtype=np.int32))
    event_id = pa.StringArray.from_buffers(n, offsets, pa.py_buffer(ids))
    tool_i, rep_i, status = draws.tool, draws.replica, draws.status
    tool_col = np.where(tool_i < 0, len(TOOLS), tool_i)
    rep_col = np.where(rep_i < 0, len(REPLICAS), rep_i)
    server_names = [s for s, _ in TOOLS] + [None]
    sessions, session_idx = np.unique(draws.session, return_inverse=True)
    session_names = [_session_id(int(s)) for s in sessions]
    codes = np.array([_ERRORS.get(str(s), (0, None))[0] for s in _STATUSES])
    classes = [_ERRORS.get(str(s), (None, None))[1] for s in _STATUSES]
    args = (tool_col.astype(np.int64) * 1000 + draws.args).astype(np.int64)
    arg_values, arg_idx = np.unique(args, return_inverse=True)
    columns = {
        "event_id": event_id, "ts": pa.array(draws.ts), "latency_ms": pa.array(draws.latency_ms),
        "method": _strings(["tools/call", "tools/list"], (tool_i < 0).astype(np.int8)),
        "status": _strings([str(s) for s in _STATUSES], status),
        "proxy_id": _strings(["proxy-0", "proxy-1"], rng.integers(0, 2, n)),
        "client_id": _strings([_client_id(int(s)) for s in sessions], session_idx),
        "session_id": _strings(session_names, session_idx),
        "tool": _strings([t for _, t in TOOLS] + [None], tool_col),
        "server": _strings(server_names, tool_col),
        "replica": _strings([r[0] for r in REPLICAS] + [None], rep_col),
        "error_code": pa.array(codes[status], pa.int64(), mask=status == 0),
        "error_class": _strings(classes, status),
        "request_bytes": pa.array(draws.request_bytes),
        "response_bytes": pa.array(np.where(status == 0, draws.response_bytes, 120)),
        "args_hash": _strings([f"{int(a):032x}" for a in arg_values], arg_idx),
        "cache_hit": pa.array(draws.cache_hit), "prefetch_hit": pa.array(np.zeros(n, dtype=bool)),
        "policy": _strings(["p2c_latency", None], (rep_i < 0).astype(np.int8)),
        "reason": _strings(["lowest ewma", None], (rep_i < 0).astype(np.int8)),
        "attempts": pa.array(np.where(draws.cache_hit | (tool_i < 0), 0, 1 + (status == 3)).astype(np.int64)),
        "inflight": pa.array(np.where(rep_i < 0, 0, draws.args % 4).astype(np.int64), pa.int64(), mask=rep_i < 0),
        "schema_version": pa.array(np.ones(n, dtype=np.int64)),
        "type": _strings(["request"], np.zeros(n, dtype=np.int8)),
    }
    return pa.table([columns[f.name] for f in schema], schema=schema)


def _hour_chunks(n: int, start_ts: float, hours: int) -> Iterator[tuple[float, int]]:
    base, extra = divmod(n, hours)
    for h in range(hours):
        yield start_ts + h * 3600.0, base + (h < extra)


def write_dataset(data_dir: str | Path, n: int, hours: int = 24, start_ts: float | None = None,
                  seed: int = 3) -> dict[str, Any]:
    """``n`` events over ``hours`` whole UTC hours, one sorted zstd file per hour partition."""
    import pyarrow.parquet as pq

    from only1mcp.feature_store.offline.parquet import REQUEST_SCHEMA, partition_of, requests_dir

    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    if start_ts is None:  # the last whole `hours` hours before the current one
        start_ts = (time.time() // 3600 - hours) * 3600.0
    files, size = 0, 0
    for hour_ts, count in _hour_chunks(n, start_ts, hours):
        if count == 0:
            continue
        ts = np.round(np.sort(hour_ts + rng.random(count) * 3599.999), 6)
        table = _table(_draw(rng, ts), rng, REQUEST_SCHEMA)
        folder = requests_dir(data_dir) / partition_of(hour_ts)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{int(hour_ts * 1000)}-bench.parquet"
        pq.write_table(table, path, compression="zstd")
        files, size = files + 1, size + path.stat().st_size
    return {"events": n, "files": files, "partitions": files, "bytes": size,
            "seconds": round(time.perf_counter() - began, 2), "layout": "one sorted zstd file per hour partition"}


def split_newest_hour(data_dir: str | Path, files: int = 300, replayed: float = 0.01) -> dict[str, Any]:
    """Rewrite the newest hour partition of a ``write_dataset`` dataset as ``files`` micro-batch
    files, each repeating the first ``replayed`` share of the next one's rows (replays after a
    crash): what the worker leaves between two compactions (``compact_interval`` 300 s at one
    flush a second) when it does not merge (``merge_interval = 0``)."""
    import pyarrow.parquet as pq

    from only1mcp.feature_store.offline.parquet import requests_dir

    newest = sorted(requests_dir(data_dir).glob("date=*/hour=*"))[-1]
    (source,) = newest.glob("*.parquet")
    table = pq.read_table(source)
    step = max(1, table.num_rows // files)
    extra = int(step * replayed)
    starts = range(0, table.num_rows, step)
    for i, begin in enumerate(starts):
        pq.write_table(table.slice(begin, step + extra), newest / f"part-{i:05d}-bench.parquet", compression="zstd")
    source.unlink()
    return {"partition": newest.relative_to(requests_dir(data_dir)).as_posix(), "files": len(starts),
            "rows": table.num_rows, "replayed_rows": extra * (len(starts) - 1)}


def merge_newest_hour(data_dir: str | Path, keep: int = 30) -> dict[str, Any]:
    """After :func:`split_newest_hour`: merge all but the newest ``keep`` micro-batch files of that
    hour with the worker's own merge (jobs/compact.py), leaving what the worker leaves just before
    its next merge (``merge_interval`` 30 s at one flush a second)."""
    from only1mcp.feature_store.offline.parquet import requests_dir
    from only1mcp.jobs.compact import SMALL_FILE_BYTES, compact_partition

    newest = sorted(requests_dir(data_dir).glob("date=*/hour=*"))[-1]
    recent = sorted(newest.glob("*.parquet"))[-keep:]
    aside = newest.parent / f".{newest.name}.recent"
    aside.mkdir()
    for path in recent:  # written after the merge began: it does not see them
        path.rename(aside / path.name)
    stats = compact_partition(newest, raw_events=True, max_bytes=SMALL_FILE_BYTES)
    for path in recent:
        (aside / path.name).rename(path)
    aside.rmdir()
    return {"partition": newest.relative_to(requests_dir(data_dir)).as_posix(), "merged_files": stats.files_before,
            "files": len(list(newest.glob("*.parquet"))), "replays_removed": stats.rows_before - stats.rows_after}
