"""``only1mcp anomalies``: anomaly detection from the command line.

- ``anomalies score FILE.csv --time-col T --value-col V [--value-col V2 ...] --out OUT.csv``: score
  any metric series offline (``only1mcp.commands.anomaly_score``).

(Minimal: only ``score`` here; ``tail`` — following ``mcp.anomalies`` — joins it as a sibling.)
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from only1mcp.commands.anomaly_score import add_score_arguments

    sub = parser.add_subparsers(dest="anomalies_action", metavar="ACTION", required=True)
    score = sub.add_parser("score", help="score a metric series in a CSV file (causal: each row from earlier rows)",
                           description="score a metric series in a CSV file; each row only from earlier rows")
    add_score_arguments(score)


def run(args: argparse.Namespace) -> int:
    if args.anomalies_action == "score":
        from only1mcp.commands.anomaly_score import run_score

        return run_score(args)
    raise SystemExit(f"unknown anomalies action {args.anomalies_action!r}")
