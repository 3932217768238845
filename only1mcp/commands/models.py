"""``only1mcp models``: the model registry (``[learning] registry_dir``, default ``<data_dir>/models``).

- ``models list``: every version with its status, training rows and hold-out metrics;
- ``models show VERSION``: its metadata (metrics and baselines, window, checksums, params);
- ``models promote VERSION [--force]``: through the gate (beats the EWMA baseline and the live
  model on the candidate's hold-out), or past it with ``--force`` (integrity checks still apply);
- ``models rollback``: the previous live version becomes live again;
- ``models shadow VERSION | --clear``: score a candidate beside the live model.

Without ``--config`` the configuration of the last ``only1mcp up`` in this folder is used
(commands/_config.py); one stderr line says which, and which registry. ``models list`` of a
missing or empty registry says so and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "resolve_dirs"]


def _common(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="TOML configuration file (default: the last `only1mcp up` here, else built-in defaults)")
    parser.add_argument("--data-dir", metavar="DIR", default=default, help="offline store root (default: [store] data_dir)")
    parser.add_argument("--registry-dir", metavar="DIR", default=default,
                        help="model registry (default: [learning] registry_dir, else <data_dir>/models)")


def resolve_dirs(args: argparse.Namespace, command: str, with_data: bool = True) -> tuple[Path, Path]:
    """(data_dir, registry_dir) from the flags, else the settings (commands/_config.py); said on
    stderr as ``only1mcp COMMAND: using …`` (the data folder only ``with_data``)."""
    from only1mcp.commands._config import announce, resolve_config, shown

    found = None
    if not args.data_dir or not args.registry_dir:
        found = resolve_config(args)
    settings = found.settings if found else None
    data_dir = Path(args.data_dir or settings.store.data_dir)
    registry = Path(args.registry_dir or (settings.learning.registry_dir if settings else "") or data_dir / "models")
    parts = [found.describe()] if found else []
    if with_data:
        parts.append(f"data folder {shown(data_dir)}" + (" (--data-dir)" if args.data_dir else ""))
    parts.append(f"model registry {shown(registry)}" + (" (--registry-dir)" if args.registry_dir else ""))
    announce(command, *parts)
    return data_dir, registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    sub = parser.add_subparsers(dest="models_action", metavar="ACTION")
    listing = sub.add_parser("list", help="list model versions", description="list model versions")
    show = sub.add_parser("show", help="print a version's metadata", description="print a version's metadata")
    show.add_argument("model_version", metavar="VERSION")
    promote = sub.add_parser("promote", help="make a version live if it passes the gate",
                             description="make a version live if it beats the baseline and the live model")
    promote.add_argument("model_version", metavar="VERSION")
    promote.add_argument("--force", action="store_true", help="skip the metric gate (integrity checks still apply)")
    rollback = sub.add_parser("rollback", help="make the previous live version live again",
                              description="make the previous live version live again")
    shadow = sub.add_parser("shadow", help="score a version beside the live model (not acted on)",
                            description="score a version beside the live model (not acted on)")
    shadow.add_argument("model_version", metavar="VERSION", nargs="?")
    shadow.add_argument("--clear", action="store_true", help="no shadow model")
    for action in (listing, show, promote, rollback, shadow):
        _common(action, default=argparse.SUPPRESS)
        action.add_argument("--json", action="store_true", help="machine-readable output")


def _fmt(value: object, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _list(registry, args: argparse.Namespace) -> int:  # noqa: ANN001 - ModelRegistry, imported lazily
    from only1mcp.commands._store import refuse, registry_problem
    from only1mcp.feature_store.registry import format_table

    entries = registry.list()
    problem = registry_problem(registry.root, len(entries))
    if problem:  # not an empty table: a registry that is not there is worth a word and exit 1
        return refuse("models list", problem)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    rows = []
    for e in entries:
        m = e.metrics.get("model", {})
        b = e.metrics.get("ewma", {})
        rows.append((e.version, e.status, e.metadata.get("created", ""),
                     f"{e.metadata.get('rows', {}).get('train', '-')}/{e.metadata.get('rows', {}).get('holdout', '-')}",
                     _fmt(m.get("mae_p50")), _fmt(b.get("mae_p50")), _fmt(m.get("pinball_95")),
                     _fmt(m.get("coverage_p95"), ".1%"), (e.metadata.get("status_reason") or "")[:60]))
    print(format_table(rows, ("version", "status", "created", "train/holdout", "MAE P50", "EWMA MAE",
                              "pinball .95", "cov P95", "reason")))
    return 0


def _show(registry, args: argparse.Namespace) -> int:  # noqa: ANN001
    entry = registry.show(args.model_version)
    data = entry.to_dict()
    if not args.json:
        data.pop("feature_importance", None)
    print(json.dumps(data, indent=2))
    return 0


def _promote(registry, args: argparse.Namespace) -> int:  # noqa: ANN001
    verdict = registry.promote(args.model_version, force=args.force)
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=2))
    else:
        print(f"{args.model_version}: {'promoted' if verdict.promoted else 'refused'} — {verdict.reason}")
    return 0 if verdict.promoted else 1


def _rollback(registry, args: argparse.Namespace) -> int:  # noqa: ANN001
    version = registry.rollback("rollback (operator)")
    print(json.dumps({"live": version}) if args.json else f"live: {version}")
    return 0


def _shadow(registry, args: argparse.Namespace) -> int:  # noqa: ANN001
    if not args.clear and not args.model_version:
        print("only1mcp models shadow: give a VERSION or --clear", file=sys.stderr)
        return 2
    registry.set_shadow(None if args.clear else args.model_version)
    current = registry.shadow()
    print(json.dumps({"shadow": current.version if current else None}) if args.json
          else f"shadow: {current.version if current else 'none'}")
    return 0


def run(args: argparse.Namespace) -> int:
    from only1mcp.models.errors import ModelError
    from only1mcp.models.registry import ModelRegistry

    actions = {"list": _list, "show": _show, "promote": _promote, "rollback": _rollback, "shadow": _shadow}
    if args.models_action not in actions:
        print("usage: only1mcp models {list,show,promote,rollback,shadow} …", file=sys.stderr)
        return 2
    _, registry_dir = resolve_dirs(args, f"models {args.models_action}", with_data=False)
    try:
        return actions[args.models_action](ModelRegistry(registry_dir), args)
    except ModelError as exc:
        print(f"only1mcp models {args.models_action}: {exc}", file=sys.stderr)
        return 1
