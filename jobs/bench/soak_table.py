"""The soak benchmark's table: one row per window, the idle stack before and after."""

from __future__ import annotations

from typing import Any

from only1mcp.jobs.bench._report import cell, render_table

__all__ = ["LEGEND", "soak_table"]


def _range(part: dict[str, Any], key: str) -> str:
    got = part.get(key) if part else None
    if got is None:
        return "-"
    return f"{got['min']:g}" if got["min"] == got["max"] else f"{got['min']:g}-{got['max']:g}"


def _mib(part: dict[str, Any]) -> str:
    got = part.get("rss_kib") if part else None
    return "-" if got is None else f"{got['median'] / 1024:.1f}"


def _idle_row(label: str, sample: dict[str, Any]) -> list[str]:
    p, wk = sample.get("proxy") or {}, sample.get("worker") or {}
    return [label, "", "", "", "", "", cell(p.get("rss_kib") and p["rss_kib"] / 1024, ".1f"),
            cell(p.get("own_fds"), "g"), cell(p.get("client_conns"), "g"), cell(p.get("tasks"), "g"),
            cell(p.get("sessions"), "g"), "", "", "", cell(wk.get("rss_kib") and wk["rss_kib"] / 1024, ".1f"),
            cell(wk.get("fds"), "g")]


def soak_table(windows: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any]) -> str:
    rows: list[list[str] | str] = [_idle_row("idle before", before)]
    for w in windows:
        lat, p, wk = w["latency_ms"], w["proxy"], w["worker"]
        label = f"{w['start_s']:g}-{w['end_s']:g}s" + (" warm-up" if w["warmup"] else "")
        cpu = f"{cell(p.get('cpu_pct'), '.0f')}/{cell(wk.get('cpu_pct'), '.0f')}/{cell(w['host_cpu_pct'], '.0f')}"
        rows.append([label, str(w["calls"]), f"{w['calls_per_s']:.1f}", str(w["not_ok"]),
                     cell(lat["p50"], ".2f"), cell(lat["p99"], ".2f"), _mib(p), _range(p, "own_fds"),
                     _range(p, "client_conns"), _range(p, "tasks"), _range(p, "sessions"), cpu,
                     cell(w.get("host_steal_pct"), ".0f"),
                     f"{cell(w.get('loop_stalls'), 'g')}/{cell(w.get('loop_lag_max_ms'), '.0f')}", _mib(wk),
                     _range(wk, "fds")])
    rows.append(_idle_row("idle after", after))
    headers = ["window", "calls", "calls/s", "not ok", "p50 ms", "p99 ms", "proxy MiB", "fds", "clients", "tasks",
               "sessions", "CPU% prx/wkr/host", "steal%", "loop stalls/max ms", "worker MiB", "wkr fds"]
    return render_table(headers, rows)


LEGEND = ("proxy MiB, worker MiB: median resident memory; fds: the proxy's open file descriptors but its clients' "
           "connections (clients: those, kept open by the load generator's pool for its round); tasks: asyncio tasks "
           "(only1mcp_asyncio_tasks); sessions: MCP sessions held; ranges are lowest-highest of the window's samples; "
           "not ok: tool errors (the profile's error rates) and failed calls; CPU%: of one core, the proxy's, the "
           "worker's and the whole machine's (every process, this stack's and any other's; 100 per core); steal%: CPU the "
           "hypervisor gave another guest while this machine wanted it; loop stalls: the proxy's event loop woke 100 ms "
           "or more late (only1mcp_event_loop_stalls_total), max ms: its longest lateness (the last 10-20 s at each sample)")
