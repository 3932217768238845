"""The stream benchmark's tables: one row per (broker, workers) cell, and the scaling between cells."""

from __future__ import annotations

from typing import Any

from only1mcp.jobs.bench._report import cell

__all__ = ["cell_rows", "events_cell", "reference_cell", "scaling_between"]


def events_cell(value: float | None, spec: str = ",.0f") -> str:
    """A cell of this table: most of them count events."""
    return cell(value, spec)


def reference_cell(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The cell the bars and the old top-level keys describe: embedded with one worker, else the first."""
    return next((c for c in cells if c["broker"] == "embedded" and c["workers"] == 1), cells[0])


def cell_rows(cells: list[dict[str, Any]]) -> list[list[str] | str]:
    rows: list[list[str] | str] = []
    for one in cells:
        head = [one["broker"], str(one["workers"])]
        if one.get("error"):
            rows.append([*head, "-", "-", "-", "-", "-", "-", one["error"].splitlines()[0][:100]])
            continue
        tp, fr = one["throughput"], one["freshness"]
        others = tp["others_cpu_pct_of_core"]
        busy = "/".join(events_cell(v) for k, v in sorted(others.items()) if k.startswith("cpu"))
        rows.append([*head, events_cell(tp["events_per_s"]), events_cell(tp["events_per_cpu_s"]),
                     f"{events_cell(tp['worker_cpu_pct_of_core'])} %", events_cell(tp["events_per_s_stage1"]),
                     events_cell(fr["visible_s"]["p50"], ".3f"), events_cell(fr["visible_s"]["p99"], ".3f"),
                     f"{tp['measured_events']:,} ev in {tp['measured_s']:.1f} s; broker {events_cell(others.get('broker'))} % "
                     f"of a core; CPUs busy {busy or '-'} %; stable after {events_cell(tp['group_stable_s'], '.1f')} s"
                     + (f"; after {len(one['failed_attempts'])} failed run(s): "
                        f"{one['failed_attempts'][0].splitlines()[0][:60]}" if one.get("failed_attempts") else "")])
    return rows


def scaling_between(cells: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Per broker, each worker count against one worker: events/s and events per CPU-second."""
    lines, out = [], []
    for kind in dict.fromkeys(c["broker"] for c in cells):
        ok = {c["workers"]: c["throughput"] for c in cells if c["broker"] == kind and not c.get("error")}
        one = ok.get(1)
        if one is None or not one["events_per_s"] or not one["events_per_cpu_s"]:
            continue
        parts = []
        for workers, tp in sorted(ok.items()):
            if workers == 1 or not tp["events_per_s"] or not tp["events_per_cpu_s"]:
                continue
            wall, per_cpu = tp["events_per_s"] / one["events_per_s"], tp["events_per_cpu_s"] / one["events_per_cpu_s"]
            out.append({"broker": kind, "workers": workers, "events_per_s_ratio": round(wall, 3),
                        "events_per_cpu_s_ratio": round(per_cpu, 3)})
            parts.append(f"{workers} workers / 1 worker = {wall:.2f}× events/s, {per_cpu:.2f}× per CPU-second")
        if parts:
            lines.append(f"scaling, {kind}: " + "; ".join(parts))
    return lines, out
