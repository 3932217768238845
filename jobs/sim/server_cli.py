"""``only1mcp sim-server``: serve simulated MCP replicas whose latency follows a profile.

One replica: ``only1mcp sim-server --port 9301 --profile profile.json --seed 7
--replica-id r0``; the profile is a file or inline JSON (see ``model.py``; the
default has five tools). Several replicas in one process: ``--fleet FILE_OR_JSON``
with a list of ``{"port", "replica_id", "profile", "seed", "epoch"}`` objects.
``python -m only1mcp.jobs.sim.server_cli`` runs it without the top-level CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_arguments", "run", "main", "fleet_specs"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="port of the one replica (its endpoint is /mcp)")
    parser.add_argument("--profile", default=None, help="replica profile: a JSON file or inline JSON (default: built in)")
    parser.add_argument("--seed", default="0", help="seed of the service-time and error draws (default 0)")
    parser.add_argument("--replica-id", default=None, help="id reported in replies and sim_stats (default r<port>)")
    parser.add_argument("--epoch", type=float, default=None,
                        help="unix time the fault clock counts from (default: now); a supervisor restarting a "
                             "crashed replica passes the first start so faults keep their schedule")
    parser.add_argument("--fleet", default=None, help="several replicas in this process: JSON file or inline list")


def fleet_specs(args: argparse.Namespace) -> list:
    """The replica specs the arguments describe (ValueError when they do not add up)."""
    from only1mcp.jobs.sim.model import Profile
    from only1mcp.jobs.sim.server import ReplicaSpec

    if (args.fleet is None) == (args.port is None):
        raise ValueError("give exactly one of --port (one replica) or --fleet (several)")
    if args.port is not None:
        replica_id = args.replica_id or f"r{args.port}"
        return [ReplicaSpec(args.port, replica_id, Profile.load(args.profile), _seed(args.seed), args.epoch)]
    text = args.fleet if args.fleet.lstrip().startswith("[") else Path(args.fleet).read_text()
    specs = []
    for i, item in enumerate(json.loads(text)):
        profile = item.get("profile")
        profile = Profile.load(json.dumps(profile) if isinstance(profile, dict) else profile)
        specs.append(ReplicaSpec(int(item["port"]), str(item.get("replica_id", f"r{i}")), profile,
                                 _seed(item.get("seed", args.seed)), item.get("epoch", args.epoch)))
    return specs


def _seed(value: object) -> int | str:
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def run(args: argparse.Namespace) -> int:
    from only1mcp.jobs.sim.server import serve

    try:
        specs = fleet_specs(args)
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(specs, args.host)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sim-server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
