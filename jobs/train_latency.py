"""The latency training job: offline store → training frame → XGBoost → ONNX → registry → gate → report.

Steps, each of which can stop the job without leaving anything half-done behind:

1. read the training rows from the DuckDB ``requests`` view (``tools/call`` that went upstream:
   not a cache hit, a replica), optionally within ``[since, until)``;
2. replay them through ``CausalFeatures`` (``training_frame``): point-in-time features;
3. ``train``: time-based split, quantile boosters, model and baseline metrics on the hold-out;
4. export both boosters to ONNX and check parity on the hold-out (> 0.1 % → refused, nothing
   registered);
5. register the candidate (with its hold-out), then — unless ``promote=False`` — run the gate, which
   promotes it or records why not;
6. write ``report.html`` and ``report.png`` into the version's folder.

Too few rows (``min_rows``) raises :class:`InsufficientData` before anything is trained.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from only1mcp.models.errors import InsufficientData, ModelError
from only1mcp.models.latency.features import FEATURE_NAMES, training_frame
from only1mcp.models.latency.onnx import FILES, LatencyModel, export
from only1mcp.models.latency.train import TrainResult, train
from only1mcp.models.registry import GateVerdict, ModelRegistry

__all__ = ["MIN_ROWS", "MAX_ROWS", "parse_time", "load_rows", "train_latency", "render_report", "predict_p99_us"]

MIN_ROWS = 500  # below this a hold-out of 20 % is too small to judge a model on
MAX_ROWS = 300_000  # the newest calls kept: bounds a retrain (features ~12 µs/row, XGBoost ~0.2 ms/row on 2 cores)

_COLUMNS = ("ts", "latency_ms", "replica", "tool", "status", "request_bytes", "inflight")


def parse_time(value: float | int | str | None) -> float | None:
    """Unix seconds from unix seconds (number or numeric text) or ISO 8601 (naive = UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time (unix seconds or ISO 8601): {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def load_rows(data_dir: str | Path, since: float | None = None, until: float | None = None,
              max_rows: int | None = None) -> list[dict[str, Any]]:
    """Training rows from the offline store, in ``ts`` order (ties by event id, so reruns agree);
    with ``max_rows``, only the newest that many."""
    from only1mcp.feature_store.offline.duckdb import upstream_calls

    return upstream_calls(data_dir, _COLUMNS, since, until, max_rows)


def predict_p99_us(model: Any, X: np.ndarray, batch: int = 20, repeats: int = 1000) -> float:
    """p99 wall time (µs) of ``model.predict`` on a batch of ``batch`` rows (one thread)."""
    rows = np.ascontiguousarray(X[:batch], dtype=np.float32)
    for _ in range(20):
        model.predict(rows)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter_ns()
        model.predict(rows)
        times[i] = time.perf_counter_ns() - start
    return float(np.percentile(times, 99) / 1000.0)


def train_latency(data_dir: str | Path, registry_dir: str | Path, since: float | str | None = None,
                  until: float | str | None = None, progress: Callable[[str, int, int], None] | None = None,
                  promote: bool = True, min_rows: int = MIN_ROWS, max_rows: int | None = MAX_ROWS,
                  params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, export, register, gate and report; returns the report as a dict (JSON-ready).

    ``since``/``until``: unix seconds or ISO 8601; ``max_rows``: train on the newest that many
    calls of the window (None: all); ``params``: XGBoost overrides (train.DEFAULT_PARAMS)."""
    since_s, until_s = parse_time(since), parse_time(until)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    rows = load_rows(data_dir, since_s, until_s, max_rows)
    timings["load_s"] = time.perf_counter() - start
    if len(rows) < min_rows:
        raise InsufficientData(f"{len(rows)} training calls in {data_dir} (tools/call, upstream, window "
                               f"{since_s}…{until_s}); at least {min_rows} are needed: nothing trained")
    start = time.perf_counter()
    X, y, meta = training_frame(rows)
    timings["features_s"] = time.perf_counter() - start
    start = time.perf_counter()
    result = train(X, y, meta.ts, progress=progress, params=params)
    timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    blobs, parity = export({"p50": result.p50, "p95": result.p95}, result.X_holdout)
    timings["export_s"] = time.perf_counter() - start
    model = LatencyModel(blobs["p50"], blobs["p95"])
    p99_us = predict_p99_us(model, result.X_holdout)
    registry = ModelRegistry(registry_dir)
    version = registry.add(result, blobs, {"since": since_s, "until": until_s}, parity=parity,
                           extra={"timings": {k: round(v, 3) for k, v in timings.items()},
                                  "predict_batch20_p99_us": round(p99_us, 1)})
    verdict: GateVerdict | None = None
    if promote:
        try:
            verdict = registry.promote(version)
        except ModelError as exc:  # the artefact just written does not load: say so, keep the live model
            verdict = GateVerdict(version, False, f"refused: {exc}")
    entry = registry.show(version)
    report: dict[str, Any] = {
        "version": version,
        "status": entry.status,
        "promoted": bool(verdict and verdict.promoted),
        "gate": verdict.to_dict() if verdict else {"promoted": False, "reason": "not run (--no-promote)"},
        "live": (registry.live().version if registry.live() else None),
        "rows": result.rows,
        "window": entry.metadata["window"],
        "metrics": result.metrics,
        "improvement": result.improvement,
        "p50_floor_factor": result.p50_floor_factor,
        "parity": parity,
        "sizes": {name: entry.metadata["files"][name]["bytes"] for name in FILES.values()},
        "predict_batch20_p99_us": round(p99_us, 1),
        "rounds": result.rounds,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "path": str(entry.path),
    }
    png = render_png(result)
    registry.write_file(version, "report.png", png)
    registry.write_file(version, "report.html", render_report(report, result, png).encode())
    report["report"] = str(entry.path / "report.html")
    return report


def render_png(result: TrainResult) -> bytes:
    """Predicted vs observed on the hold-out, feature importance, and the baseline comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    y, p50, p95 = result.y_holdout, result.pred_holdout["p50"], result.pred_holdout["p95"]
    ax = axes[0]
    ax.scatter(y, p50, s=4, alpha=0.35, label="model P50")
    ax.scatter(y, result.baseline_holdout["ewma"], s=4, alpha=0.25, label="EWMA baseline")
    lo, hi = max(min(y.min(), p50.min()), 0.01), max(y.max(), p50.max())
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("observed latency (ms)"), ax.set_ylabel("predicted (ms)")
    ax.set_title(f"hold-out: predicted vs observed (P95 coverage {np.mean(y <= p95):.1%})")
    ax.legend(loc="upper left", markerscale=3)
    ax = axes[1]
    top = sorted(result.feature_importance.items(), key=lambda kv: kv[1])[-12:]
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set_title("feature importance (P50, share of gain)")
    ax.tick_params(axis="y", labelsize=8)
    ax = axes[2]
    names = ("model", "ewma", "last_value")
    metrics = ("mae_p50", "pinball_50", "pinball_95")
    width = 0.25
    for i, metric in enumerate(metrics):
        ax.bar(np.arange(len(names)) + (i - 1) * width, [result.metrics[n][metric] for n in names], width,
               label=metric)
    ax.set_xticks(np.arange(len(names)), ["model", "EWMA baseline", "last value"])
    ax.set_ylabel("ms (lower is better)")
    ax.set_title("hold-out: model vs baselines")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def render_report(report: dict[str, Any], result: TrainResult, png: bytes) -> str:
    """A self-contained HTML page: the metrics table, the gate's verdict and the PNG inline."""
    esc = html.escape
    rows = []
    for name, label in (("model", "model (XGBoost, ONNX)"), ("ewma", "EWMA baseline (replica × tool)"),
                        ("last_value", "last-value baseline")):
        m = result.metrics[name]
        rows.append(f"<tr><td>{esc(label)}</td><td>{m['mae_p50']:.3f}</td><td>{m['pinball_50']:.3f}</td>"
                    f"<td>{m['pinball_95']:.3f}</td><td>{m['coverage_p95']:.1%}</td></tr>")
    gate = report["gate"]
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in report["sizes"].items())
    parity = ", ".join(f"{k} {v:.2g}" for k, v in report["parity"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Latency model {esc(report['version'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}} td:first-child{{text-align:left}}</style></head>
<body><h1>Latency model {esc(report['version'])}</h1>
<p>Status <b>{esc(report['status'])}</b>. Gate: {esc(str(gate.get('reason')))}</p>
<p>Rows: {report['rows']['train']} training (of which {report['rows']['validation']} validation, for early
stopping only), {report['rows']['holdout']} hold-out — the newest {report['rows']['holdout']} calls by time, never
used for training or tuning. Features: {len(FEATURE_NAMES)} (point in time).</p>
<table><tr><th>hold-out</th><th>MAE P50 (ms)</th><th>pinball 0.5</th><th>pinball 0.95</th><th>P95 coverage</th></tr>
{''.join(rows)}</table>
<p>P50 MAE {result.improvement['mae_p50_vs_ewma']:.1%} below the EWMA baseline. ONNX parity (max relative
difference vs native): {esc(parity)}. Sizes: {esc(sizes)}. onnxruntime batch of 20, p99:
{report['predict_batch20_p99_us']:.0f} µs. Rounds: {esc(str(report['rounds']))}.</p>
<img alt="predicted vs observed, feature importance, baselines" src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>
"""
