"""``only1mcp schema export``: the JSON Schema of every event type, for outside subscribers.

With ``--out DIR`` it writes one file per event type, ``DIR/<type>.v<version>.schema.json``
(e.g. ``request.v1.schema.json``); without it, it prints one JSON object mapping each
type to its schema.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_arguments", "run", "export", "filename"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="schema_action", metavar="ACTION")
    export_parser = sub.add_parser("export", help="write (or print) the JSON Schema of every event type",
                                   description="write (or print) the JSON Schema of every event type")
    export_parser.add_argument("--out", metavar="DIR", help="folder to write <type>.v<version>.schema.json into "
                                                            "(created if missing); default: print to stdout")


def export(out: str | Path | None = None) -> dict[str, dict]:
    """The schemas by event type; written to ``out`` (one file each) when given."""
    from only1mcp.events import EVENT_TYPES, json_schema

    schemas = {name: json_schema(cls) for name, cls in EVENT_TYPES.items()}
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas.items():
            (folder / filename(name)).write_text(json.dumps(schema, indent=2) + "\n")
    return schemas


def filename(event_type: str) -> str:
    from only1mcp.events import SCHEMA_VERSION

    return f"{event_type}.v{SCHEMA_VERSION}.schema.json"


def run(args: argparse.Namespace) -> int:
    if getattr(args, "schema_action", None) != "export":
        print("usage: only1mcp schema export [--out DIR]")
        return 2
    schemas = export(args.out)
    if args.out:
        for name in schemas:
            print(f"wrote {Path(args.out) / filename(name)}")
    else:
        print(json.dumps(schemas, indent=2))
    return 0
