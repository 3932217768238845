"""Which configuration an operator command uses, and one stderr line saying so.

Commands that read the offline store, the model registry or the running stack's broker
(``features``, ``train``, ``models``, ``anomalies tail``) take, in order:

1. ``--config FILE``;
2. the configuration of the last ``only1mcp up`` in the current folder: the file
   ``.only1mcp/last-up`` names (``up`` writes it, so a custom ``--config`` or ``--run-dir`` is
   found too, with the broker address ``up`` gave its children), else
   ``.only1mcp/run/only1mcp.toml`` (where ``up`` writes the configuration it generates);
3. the built-in defaults.

Without step 2, typing ``only1mcp features sql …`` in the folder of a running demo read
``./data`` and answered 0 rows without a word. Each command says on stderr which configuration
and folders it used; stdout stays the command's output alone (``--format csv``, ``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from only1mcp.commands._up_support import DEFAULT_BASE

if TYPE_CHECKING:
    from only1mcp.settings import Settings

__all__ = ["ResolvedConfig", "resolve_config", "record_last_up", "last_up_config", "announce", "shown",
           "LAST_UP", "RUN_CONFIG"]

LAST_UP = Path(DEFAULT_BASE) / "last-up"  # JSON: the configuration and broker of the last `up` here
RUN_CONFIG = Path(DEFAULT_BASE) / "run" / "only1mcp.toml"  # up's default --run-dir and file name

UP_ENVIRON = ("KAFKA_BOOTSTRAP",)  # what of up's children's environment last-up keeps
FROM_FLAG = "--config"
FROM_LAST_UP = "from the last `only1mcp up` in this folder"


@dataclass(frozen=True)
class ResolvedConfig:
    settings: Settings
    path: Path | None  # None: the built-in defaults
    origin: str  # why this one: FROM_FLAG, FROM_LAST_UP, or why there is none

    def describe(self) -> str:
        if self.path is None:
            return f"the built-in defaults ({self.origin})"
        return f"config {shown(self.path)} ({self.origin})"


def shown(path: str | Path) -> str:
    """A path as the operator reads it best: relative when it lies under the current folder."""
    absolute = Path(path) if Path(path).is_absolute() else Path.cwd() / path
    try:
        return str(absolute.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(absolute)


def record_last_up(config_path: Path, bootstrap: str) -> None:
    """Remember the configuration ``up`` runs with, for the commands typed here afterwards, and the
    broker its children were given in their environment: a ``--config`` file ``up`` uses as it is
    need not name it. (Not REDIS_URL: it may hold a password, and no such command reads Redis.)
    The path is relative when it lies under this folder, so a moved project folder still finds it."""
    LAST_UP.parent.mkdir(parents=True, exist_ok=True)
    ignore = LAST_UP.parent / ".gitignore"  # .only1mcp holds nothing to commit, whatever --run-dir says
    if not ignore.exists():
        with contextlib.suppress(OSError):
            ignore.write_text("*\n")
    record = {"config": shown(config_path.resolve()), UP_ENVIRON[0]: bootstrap}
    LAST_UP.write_text(json.dumps(record, indent=2) + "\n")


def _read_last_up() -> dict[str, str]:
    try:
        record = json.loads(LAST_UP.read_text())
    except (OSError, ValueError):  # none yet, or not ours: the run folder's file still counts
        return {}
    return {k: v for k, v in record.items() if isinstance(v, str) and v} if isinstance(record, dict) else {}


def last_up_config() -> tuple[Path | None, dict[str, str], str]:
    """(the last ``up``'s configuration file or None, the environment it gave its children, why None)."""
    record = _read_last_up()
    named = record.get("config", "")
    if named and Path(named).is_file():
        return Path(named), {k: record[k] for k in UP_ENVIRON if k in record}, ""
    if RUN_CONFIG.is_file():  # an `up` from before last-up existed (a generated file names the broker)
        return RUN_CONFIG, {}, ""
    if named:
        return None, {}, f"the last `only1mcp up` in this folder used {named}, which is gone"
    return None, {}, "no --config, and no `only1mcp up` has run in this folder"


def resolve_config(args: argparse.Namespace) -> ResolvedConfig:
    """The settings by the order of this module's docstring; a bad file exits 2 naming it."""
    from only1mcp.commands._common import load_or_exit
    from only1mcp.settings import parse_settings

    if getattr(args, "config", None):
        return ResolvedConfig(load_or_exit(args.config, args.environ), Path(args.config), FROM_FLAG)
    found, up_environ, why_not = last_up_config()
    if found is not None:
        # As up's children saw it: its broker, unless this shell names one itself.
        environ = {**up_environ, **args.environ}
        return ResolvedConfig(load_or_exit(str(found), environ), found, FROM_LAST_UP)
    return ResolvedConfig(parse_settings({}, "<defaults>", args.environ), None, why_not)


def announce(command: str, *parts: str) -> None:
    """The one line on stderr that says what the command reads: ``only1mcp features sql: using …``."""
    print(f"only1mcp {command}: using {', '.join(parts)}", file=sys.stderr, flush=True)
