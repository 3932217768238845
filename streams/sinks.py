"""The worker's sinks: where a flush plan goes, stage by stage, each stage done once.

Order matters for at-least-once without double counting: raw events (Parquet), closed window
rows (Parquet), the closing watermark (a small JSON file, atomically replaced), then the online
values (Redis). A stage that fails leaves the plan to be retried from that stage at the next
flush; nothing is acknowledged to Kafka until every stage is done.

Redis is the exception to "stage by stage": while it is away, Parquet keeps receiving data and
the online rows wait, newest value per key, to go with the next flush (an online value is only
ever overwritten by a newer one, so sending the latest suffices); acknowledgements wait too.

The watermark files, ``<data_dir>/_state/<group>/<partition>.json`` (one per partition of
``mcp.feature-events``, so a partition's state moves with it to another worker), are what let a
restarted worker skip windows it already closed: replayed events of those windows are late, not
counted twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from only1mcp.feature_store.offline.parquet import write_feature_rows, write_requests
from only1mcp.feature_store.online.redis import RedisOnlineStore
from only1mcp.streams.folding import FlushPlan

__all__ = ["Sinks", "state_path", "load_closed_until", "save_closed_until", "load_partition_closed"]

log = logging.getLogger(__name__)


def state_path(data_dir: str | Path, group: str, partition: int) -> Path:
    return Path(data_dir) / "_state" / group / f"{partition}.json"


def load_partition_closed(data_dir: str | Path, group: str, partition: int, default: int) -> int:
    """The watermark (ms) up to which one partition's windows are closed and written; ``default`` if none."""
    try:
        return int(json.loads(state_path(data_dir, group, partition).read_text())["closed_until_ms"])
    except FileNotFoundError:
        return default


def load_closed_until(data_dir: str | Path, group: str, default: int) -> int:
    """The watermark (ms) up to which every partition of the group has closed its windows (the
    smallest over its partitions' files); ``default`` if none has one."""
    folder = Path(data_dir) / "_state" / group
    marks = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            marks.append(int(json.loads(path.read_text())["closed_until_ms"]))
        except (OSError, ValueError, KeyError):
            continue
    return min(marks) if marks else default


def save_closed_until(data_dir: str | Path, group: str, closed_until_ms: int, partition: int) -> None:
    path = state_path(data_dir, group, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(temp, "w") as fh:
        json.dump({"closed_until_ms": closed_until_ms, "saved_at": time.time()}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)


class Sinks:
    """Runs flush plans against Parquet under ``data_dir``, the state file and Redis."""

    def __init__(self, data_dir: str | Path, group: str, online: RedisOnlineStore) -> None:
        self.data_dir, self.group, self.online = Path(data_dir), group, online
        self.written = {"raw": 0, "closed": 0, "online": 0}
        self.saved: dict[int, int] = {}  # partition → the watermark its state file holds

    def write_raw(self, rows: list[Any]) -> None:
        """Blocking: the raw events of the first stage (deduplicated by event id when read)."""
        if rows:
            write_requests(self.data_dir, rows)
            self.written["raw"] += len(rows)

    def write_offline(self, plan: FlushPlan, partition: int) -> None:
        """Blocking (call it in a thread); raises if a stage fails, with ``plan.done`` up to date."""
        if "raw" not in plan.done:
            self.write_raw(plan.raw)
            plan.done.add("raw")
        if "closed" not in plan.done:
            write_feature_rows(self.data_dir, plan.closed)
            self.written["closed"] += len(plan.closed)
            plan.done.add("closed")
        if "state" not in plan.done:
            if self.saved.get(partition) != plan.closed_until_ms:  # an fsync per change, not per flush
                save_closed_until(self.data_dir, self.group, plan.closed_until_ms, partition)
                self.saved[partition] = plan.closed_until_ms
            plan.done.add("state")

    def write_online(self, rows: list[dict[str, Any]]) -> None:
        """Blocking; raises OnlineStoreUnavailable when the error policy gives up."""
        self.written["online"] += self.online.write_rows(rows)
