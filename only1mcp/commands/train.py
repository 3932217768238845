"""``only1mcp train latency``: train the latency model from the offline store (jobs/train_latency.py);
``only1mcp train prefetch``: the next-tool model from the sessions in it (jobs/train_prefetch.py).

Reads ``tools/call`` rows from ``[store] data_dir`` (optionally ``--since``/``--until``, unix seconds
or ISO 8601), trains P50/P95 quantile models with a time-based hold-out, exports them to ONNX with a
parity check, registers the version under ``[learning] registry_dir`` (default
``<data_dir>/models``) and runs the gate (``--no-promote``: leave it a candidate). A progress bar
goes to stderr; the metrics table (model vs the EWMA and last-value baselines on the same
hold-out), parity, sizes and the gate's verdict to stdout (``--json``: the whole report).
Without ``--config``, the configuration of the last ``only1mcp up`` here (commands/_config.py);
a missing or empty store is said as such, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

__all__ = ["add_arguments", "run", "ProgressBar"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="train_what", metavar="MODEL")
    latency = sub.add_parser("latency", help="XGBoost P50/P95 latency model → ONNX → registry → gate",
                             description="XGBoost P50/P95 latency model → ONNX → registry → gate")
    from only1mcp.commands.models import _common

    _common(latency)
    latency.add_argument("--since", metavar="T", help="first call time (unix seconds or ISO 8601, UTC if naive)")
    latency.add_argument("--until", metavar="T", help="end of the window (exclusive)")
    latency.add_argument("--no-promote", action="store_true", help="register as a candidate, do not run the gate")
    latency.add_argument("--min-rows", type=int, default=None, help="refuse to train below this many calls (500)")
    latency.add_argument("--max-rows", type=int, default=None,
                         help="train on the newest N calls of the window (default 300000; 0 = all)")
    latency.add_argument("--json", action="store_true", help="print the report as JSON")
    prefetch = sub.add_parser("prefetch", help="next-tool Markov model from the sessions → registry → gate",
                              description="next-tool model (variable-order Markov) from the sessions of the "
                                          "offline store: time-based split, top-1/top-3 on the newest 20 %% of "
                                          "sessions vs the order-1 Markov and most-frequent-tool baselines, "
                                          "registered under <registry>/prefetch; the worker continues from the "
                                          "live one")
    _common(prefetch)
    prefetch.add_argument("--since", metavar="T", help="first call time (unix seconds or ISO 8601, UTC if naive)")
    prefetch.add_argument("--until", metavar="T", help="end of the window (exclusive)")
    prefetch.add_argument("--no-promote", action="store_true", help="register as a candidate, do not run the gate")
    prefetch.add_argument("--min-sessions", type=int, default=None, help="refuse to train below this many sessions "
                          "(20)")
    prefetch.add_argument("--json", action="store_true", help="print the report as JSON")


class ProgressBar:
    """A one-line text bar on ``stream`` (stderr), redrawn at most every ``interval`` seconds."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, interval: float = 0.1) -> None:
        self.stream, self.width, self.interval = stream, width, interval
        self._last = 0.0
        self._drawn = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        filled = int(self.width * done / max(total, 1))
        self.stream.write(f"\rtraining {stage:<10} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}  ")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _print_report(report: dict) -> None:
    from only1mcp.feature_store.registry import format_table

    rows = []
    for name, label in (("model", "model"), ("ewma", "ewma baseline"), ("last_value", "last-value baseline")):
        m = report["metrics"][name]
        rows.append((label, f"{m['mae_p50']:.3f}", f"{m['pinball_50']:.3f}", f"{m['pinball_95']:.3f}",
                     f"{m['coverage_p95']:.1%}"))
    print(format_table(rows, ("hold-out", "MAE P50 ms", "pinball 0.5", "pinball 0.95", "coverage P95")))
    r = report["rows"]
    print(f"rows: {r['train']} train ({r['validation']} of them validation) / {r['holdout']} hold-out (newest by time)")
    gain = report["improvement"]["mae_p50_vs_ewma"]
    print(f"P50 MAE vs the EWMA baseline: {gain:.1%} lower" if gain >= 0
          else f"P50 MAE vs the EWMA baseline: {-gain:.1%} HIGHER (the model loses to the baseline)")
    if report.get("p50_floor_factor"):
        print(f"P50 floor: never below EWMA x {report['p50_floor_factor']:.3f} (a low percentile of latency / "
              "EWMA on the training part)")
    print("parity (ONNX vs native, max relative): "
          + ", ".join(f"{k} {v:.2g}" for k, v in report["parity"].items()))
    print("size: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in report["sizes"].items())
          + f"; onnxruntime batch of 20 p99 {report['predict_batch20_p99_us']:.0f} µs")
    gate = report["gate"]
    print(f"version: {report['version']} ({report['status']})")
    print(f"gate: {'promoted' if gate.get('promoted') else 'not promoted'} — {gate.get('reason')}")
    print(f"report: {report['report']}")


def _print_prefetch(report: dict) -> None:
    from only1mcp.feature_store.registry import format_table

    labels = (("model", f"model (order {report['order']})"), ("markov1", "order-1 Markov baseline"),
              ("most_frequent", "most frequent tool baseline"), ("in_sample_ceiling", "in-sample ceiling"))
    print(format_table([(label, f"{report['metrics'][name]['top1']:.1%}", f"{report['metrics'][name]['top3']:.1%}")
                        for name, label in labels], ("hold-out (next tool)", "top-1", "top-3")))
    rows, m = report["rows"], report["metrics"]
    print(f"sessions: {rows['sessions']['train']} train ({rows['calls']['train']} calls) / "
          f"{rows['sessions']['holdout']} hold-out ({m['model']['calls']} calls scored; newest by first call)")
    gain = m["model"]["top1"] - m["markov1"]["top1"]
    print(f"top-1 vs the order-1 Markov baseline: {gain:+.1%}" + (" (the model loses to the baseline)" if gain < 0
                                                                   else ""))
    print("order tuning (validation top-1): " + ", ".join(f"{o}: {v:.1%}" for o, v in report["order_tuning"].items()))
    print(f"version: {report['version']} ({report['status']})")
    print(f"gate: {'promoted' if report['gate'].get('promoted') else 'not promoted'} — {report['gate'].get('reason')}")


def _run_prefetch(args: argparse.Namespace) -> int:
    from only1mcp.commands._store import offline_store_problem, refuse
    from only1mcp.commands.models import resolve_dirs
    from only1mcp.jobs.train_prefetch import MIN_SESSIONS, train_prefetch
    from only1mcp.models.errors import ModelError

    data_dir, registry_dir = resolve_dirs(args, "train prefetch")
    problem = offline_store_problem(data_dir)
    if problem:
        return refuse("train prefetch", problem)
    try:
        report = train_prefetch(data_dir, registry_dir, since=args.since, until=args.until,
                                promote=not args.no_promote, min_sessions=args.min_sessions or MIN_SESSIONS)
    except ModelError as exc:
        print(f"only1mcp train prefetch: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a --since/--until that is not a time
        print(f"only1mcp train prefetch: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_prefetch(report)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.train_what == "prefetch":
        return _run_prefetch(args)
    if args.train_what != "latency":
        print("usage: only1mcp train latency|prefetch [--config FILE] [--since T] [--until T] [--no-promote] [--json]",
              file=sys.stderr)
        return 2
    from only1mcp.commands._store import offline_store_problem, refuse
    from only1mcp.commands.models import resolve_dirs
    from only1mcp.jobs.train_latency import MAX_ROWS, MIN_ROWS, train_latency
    from only1mcp.models.errors import ModelError

    data_dir, registry_dir = resolve_dirs(args, "train latency")
    problem = offline_store_problem(data_dir)
    if problem:
        return refuse("train latency", problem)
    bar = ProgressBar()
    try:
        report = train_latency(data_dir, registry_dir, since=args.since, until=args.until, progress=bar,
                               promote=not args.no_promote, min_rows=args.min_rows or MIN_ROWS,
                               max_rows=MAX_ROWS if args.max_rows is None else (args.max_rows or None))
    except ModelError as exc:
        bar.close()
        print(f"only1mcp train latency: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a --since/--until that is not a time
        bar.close()
        print(f"only1mcp train latency: {exc}", file=sys.stderr)
        return 2
    bar.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0
