"""A missing or empty offline store or model registry, said as such.

The DuckDB views of a store without files are empty, typed views (feature_store/offline/duckdb.py),
so a query of the wrong folder answers 0 rows and looks like a result. The operator commands
check first and exit ``NOTHING_THERE`` with one line on stderr that names the folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from only1mcp.commands._config import shown

__all__ = ["NOTHING_THERE", "offline_store_problem", "registry_problem", "refuse"]

NOTHING_THERE = 1  # the exit code of a command whose store or registry is missing or empty


def _has_parquet(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.parquet"))  # stops at the first file


def offline_store_problem(data_dir: str | Path) -> str | None:
    """Why ``data_dir`` is no offline store to read (missing, or no Parquet file yet), else None."""
    from only1mcp.feature_store.offline.parquet import features_dir, requests_dir

    if not Path(data_dir).is_dir():
        return (f"no offline store at {shown(data_dir)}: the folder does not exist (nothing written yet; "
                "or run this where `only1mcp up` ran, or pass --config)")
    if not (_has_parquet(requests_dir(data_dir)) or _has_parquet(features_dir(data_dir))):
        return f"the offline store at {shown(data_dir)} is empty: no Parquet files yet (is the worker running?)"
    return None


def registry_problem(registry_dir: str | Path, versions: int) -> str | None:
    """Why ``registry_dir`` (holding ``versions`` model versions) has nothing to list, else None."""
    if not Path(registry_dir).is_dir():
        return (f"no model registry at {shown(registry_dir)}: the folder does not exist "
                "(nothing trained yet: `only1mcp train latency` trains a model)")
    if versions == 0:
        return f"the model registry at {shown(registry_dir)} holds no model yet (`only1mcp train latency` trains one)"
    return None


def refuse(command: str, problem: str) -> int:
    print(f"only1mcp {command}: {problem}", file=sys.stderr, flush=True)
    return NOTHING_THERE
