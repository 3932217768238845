"""``only1mcp bench BENCHMARK``: pick a benchmark and run it.

Each benchmark is a module exposing ``add_arguments(parser)`` and
``run(args) -> int``, like the top-level commands. Adding one is one line in
``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["BENCHMARKS", "add_arguments", "run", "main"]

# name -> (module, help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "proxy": (
        "only1mcp.jobs.bench.proxy",
        "tools/call throughput and latency: direct vs through Only1MCP vs through FastMCP's proxy",
    ),
    "routing": (
        "only1mcp.jobs.sim.bench",
        "routing policies vs a clairvoyant oracle over simulated replicas (slow, specialised, homogeneous)",
    ),
    "learning": (
        "only1mcp.jobs.bench.learning",
        "what learned routing costs: weight lookup, onnxruntime inference, artefact size, proxy with policy learned",
    ),
    "health": (
        "only1mcp.jobs.sim.health",
        "failure detection and remediation (detectors, ensemble) against the classic active and passive checks",
    ),
    "anomaly": (
        "only1mcp.jobs.bench.anomaly",
        "anomaly detectors and their ensemble vs a rolling z-score on labelled series: precision, recall, delay, rows/s",
    ),
    "floods": (
        "only1mcp.jobs.bench.floods",
        "a well-behaved client's p99 while session floods, slowloris bodies, stalled SSE readers and inflight "
        "floods hit the proxy; the proxy's peak memory and what each offender got back",
    ),
    "soak": (
        "only1mcp.jobs.bench.soak",
        "the whole stack for 10 minutes at half the proxy's measured maximum: RSS, open fds and asyncio tasks "
        "not growing, p99 steady, every answered call in the requests view",
    ),
    "cache": (
        "only1mcp.jobs.bench.cache",
        "response-cache policies and predictive prefetch replayed on call traces: hit rate, prefetch precision, "
        "extra upstream calls, latency, next-call accuracy, against Belady and the trace's ceilings",
    ),
    "prefetch": (
        "only1mcp.jobs.bench.prefetch",
        "what prefetch costs the proxy: the per-call learning (argument model, session memory) on agent traces, "
        "and bench proxy throughput with [prefetch] enabled and nothing to prefetch",
    ),
    "context": (
        "only1mcp.jobs.bench.context",
        "tools/list context optimisation on replayed agent sessions: the pruned list's size (bytes, tokens) vs the "
        "full catalog of 5 servers, and whether each next call's tool is in the list or found by search_tools",
    ),
    "stream": (
        "only1mcp.jobs.bench.stream",
        "streaming worker events/s (on one core; per broker, embedded or Apache Kafka, and worker count, with events "
        "per CPU-second), event→Redis freshness, features sql over 10M events",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # dest differs from the top-level "command"/"_module" so the two levels never clash.
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        bench_parser = sub.add_parser(name, help=help_text, description=help_text)
        bench_parser.set_defaults(_bench_module=module_name)
        importlib.import_module(module_name).add_arguments(bench_parser)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(args._bench_module)
    return int(module.run(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run without the top-level CLI: ``python -m only1mcp.jobs.bench.cli proxy ...``."""
    parser = argparse.ArgumentParser(prog="only1mcp bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
