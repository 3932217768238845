"""Reporting for ``bench routing``: the bars, a table per scenario, JSON and PNG plots.

With ``--with-learned`` the learning rows add the share of calls the learned weights
routed (the rest fell back), the training metrics of the ``learned`` row, the drift
timeline (rolling p95 per row in buckets, and how long after the flip each row takes to
come back within 20 % of the oracle's) and its plot ``routing-drift.png``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._report import Bar, percentile, render_bars, render_table, write_json

__all__ = ["DRIFT_TOLERANCE", "drift_timeline", "judge_bars", "render", "plot", "plot_drift", "write_json"]

DRIFT_TOLERANCE = 0.2  # "back within 20 % of the oracle's rolling p95"
DRIFT_HOLD_BUCKETS = 3  # ... and staying there this many buckets in a row (or to the end of the run)
REFERENCE_ROWS = ("oracle", "oracle_informed")  # simulated, not policies: the rows the others are measured against


def drift_timeline(records: Mapping[str, Iterable[Any]], flip_s: float, duration_s: float, bucket_s: float,
                   timeout_s: float) -> dict[str, Any]:
    """Rolling p95 (ms, censored at the timeout) per row in ``bucket_s`` buckets of planned send time,
    and per row the seconds after the flip until it is back within 20 % of the oracle's p95 (and of
    the informed oracle's, when its records are given).

    A row is back at the end of the first bucket after the flip from which its p95 stays <= 1.2 x the
    reference's for DRIFT_HOLD_BUCKETS buckets in a row (or until the run ends); None = never.
    """
    cap = timeout_s * 1000.0
    edges = [i * bucket_s for i in range(int(math.ceil(duration_s / bucket_s)))]
    series: dict[str, list[dict[str, Any]]] = {}
    for row, calls in records.items():
        buckets: list[list[float]] = [[] for _ in edges]
        for call in calls:
            r = asdict(call) if is_dataclass(call) else call
            t = r.get("scheduled")
            t = r.get("start") if t is None else t
            i = int(t // bucket_s) if t is not None and t >= 0 else -1
            if 0 <= i < len(buckets):
                buckets[i].append(min(float(r["latency_ms"]), cap))
        series[row] = [{"t": edge, "n": len(b), "p95": round(percentile(sorted(b), 95), 2) if b else None}
                       for edge, b in zip(edges, buckets)]
    after = [i for i, edge in enumerate(edges) if edge >= flip_s]
    recovery: dict[str, float | None] = {}
    recovery_informed: dict[str, float | None] = {}
    own_recovery: dict[str, float | None] = {}
    before: dict[str, float | None] = {}
    before_informed: dict[str, float | None] = {}
    for row, points in series.items():
        if row in REFERENCE_ROWS:
            continue
        for reference, back, pre in (("oracle", recovery, before), ("oracle_informed", recovery_informed,
                                                                     before_informed)):
            ref = series.get(reference)
            if ref:
                back[row] = _back_within(points, ref, after, edges, bucket_s, flip_s)
                pre[row] = _pre_flip_ratio(points, ref, edges, flip_s)
        # Back to its own level: p95 within 20 % of its own mean p95 over the second half before the flip
        own = [p["p95"] for p, edge in zip(points, edges) if flip_s / 2 <= edge < flip_s and p["p95"]]
        if own:
            level = [{"p95": sum(own) / len(own)}] * len(points)
            own_recovery[row] = _back_within(points, level, after, edges, bucket_s, flip_s)
    return {"flip_s": flip_s, "bucket_s": bucket_s, "tolerance": DRIFT_TOLERANCE, "hold_buckets": DRIFT_HOLD_BUCKETS,
            "recovery_s": recovery, "pre_flip_p95_vs_oracle": before, "back_to_own_level_s": own_recovery,
            "recovery_vs_informed_s": recovery_informed, "pre_flip_p95_vs_informed": before_informed,
            "series": series}


def _back_within(points: list[dict[str, Any]], ref: list[dict[str, Any]], after: list[int], edges: list[float],
                 bucket_s: float, flip_s: float) -> float | None:
    """Seconds after the flip until ``points``' p95 is <= 1.2 x ``ref``'s for DRIFT_HOLD_BUCKETS buckets in a row."""
    within = [p["p95"] is not None and r["p95"] is not None and p["p95"] <= (1 + DRIFT_TOLERANCE) * r["p95"]
              for p, r in zip(points, ref)]
    for i in after:
        hold = within[i:i + DRIFT_HOLD_BUCKETS]
        if hold and all(hold):
            return round(edges[i] + bucket_s - flip_s, 1)
    return None


def _pre_flip_ratio(points: list[dict[str, Any]], ref: list[dict[str, Any]], edges: list[float],
                    flip_s: float) -> float | None:
    """The row's p95 over the reference's over the second half before the flip (warmed up)."""
    pre = [(p["p95"], r["p95"]) for p, r, edge in zip(points, ref, edges)
           if flip_s / 2 <= edge < flip_s and p["p95"] and r["p95"]]
    return round(sum(a for a, _ in pre) / sum(b for _, b in pre), 3) if pre else None


def _summary(result: dict[str, Any], scenario: str, row: str) -> dict[str, Any] | None:
    entry = result["scenarios"].get(scenario, {}).get("rows", {}).get(row)
    return entry["summary"] if entry and entry.get("status") == "ok" else None


def _ratio_bar(result: dict[str, Any], bar: Bar, scenario: str, row: str, base: str, q: str) -> Bar:
    """``row``'s ``q`` latency over ``base``'s in ``scenario``; SKIP (with the reason) when one is missing."""
    a, b = _summary(result, scenario, row), _summary(result, scenario, base)
    if a is None or b is None or not b["latency_ms"][q]:
        rows = result["scenarios"].get(scenario, {}).get("rows", {})
        if scenario not in result["scenarios"]:
            return bar.judge(None, f"not measured: scenario {scenario} not run")
        missing = [f"{n} ({rows.get(n, {}).get('status', 'not run')}: "
                   f"{' '.join(str(rows.get(n, {}).get('reason', '')).split())[:100]})"
                   for n, s in ((row, a), (base, b)) if s is None]
        return bar.judge(None, f"not measured: {'; '.join(missing) or f'{base} {q} is 0'}")
    served = _served_by(result, scenario, row)
    if served == base:
        return bar.judge(None, f"not measured: {row} served {base}'s weights (the gate refused the model), "
                               f"so there is no model to compare with {base}")
    va, vb = a["latency_ms"][q], b["latency_ms"][q]
    return bar.judge(va / vb, f"{va:.1f} ms vs {vb:.1f} ms" + _served_note(served))


def _served_by(result: dict[str, Any], scenario: str, row: str) -> str | None:
    """The weights a ``learned`` row was served by when no model passed the gate (``tool_ewma``), else None."""
    entry = result["scenarios"].get(scenario, {}).get("rows", {}).get(row) or {}
    return entry.get("served_by")


def _served_note(served: str | None) -> str:
    return f" (on {served}'s weights: the gate refused the model)" if served else ""


def judge_bars(result: dict[str, Any]) -> list[Bar]:
    bars = [_ratio_bar(result, Bar("p2c_vs_rr_p99_slow_replica", "slow-replica: p2c_ewma p99 / round_robin p99",
                                   "<=", 0.5, "x"), "slow-replica", "p2c_ewma", "round_robin", "p99")]
    if not result["settings"].get("with_learned"):
        return bars
    bars += [
        _ratio_bar(result, Bar("learned_vs_rr_mean_specialised", "specialised: learned mean / round_robin mean",
                               "<=", 0.6, "x"), "specialised", "learned", "round_robin", "mean"),
        _ratio_bar(result, Bar("learned_vs_p2c_p99_specialised", "specialised: learned p99 / p2c_ewma p99",
                               "<=", 0.85, "x"), "specialised", "learned", "p2c_ewma", "p99"),
        _ratio_bar(result, Bar("learned_vs_p2c_mean_homogeneous", "homogeneous: learned mean / p2c_ewma mean",
                               "<=", 1.05, "x"), "homogeneous", "learned", "p2c_ewma", "mean"),
    ]
    bars.append(_drift_bar(result, Bar("learned_drift_recovery", "drift: s after the flip until learned's rolling "
                                                                 "p95 is within 20% of the oracle's", "<=", 60.0, " s"),
                           "recovery_s", "pre_flip_p95_vs_oracle", "oracle"))
    # Ours, beside the issue's: the clairvoyant oracle knows each call's draws, which no policy can;
    # the informed one knows only what a perfect model would.
    bars.append(_drift_bar(result, Bar("learned_drift_recovery_informed",
                                       "drift: s after the flip until learned's rolling p95 is within 20% of the "
                                       "informed oracle's", "<=", 60.0, " s"),
                           "recovery_vs_informed_s", "pre_flip_p95_vs_informed", "informed oracle"))
    bars.append(_ratio_bar(result, Bar("learned_vs_tool_ewma_p99_load_sensitive",
                                       "load-sensitive: learned p99 / tool_ewma p99", "<=", 0.9, "x"),
                           "load-sensitive", "learned", "tool_ewma", "p99"))
    bars.append(_mae_bar(result, "load-sensitive"))
    return bars


def _drift_bar(result: dict[str, Any], bar: Bar, recovery_key: str, pre_key: str, reference: str) -> Bar:
    """Seconds until learned's rolling p95 is back within 20 % of a reference row's after the flip."""
    drift = result["scenarios"].get("drift")
    if drift is None:
        return bar.judge(None, "not measured: scenario drift not run")
    row = drift["rows"].get("learned", {})
    if row.get("status") != "ok":
        return bar.judge(None, f"not measured: learned {row.get('status', 'not run')}: "
                               f"{' '.join(str(row.get('reason', '')).split())[:120]}")
    timeline = drift["drift"]
    if recovery_key not in timeline:
        return bar.judge(None, f"not measured: no {reference} series in this result")
    got = timeline[recovery_key].get("learned")
    left = drift["duration_s"] - timeline["flip_s"]
    pre = timeline[pre_key].get("learned")
    pre_note = f"; before the flip learned's p95 was {pre:.2f}x the {reference}'s" if pre else ""
    return bar.judge(got if got is not None else math.inf,
                     (f"back after {got:g} s" if got is not None else
                      f"never back within 20% in the {left:g} s after the flip") + pre_note
                     + _served_note(row.get("served_by")))


def _mae_bar(result: dict[str, Any], scenario: str) -> Bar:
    """How far below the per-(replica, tool) EWMA the model's hold-out P50 MAE is, with the oracle's."""
    bar = Bar(f"model_p50_mae_vs_ewma_{scenario.replace('-', '_')}", f"{scenario}: model P50 MAE below the EWMA baseline's",
              ">=", 20.0, "%")
    scen = result["scenarios"].get(scenario)
    training = ((scen or {}).get("rows", {}).get("learned") or {}).get("training") or {}
    metrics = (training.get("model") or {}).get("metrics") or {}
    model, ewma = (metrics.get("model") or {}).get("mae_p50"), (metrics.get("ewma") or {}).get("mae_p50")
    if not model or not ewma:
        return bar.judge(None, f"not measured: no trained model's metrics for {scenario}")
    note = ""
    for key, who in (("mae_informed", "the informed oracle (the queue and the profiles, no draw)"),
                     ("mae_floor", "the oracle knowing each call's wait")):
        value = (training.get(key) or {}).get("mae_p50_ms")
        if value is not None:
            note += f"; {who}: {value:.2f} ms, {100 * (1 - value / ewma):.0f}% below"
    return bar.judge(100 * (1 - model / ewma), f"{model:.2f} vs {ewma:.2f} ms{note}")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(result: dict[str, Any], bars: list[Bar]) -> str:
    s = result["settings"]
    machine = result["machine"]
    out = [
        f"routing benchmark: open loop at {100 * s['utilisation']:.0f}% of fleet capacity, {s['duration_s']:g}s per "
        f"run, {s['sessions']} sessions, seed {s['seed']}, timeout {s['timeout_s']:g}s; "
        f"{machine['cpus_usable']} CPUs, Python {machine['python_version']}",
        "latency: ms over all calls, each censored at the timeout; success: ok reply within the timeout",
    ]
    for name, scen in result["scenarios"].items():
        replicas = list(scen["replicas"])
        # "?" counts calls no replica answered (timed out in the proxy, or refused).
        learning = s.get("with_learned")
        headers = ["policy", "mean", "p50", "p95", "p99", "success", "calls on " + "/".join([*replicas, "?"])]
        if learning:
            headers.append("by weights")
        rows: list[list[str] | str] = []
        notes: list[str] = []
        for policy, entry in scen["rows"].items():
            if entry["status"] != "ok":
                reason = " ".join(str(entry.get("reason", "")).split())[:200]
                rows.append(f"{policy:<15}  {entry['status']}" + (f" - {reason}" if reason else ""))
                if entry.get("training"):
                    notes.append(f"  {policy} training: {_training_line(entry['training'])}")
                continue
            summ = entry["summary"]
            lat = summ["latency_ms"]
            share = "/".join(str(summ["by_replica"].get(r, 0)) for r in [*replicas, "None"])
            label = policy
            if entry.get("served_by"):
                label += "*"
                notes.append(f"  {label}: no model passed the gate, so the loop served {entry['served_by']}'s "
                             f"weights, as it does for any `policy = \"learned\"` server until one does")
            cells = [label, _fmt(lat["mean"]), _fmt(lat["p50"]), _fmt(lat["p95"]), _fmt(lat["p99"]),
                     f"{100 * summ['success_rate']:.2f}%", share]
            if learning:
                routed = entry.get("routing_share") or {}
                cells.append("-" if routed.get("learned_share") is None else f"{100 * routed['learned_share']:.1f}%")
                if "routing_share" in entry:
                    notes.append(f"  {policy}: {_share_line(entry)}")
                if entry.get("training"):
                    notes.append(f"  {policy} training: {_training_line(entry['training'])}")
            rows.append(cells)
        rr = scen.get("model_round_robin")
        out += ["", f"{name}: {scen['description']}; {scen['calls']} calls at {scen['rate']:.1f}/s "
                    f"(capacity {scen['capacity_calls_per_s']:.0f}/s)", render_table(headers, rows)]
        if rr:
            out.append(f"(the model's own round robin: p50 {_fmt(rr['latency_ms']['p50'])}, "
                       f"p99 {_fmt(rr['latency_ms']['p99'])}, success {100 * rr['success_rate']:.2f}%)")
        out += notes
        if scen.get("drift"):
            out += _drift_lines(scen["drift"])
    out += ["", render_bars(bars), f"wall time {result.get('wall_s', 0):.0f}s"]
    return "\n".join(out)


def _drift_lines(d: dict[str, Any]) -> list[str]:
    def seconds(values: dict[str, float | None]) -> str:
        return ", ".join(f"{row} {'never' if v is None else f'{v:g} s'}" for row, v in values.items())

    def ratios(values: dict[str, float | None]) -> str:
        return ", ".join(f"{row} {v:.2f}x" for row, v in values.items() if v is not None)

    out = [f"  drift: flip at {d['flip_s']:g} s ({d['bucket_s']:g} s buckets, held {d['hold_buckets']}); back within "
           f"20% of the oracle's rolling p95: {seconds(d['recovery_s'])}",
           f"  drift: p95 before the flip vs the oracle's: {ratios(d.get('pre_flip_p95_vs_oracle') or {})}"]
    if "recovery_vs_informed_s" in d:
        out += [f"  drift: back within 20% of the informed oracle's: {seconds(d['recovery_vs_informed_s'])}; "
                f"before the flip vs it: {ratios(d.get('pre_flip_p95_vs_informed') or {})}"]
    out.append(f"  drift: back within 20% of its own pre-flip p95: {seconds(d.get('back_to_own_level_s') or {})}")
    return out


def _share_line(entry: dict[str, Any]) -> str:
    r = entry.get("routing_share") or {}
    if "error" in r:
        return f"routing share unknown ({r['error']})"
    if not r.get("events"):
        return "routing share unknown (no request events in the offline store for the run)"
    line = (f"{r['learned']} of {r['events']} calls routed by the learned weights "
            f"({', '.join(f'{k} {v}' for k, v in r.get('by_source', {}).items()) or 'source unnamed'}), "
            f"{r['fallback']} by the fallback" + (f", {r['health']} by health alone (the only routable replica)"
                                                  if r.get("health") else ""))
    if r.get("fallback_reasons"):
        top = next(iter(r["fallback_reasons"]))
        line += f" (most: {top!r})"
    pub = entry.get("weights_published") or {}
    if pub:
        line += f"; weights published during the run: {pub.get('by_source') or 'none'}"
    phases = entry.get("phases_s") or {}
    if phases:
        line += "; phases " + ", ".join(f"{k[:-2]} {v:.0f}s" for k, v in phases.items())
    return line


def _training_line(training: dict[str, Any]) -> str:
    """P50 MAE model vs the EWMA baseline, P95 coverage, the gate; or why there is none."""
    model = training.get("model") or {}
    metrics = model.get("metrics") or {}
    m, ewma = metrics.get("model") or {}, metrics.get("ewma") or {}
    if not m:
        return f"{training.get('status')}: {training.get('reason') or 'no metrics found in the registry'}"
    mae = m.get("mae_p50", math.nan)
    if ewma.get("mae_p50"):
        gain = 1 - mae / ewma["mae_p50"]
        first = (f"hold-out P50 MAE {mae:.2f} ms vs EWMA baseline {ewma['mae_p50']:.2f} ms "
                 f"({100 * abs(gain):.0f}% {'lower' if gain >= 0 else 'HIGHER'})")
    else:
        first = f"hold-out P50 MAE {mae:.2f} ms"
    for key, who in (("mae_informed", "informed oracle"), ("mae_floor", "oracle knowing each call's wait")):
        value = (training.get(key) or {}).get("mae_p50_ms")
        if value is not None:
            below = f", {100 * (1 - value / ewma['mae_p50']):.0f}% below EWMA" if ewma.get("mae_p50") else ""
            first += f"; {who} {value:.2f} ms{below}"
    parts = [first, f"P95 coverage {100 * m.get('coverage_p95', math.nan):.1f}%"]
    rows = model.get("rows") or {}
    if rows:
        parts.append(f"rows train {rows.get('train')} / hold-out {rows.get('holdout')}")
    parts.append(f"{model.get('status')}" + (f" ({model.get('status_reason')})" if model.get("status_reason") else ""))
    return "; ".join(parts)[:700] + f"; {training.get('wall_s', 0):.0f}s"


def plot_drift(result: dict[str, Any], path: Path) -> Path | None:
    """Rolling p95 over time per row for the drift scenario, the flip marked; None without drift or matplotlib."""
    drift = result["scenarios"].get("drift", {}).get("drift")
    if not drift:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.8))
    bucket = drift["bucket_s"]
    for row, points in drift["series"].items():
        xs = [p["t"] + bucket / 2 for p in points if p["p95"] is not None]
        ys = [p["p95"] for p in points if p["p95"] is not None]
        informed = drift.get("recovery_vs_informed_s") or {}
        if row in REFERENCE_ROWS:
            style = {"color": "black" if row == "oracle" else "dimgray", "linewidth": 2.2,
                     "linestyle": "-" if row == "oracle" else "--"}
            label = row
        else:
            style = {"linewidth": 1.5}
            back = (drift["recovery_s"].get(row), informed.get(row))
            label = f"{row} (back {' / '.join('never' if v is None else f'{v:g}s' for v in back[:1 + bool(informed)])})"
        ax.plot(xs, ys, marker=".", label=label, **style)
        if row == "oracle":
            ax.plot(xs, [(1 + drift["tolerance"]) * y for y in ys], color="black", linestyle=":", linewidth=1,
                    label="oracle + 20%")
    ax.axvline(drift["flip_s"], color="red", linestyle="--", linewidth=1)
    ax.text(drift["flip_s"], 0.97, " flip", color="red", va="top",
            transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the measured run")
    ax.set_ylabel(f"p95 latency ms per {bucket:g}s bucket")
    ax.set_title(result["scenarios"]["drift"]["description"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """p50 and p99 per policy, one panel per scenario (log scale); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scenarios = list(result["scenarios"].items())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.2 * len(scenarios), 4.6), squeeze=False)
    timeout_ms = 1000.0 * result["settings"]["timeout_s"]
    for ax, (name, scen) in zip(axes[0], scenarios):
        names = list(scen["rows"])
        xs = range(len(names))
        for offset, (q, colour) in zip((-0.2, 0.2), (("p50", "tab:blue"), ("p99", "tab:orange"))):
            values = [_q(scen["rows"][n], q) for n in names]
            ax.bar([x + offset for x in xs], [v or 0 for v in values], width=0.4, label=q, color=colour)
            for x, v in zip(xs, values):
                if v is None:
                    ax.text(x, 1.5, "n/a", ha="center", va="bottom", fontsize=8, rotation=90)
        ax.axhline(timeout_ms, color="grey", linestyle="--", linewidth=0.8, label="timeout")
        ax.set_yscale("log")
        ax.set_ylim(1, timeout_ms * 1.6)
        ax.set_xticks(list(xs), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(name)
        ax.set_ylabel("latency ms (censored at timeout)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"routing policies vs oracle (seed {result['settings']['seed']}, "
                 f"{100 * result['settings']['utilisation']:.0f}% load)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _q(entry: dict[str, Any], q: str) -> float | None:
    return entry["summary"]["latency_ms"][q] if entry.get("status") == "ok" else None
