"""``only1mcp bench learning``: what learned routing costs, measured, with the issue's bars.

- **Weight lookup on the proxy's path**: ``Learned.choose`` over 4 ready replicas of a
  5-tool server with fresh per-tool latency curves (what a call pays for the learned weights:
  dictionary look-ups, a softmax over the candidates' predicted latency at their in-flight
  count, one random draw), timed call by call; p2c_ewma beside it as the classic reference.
- **Model inference**: a latency model trained here on a seeded load-sensitive workload
  (``models.latency.synthetic``), exported to ONNX and served by onnxruntime on one thread,
  scoring every (replica, tool) pair of a 4-replica, 5-tool fleet in one batch (20 rows), and
  the worker's real tick (the same pairs at 8 in-flight levels: 160 rows).
- **Artefact size** of each exported model.
- **The proxy with ``policy = "learned"``**: ``only1mcp bench proxy`` in front of two replica
  entries of one echo upstream, with server-wide weights posted, throughput as % of direct
  (skipped by ``--no-proxy``).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._report import Bar, machine_info, percentile, render_bars, render_table, write_json

__all__ = ["add_arguments", "run", "DEFAULT_OUT"]

DEFAULT_OUT = "bench-results/learning.json"
_REPLICAS, _TOOLS, _LEVELS = 4, 5, 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a short proxy run (for tests)")
    parser.add_argument("--no-proxy", action="store_true", help="skip the bench proxy run with policy learned")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every bar passes")


def _bars() -> list[Bar]:
    return [
        Bar("lookup_p99_us", "learned weight lookup p99 (4 replicas, per-tool curves)", "<=", 50.0, " µs"),
        Bar("inference_p99_ms", "onnxruntime P50+P95, every (replica, tool) of 4 x 5", "<=", 1.0, " ms"),
        Bar("artefact_mb", "largest model artefact", "<=", 5.0, " MB"),
        Bar("proxy_learned_vs_direct", "bench proxy, policy learned, vs direct @c8", ">=", 75.0, "%"),
    ]


def run(args: argparse.Namespace) -> int:
    repeats = 2_000 if args.quick else 20_000
    began = time.perf_counter()
    lookup = measure_lookup(repeats * 5)
    model = measure_inference(repeats // 4 if args.quick else repeats // 2)
    proxy = None if args.no_proxy else measure_proxy(args)
    bars = _bars()
    bars[0].judge(lookup["learned"]["p99_us"])
    bars[1].judge(model["batch_20"]["p99_ms"])
    bars[2].judge(model["largest_artefact_mb"])
    bars[3].judge(proxy.get("learned_pct_of_direct") if proxy else None,
                  "" if proxy else "skipped (--no-proxy)")
    report = {"benchmark": "learning", "settings": {"quick": args.quick, "repeats": repeats},
              "machine": machine_info(["onnxruntime", "xgboost-cpu", "numpy", "only1mcp"]),
              "lookup": lookup, "inference": model, "proxy": proxy, "bars": [b.to_json() for b in bars],
              "wall_s": round(time.perf_counter() - began, 2)}
    print(_render(report))
    print(render_bars(bars))
    path = write_json(args.out, report)
    print(f"\nresults: {path}")
    return 1 if args.strict and any(b.status != "PASS" for b in bars) else 0


def _stats_us(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {"p50_us": round(percentile(ordered, 50) / 1e3, 2), "p99_us": round(percentile(ordered, 99) / 1e3, 2),
            "max_us": round(ordered[-1] / 1e3, 2), "n": len(ordered)}


def measure_lookup(calls: int) -> dict[str, Any]:
    """Per-call time of ``choose`` for learned (fresh per-tool curves) and for p2c_ewma."""
    from only1mcp.proxy.routing import RouteRequest, make_policy
    from only1mcp.proxy.routing.stats import ReplicaStats

    class Replica:  # the attributes policies read
        def __init__(self, rid: str) -> None:
            self.id, self.inflight, self.stats = rid, 0, ReplicaStats()

    rng = random.Random(1)
    candidates = [Replica(f"sim/{i}") for i in range(_REPLICAS)]
    for replica in candidates:
        for t in range(20):
            replica.stats.on_start()
            replica.stats.on_finish(rng.uniform(0.01, 0.05), True, float(t))
    tools = [f"tool{t}" for t in range(_TOOLS)]
    learned = make_policy("learned", fallback_policy="p2c_ewma", rng=random.Random(2), exploration=0.05,
                          temperature=0.3)
    for tool in tools:
        curves = {r.id: [rng.uniform(5, 50) * (1 + k) ** 1.5 for k in range(_LEVELS)] for r in candidates}
        learned.apply(tool, {r.id: 1.0 for r in candidates}, curves, valid_until=1e12, model_version="bench",
                      source="latency_model")
    p2c = make_policy("p2c_ewma", rng=random.Random(3))
    requests = [RouteRequest("sim", "tools/call", tool, now=100.0) for tool in tools]
    out: dict[str, Any] = {}
    clock = time.perf_counter_ns
    for name, policy in (("learned", learned), ("p2c_ewma", p2c)):
        samples = []
        for i in range(calls):
            for replica in candidates:
                replica.inflight = (i >> 2) % 3 if replica.id != "sim/0" else i % 5
            request = requests[i % _TOOLS]
            start = clock()
            decision = policy.choose(candidates, request)
            samples.append(clock() - start)
        out[name] = {**_stats_us(samples), "example_reason": decision.reason}
    samples = []
    for _ in range(calls):
        start = clock()
        samples.append(clock() - start)
    out["timer_overhead"] = _stats_us(samples)
    return out


def measure_inference(repeats: int) -> dict[str, Any]:
    """Train a latency model on a seeded load-sensitive workload, export it, time onnxruntime."""
    import numpy as np

    from only1mcp.models.latency.features import CausalFeatures, training_frame
    from only1mcp.models.latency.onnx import LatencyModel, export
    from only1mcp.models.latency.synthetic import load_sensitive_events
    from only1mcp.models.latency.train import train

    events = load_sensitive_events(6000, seed=7, replicas=_REPLICAS, tools=_TOOLS)
    X, y, meta = training_frame(events)
    began = time.perf_counter()
    result = train(X, y, meta.ts)
    train_s = time.perf_counter() - began
    blobs, parity = export({"p50": result.p50, "p95": result.p95}, X[-500:])
    model = LatencyModel(blobs["p50"], blobs["p95"])
    live = CausalFeatures()
    for event in events:
        live.learn_one(event)
    now = events[-1]["ts"] + 1.0
    pairs = sorted({(e["replica"], e["tool"]) for e in events})
    rows20 = np.asarray([live.features(r, t, 0, now) for r, t in pairs], dtype=np.float32)
    rows160 = np.asarray([live.features(r, t, k, now) for r, t in pairs for k in range(_LEVELS)], dtype=np.float32)
    out: dict[str, Any] = {"train_s": round(train_s, 2), "rows": len(y), "parity_max_rel": parity,
                           "artefact_bytes": {k: len(v) for k, v in blobs.items()},
                           "holdout": {k: result.metrics[k] for k in ("model", "ewma")}}
    out["largest_artefact_mb"] = round(max(len(v) for v in blobs.values()) / 1e6, 3)
    for label, rows in (("batch_20", rows20), ("batch_160", rows160)):
        model.predict(rows)  # warm the sessions
        samples = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            model.predict(rows)
            samples.append(time.perf_counter_ns() - start)
        stats = _stats_us(samples)
        out[label] = {"rows": len(rows), "p50_ms": round(stats["p50_us"] / 1e3, 4),
                      "p99_ms": round(stats["p99_us"] / 1e3, 4), "n": stats["n"]}
    return out


def measure_proxy(args: argparse.Namespace) -> dict[str, Any]:
    """``only1mcp bench proxy --policy learned`` (direct and only1mcp arms), run as a subprocess."""
    import orjson

    with tempfile.TemporaryDirectory(prefix="only1mcp-bench-learning-") as tmp:
        out = Path(tmp) / "proxy.json"
        duration = ["--duration", "2", "--rounds", "2", "--warmup", "0.5"] if args.quick else []
        argv = [sys.executable, "-m", "only1mcp.cli", "bench", "proxy", "--arms", "direct", "only1mcp",
                "--concurrency", "8", "--policy", "learned", "--out", str(out), *duration]
        done = subprocess.run(argv, capture_output=True, text=True, env=getattr(args, "environ", None))
        if done.returncode != 0 or not out.exists():
            return {"error": f"bench proxy exited {done.returncode}", "stderr": done.stderr[-2000:]}
        report = orjson.loads(out.read_bytes())
    cells = {(c["arm"], c["concurrency"]): c for c in report.get("results", [])}
    direct, learned = cells.get(("direct", 8)), cells.get(("only1mcp", 8))
    if not direct or not learned:
        return {"error": "bench proxy reported no c8 cells", "report": report}
    pct = 100.0 * learned["calls_per_s"] / direct["calls_per_s"] if direct["calls_per_s"] else None
    return {"direct_calls_per_s": direct["calls_per_s"], "learned_calls_per_s": learned["calls_per_s"],
            "learned_pct_of_direct": round(pct, 2) if pct is not None else None,
            "learned_p50_ms": learned["latency_ms"]["p50"], "direct_p50_ms": direct["latency_ms"]["p50"],
            "routed_by": report.get("settings", {}).get("policy")}


def _render(report: dict[str, Any]) -> str:
    lookup, model, proxy = report["lookup"], report["inference"], report["proxy"]
    rows = [
        ["learned choose()", f"{lookup['learned']['p50_us']:.2f} µs", f"{lookup['learned']['p99_us']:.2f} µs",
         "4 replicas, per-tool curves, softmax + floor"],
        ["p2c_ewma choose()", f"{lookup['p2c_ewma']['p50_us']:.2f} µs", f"{lookup['p2c_ewma']['p99_us']:.2f} µs",
         "the classic reference"],
        ["timer overhead", f"{lookup['timer_overhead']['p50_us']:.2f} µs",
         f"{lookup['timer_overhead']['p99_us']:.2f} µs", "included in the rows above"],
        ["onnx 20 rows", f"{model['batch_20']['p50_ms']:.3f} ms", f"{model['batch_20']['p99_ms']:.3f} ms",
         "P50 + P95 models, every (replica, tool) of 4 x 5, one thread"],
        ["onnx 160 rows", f"{model['batch_160']['p50_ms']:.3f} ms", f"{model['batch_160']['p99_ms']:.3f} ms",
         "the worker's tick: 20 pairs x 8 in-flight levels"],
        ["artefacts", f"{model['artefact_bytes']['p50'] / 1e6:.3f} MB", f"{model['artefact_bytes']['p95'] / 1e6:.3f} MB",
         f"P50 / P95 ONNX; parity max rel {max(model['parity_max_rel'].values()):.2g}"],
    ]
    if proxy and "error" not in proxy:
        rows.append(["bench proxy @c8", f"{proxy['learned_calls_per_s']:.1f}/s",
                     f"{proxy['learned_pct_of_direct']:.1f} %", f"policy learned vs direct {proxy['direct_calls_per_s']:.1f}/s"])
    elif proxy:
        rows.append(["bench proxy @c8", "-", "-", proxy["error"]])
    return render_table(["measurement", "p50 / value", "p99 / value", "detail"], rows)
