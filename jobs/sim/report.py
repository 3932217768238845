"""Reporting for ``bench routing``: the bar, a table per scenario, JSON and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from only1mcp.jobs.bench._report import Bar, render_bars, render_table, write_json

__all__ = ["judge_bars", "render", "plot", "write_json"]


def _summary(result: dict[str, Any], scenario: str, row: str) -> dict[str, Any] | None:
    entry = result["scenarios"].get(scenario, {}).get("rows", {}).get(row)
    return entry["summary"] if entry and entry.get("status") == "ok" else None


def judge_bars(result: dict[str, Any]) -> list[Bar]:
    bar = Bar("p2c_vs_rr_p99_slow_replica", "slow-replica: p2c_ewma p99 / round_robin p99", "<=", 0.5, "x")
    p2c, rr = _summary(result, "slow-replica", "p2c_ewma"), _summary(result, "slow-replica", "round_robin")
    if p2c is None or rr is None or not rr["latency_ms"]["p99"]:
        missing = [name for name, s in (("p2c_ewma", p2c), ("round_robin", rr)) if s is None]
        return [bar.judge(None, f"not measured: {', '.join(missing) or 'round_robin p99 is 0'}")]
    p2c_p99, rr_p99 = p2c["latency_ms"]["p99"], rr["latency_ms"]["p99"]
    return [bar.judge(p2c_p99 / rr_p99, f"{p2c_p99:.1f} ms vs {rr_p99:.1f} ms")]


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
        headers = ["policy", "mean", "p50", "p95", "p99", "success", "calls on " + "/".join([*replicas, "?"])]
        rows: list[list[str] | str] = []
        for policy, entry in scen["rows"].items():
            if entry["status"] != "ok":
                reason = " ".join(str(entry.get("reason", "")).split())[:160]
                rows.append(f"{policy:<15}  {entry['status']}" + (f" - {reason}" if reason else ""))
                continue
            summ = entry["summary"]
            lat = summ["latency_ms"]
            share = "/".join(str(summ["by_replica"].get(r, 0)) for r in [*replicas, "None"])
            rows.append([policy, _fmt(lat["mean"]), _fmt(lat["p50"]), _fmt(lat["p95"]), _fmt(lat["p99"]),
                         f"{100 * summ['success_rate']:.2f}%", share])
        rr = scen.get("model_round_robin")
        out += ["", f"{name}: {scen['description']}; {scen['calls']} calls at {scen['rate']:.1f}/s "
                    f"(capacity {scen['capacity_calls_per_s']:.0f}/s)", render_table(headers, rows)]
        if rr:
            out.append(f"(the model's own round robin: p50 {_fmt(rr['latency_ms']['p50'])}, "
                       f"p99 {_fmt(rr['latency_ms']['p99'])}, success {100 * rr['success_rate']:.2f}%)")
    out += ["", render_bars(bars), f"wall time {result.get('wall_s', 0):.0f}s"]
    return "\n".join(out)


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
