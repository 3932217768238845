"""The anomaly agent's saved state: every entity's ensemble, as one JSON file.

``<[anomaly] state_dir or <data_dir>/anomaly>/<worker group>.json``, written atomically (a temp
file beside it, fsynced, renamed over it), so a crash mid-save leaves the previous file. A file
that does not load, or an entity whose state its ensemble refuses (``DetectorStateError``), is
logged and starts fresh: the agent keeps serving either way.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from only1mcp.settings import Settings
from only1mcp.streams.anomaly_features import Entity

__all__ = ["state_path", "write_state", "load_state", "snapshot", "restore_ensembles", "STATE_VERSION"]

log = logging.getLogger(__name__)
STATE_VERSION = 1


def state_path(settings: Settings) -> Path:
    root = settings.anomaly.state_dir or Path(settings.store.data_dir) / "anomaly"
    return Path(root) / f"{settings.worker.group}.json"


def write_state(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none or it does not load (logged)."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not isinstance(
                data.get("entities"), list):
            raise ValueError(f"not an anomaly state file of version {STATE_VERSION}")
        return data
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("anomaly: saved detector state %s does not load (%s); starting fresh", path, exc)
        return None


def snapshot(ensembles: Mapping[Entity, Any], features: Sequence[str]) -> dict[str, Any]:
    """Everything to save (taken on the event loop: the ensembles keep learning meanwhile)."""
    entities = [{"server": server, "replica": replica, "tool": tool, "state": ensemble.state()}
                for (server, replica, tool), ensemble in ensembles.items()]
    return {"version": STATE_VERSION, "saved_at": time.time(), "features": list(features), "entities": entities}


def restore_ensembles(data: Mapping[str, Any] | None, features: Sequence[str],
                      factory: Callable[[Entity], Any]) -> tuple[dict[Entity, Any], int]:
    """(entity → restored ensemble, how many entities failed) from ``load_state``'s answer; ``factory``
    makes a fresh ensemble for an entity."""
    if data is None:
        return {}, 0
    if data.get("features") != list(features):
        log.warning("anomaly: the saved detectors saw features %s, not %s; starting fresh", data.get("features"),
                    list(features))
        return {}, 0
    out: dict[Entity, Any] = {}
    failed = 0
    for item in data["entities"]:
        try:
            entity: Entity = (item["server"], item["replica"], item.get("tool"))
            ensemble = factory(entity)
            ensemble.restore(item["state"])
            out[entity] = ensemble
        except Exception as exc:  # DetectorStateError, or a damaged entry: that entity starts fresh
            if failed == 0:
                log.warning("anomaly: a saved entity does not restore (%r); it starts fresh (logged once)", exc)
            failed += 1
    return out, failed
