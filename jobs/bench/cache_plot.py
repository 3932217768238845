"""The cache benchmark's picture: hit rate per policy, one panel per workload, with the trace's ceilings.

Read from the report ``bench cache`` writes (``--json``), so a plot can be redrawn without a rerun:
``python -m only1mcp.jobs.bench.cache_plot bench-results/cache.json docs/bench/cache.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["plot"]

_CEILINGS = (("infinite_cache", "infinite cache", "grey"),
             ("infinite_cache_perfect_prefetch", "+ perfect prefetch", "tab:green"))


def plot(report: dict[str, Any], path: str | Path) -> Path | None:
    """Hit rate per policy per workload (bars), the ceilings as dashed lines and the issue's 85 % bar;
    None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    workloads: dict[str, list[dict[str, Any]]] = {}
    for row in report["rows"]:
        workloads.setdefault(row["workload"], []).append(row)
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.6 * len(workloads), 4.2), squeeze=False, sharey=True)
    for ax, (name, rows) in zip(axes[0], workloads.items()):
        names = [row["policy"] for row in rows]
        colours = ["tab:orange" if n == "learned" else "tab:purple" if n == "belady" else "tab:blue" for n in names]
        ax.bar(range(len(rows)), [100 * row["hit_rate"] for row in rows], color=colours)
        for x, row in enumerate(rows):
            ax.text(x, 100 * row["hit_rate"] + 1, f"{100 * row['hit_rate']:.0f}", ha="center", fontsize=7)
        ceilings = report.get("ceilings", {}).get(name, {})
        for key, label, colour in _CEILINGS:
            if key in ceilings:
                ax.axhline(100 * ceilings[key], color=colour, linestyle="--", linewidth=0.9, label=label)
        ax.axhline(85, color="tab:red", linestyle=":", linewidth=0.9, label="issue's bar (85 %)")
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(name)
    axes[0][0].set_ylabel("hit rate over safe calls, %")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("response cache and prefetch policies (bench cache)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":  # redraw from a saved report
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m only1mcp.jobs.bench.cache_plot REPORT.json OUT.png")
    written = plot(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
    print(written or "matplotlib is not installed: no plot")
