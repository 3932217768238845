"""Shared benchmark reporting: latency statistics, text tables, bar checks, machine info, JSON.

Nothing here knows which benchmark it serves, so ``routing`` and ``stream``
can report the same way as ``proxy``.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Bar", "cell", "percentile", "summarize", "render_table", "render_bars", "machine_info", "write_json"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(slices: Iterable[Any]) -> dict[str, Any]:
    """Pool timed slices (objects with calls, errors, elapsed_s, latencies_ms, error_samples)."""
    slices = list(slices)
    latencies = sorted(x for s in slices for x in s.latencies_ms)
    calls = sum(s.calls for s in slices)
    elapsed = sum(s.elapsed_s for s in slices)

    def ms(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    cpu: dict[str, float] = {}
    for s in slices:
        for name, seconds in getattr(s, "cpu_s", {}).items():
            cpu[name] = cpu.get(name, 0.0) + seconds

    return {
        "calls": calls,
        "errors": sum(s.errors for s in slices),
        "elapsed_s": round(elapsed, 4),
        "calls_per_s": round(calls / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p90": ms(percentile(latencies, 90)),
            "p99": ms(percentile(latencies, 99)),
            "mean": ms(sum(latencies) / len(latencies)) if latencies else None,
            "min": ms(latencies[0]) if latencies else None,
            "max": ms(latencies[-1]) if latencies else None,
        },
        # Who burnt the CPU: on a small machine the load generator and the servers share it.
        "cpu": {
            name: {
                "seconds": ms(seconds),
                "pct_of_one_core": ms(100.0 * seconds / elapsed) if elapsed > 0 else None,
                "us_per_call": ms(1e6 * seconds / calls) if calls else None,
            }
            for name, seconds in cpu.items()
        },
        # Per-slice figures show drift across the run (cells are interleaved).
        "rounds": [
            {
                "calls": s.calls,
                "errors": s.errors,
                "elapsed_s": round(s.elapsed_s, 4),
                "calls_per_s": round(s.calls / s.elapsed_s, 2) if s.elapsed_s > 0 else 0.0,
                "p50_ms": ms(percentile(sorted(s.latencies_ms), 50)),
            }
            for s in slices
        ],
        "error_samples": [e for s in slices for e in s.error_samples][:5],
    }


def cell(value: Any, spec: str) -> str:
    """A table cell: ``value`` formatted with ``spec``, "-" when it was not measured (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str] | str]) -> str:
    """A plain text table; the first column is left-aligned, the rest right-aligned.

    A row given as one string is a note (e.g. a skipped arm) printed after the first
    column's width, unaligned.
    """
    grid = [r for r in rows if not isinstance(r, str)]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *grid)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append(row if isinstance(row, str) else line(row))
    return "\n".join(out)


@dataclass
class Bar:
    """One pass/fail check: ``value <op> threshold``; status SKIP when it could not be measured."""

    name: str
    description: str
    op: str  # ">=" or "<="
    threshold: float
    unit: str
    value: float | None = None
    status: str = "SKIP"
    note: str = ""

    def judge(self, value: float | None, note: str = "") -> Bar:
        self.value, self.note = value, note
        if value is None or math.isnan(value):
            self.status = "SKIP"
        else:
            ok = value >= self.threshold if self.op == ">=" else value <= self.threshold
            self.status = "PASS" if ok else "FAIL"
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = None if self.status == "SKIP" else self.status == "PASS"
        return data


def render_bars(bars: Sequence[Bar]) -> str:
    lines = []
    for bar in bars:
        measured = "n/a" if bar.value is None else f"{bar.value:.2f}{bar.unit}"
        text = f"{bar.status:<4}  {bar.description}: {measured} (bar {bar.op} {bar.threshold:g}{bar.unit})"
        lines.append(text + (f" - {bar.note}" if bar.note else ""))
    return "\n".join(lines)


def machine_info(packages: Sequence[str] = ()) -> dict[str, Any]:
    """What the figures depend on: cores, load, Python, package versions."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python_version": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
    }


def publish(report: dict[str, Any], out: str | Path, strict: bool) -> int:
    """Print a finished report's text, write its JSON, and give the command's exit code
    (1 only under ``strict`` when a bar did not pass)."""
    print(report.pop("_text"))
    path = write_json(out, report)
    print(f"\nresults: {path}")
    return 1 if strict and any(bar["status"] != "PASS" for bar in report["bars"]) else 0


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    return path
