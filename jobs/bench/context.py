"""``only1mcp bench context``: how much smaller an opted-in client's tools/list is, and whether the
tool it calls next is still at hand (in the list, or found by the search meta-tool).

Five toolbox servers of 22 tools each (``jobs/servers/toolbox.py``, one process, one port each)
behind ``only1mcp proxy`` with ``[context] enabled``; one client identity (a token) per trace
client, opted in by its ``initialize`` capability. The agent traces (``jobs/bench/traces/
devtools.jsonl`` and ``support.jsonl``, merged in time order: 40 clients, each focused on the 9
or 11 tools of its world) are replayed call by call, each trace session as one MCP session:
``initialize`` and ``tools/list`` at its start; before each call, if the call's tool is not in the
list the session holds, a search with a query made from the tool's task
(``_context_agent.TASKS``, never the tool's name), and when the search finds it, ``tools/list``
again (what a client does on the ``list_changed`` the search causes); then the call itself, by
name, listed or not; ``DELETE`` at the session's end. Nothing is simulated at the gateway: the
proxy's own history, ranking and search decide.

Sizes are of the ``tools`` array as JSON (every page), against the full catalog a client that is
not opted in gets. Tokens are approximated (``_context_agent``: tiktoken is not installed).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from only1mcp.jobs.bench._context_agent import (
    Client, approx_tokens, description_query, exposed_names, pieces, task_query,
)
from only1mcp.jobs.bench._procs import ProcessGroup, free_ports
from only1mcp.jobs.bench._report import Bar, machine_info, render_bars, render_table, write_json
from only1mcp.jobs.servers.toolbox_catalog import SERVERS
from only1mcp.jobs.sim.traces import TraceCall, read_trace
from only1mcp.proxy.toolsearch import ToolIndex

__all__ = ["add_arguments", "run", "DEFAULT_OUT", "TRACES"]

DEFAULT_OUT = "bench-results/context.json"
TRACES = [Path(__file__).resolve().parent / "traces" / f"{name}.jsonl" for name in ("devtools", "support")]
SEARCH_TOOL = "only1mcp_search_tools"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the first 150 calls of each trace (for tests)")
    parser.add_argument("--calls", type=int, default=None, help="calls per trace (default: all; --quick: 150)")
    parser.add_argument("--max-tools", type=int, default=15, help="[context] max_tools (default %(default)s)")
    parser.add_argument("--search-limit", type=int, default=5, help="[context] search_limit (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the agent's choice of query (default %(default)s)")
    parser.add_argument("--json", dest="out", default=DEFAULT_OUT, metavar="OUT.json",
                        help="JSON results file (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every bar passes")


def _start(group: ProcessGroup, tmp: Path, args: argparse.Namespace, tokens: list[str]) -> str:
    ports = free_ports(len(SERVERS) + 1)
    argv = [sys.executable, "-m", "only1mcp.jobs.servers.toolbox"]
    for port in ports[:-1]:
        argv += ["--port", str(port)]
    group.start("toolbox", argv)
    config = [f'[proxy]\nlisten = "127.0.0.1:{ports[-1]}"\nlog_level = "warning"\n',
              f"[auth]\ntokens = {json.dumps(tokens)}\n",
              f"[context]\nenabled = true\nmax_tools = {args.max_tools}\nsearch_limit = {args.search_limit}\n"]
    for (name, _what, _tools), port in zip(SERVERS, ports):
        config.append(f'[[servers]]\nname = "{name}"\n[[servers.replicas]]\nurl = "http://127.0.0.1:{port}/mcp"\n')
    path = tmp / "proxy.toml"
    path.write_text("\n".join(config))
    group.start("proxy", [sys.executable, "-m", "only1mcp.cli", "proxy", "--config", str(path)])
    return f"http://127.0.0.1:{ports[-1]}/mcp"


def _wait_catalog(client: Client, token: str, group: ProcessGroup, expected: int) -> list[dict[str, Any]]:
    """The full catalog, once the proxy lists every server's tools (or a clear error)."""
    deadline, last = time.monotonic() + 90, "no answer"
    while time.monotonic() < deadline:
        for proc in group.procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail(20)}")
        try:
            tools = client.tools(token, client.open(token, opt_in=False))
            if len(tools) >= expected:
                return tools
            last = f"{len(tools)} of {expected} tools listed"
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise RuntimeError(f"the proxy did not list the toolbox catalog within 90 s ({last})")


def _load(limit: int | None) -> list[TraceCall]:
    calls: list[TraceCall] = []
    for path in TRACES:
        calls.extend(read_trace(path)[:limit])
    return sorted(calls, key=lambda c: c.ts)  # stable: each trace keeps its order


def replay(client: Client, calls: list[TraceCall], tokens: dict[str, str], seed: int) -> dict[str, Any]:
    names = exposed_names()
    rng = random.Random(seed)
    last_call = {c.session: i for i, c in enumerate(calls)}
    open_sessions: dict[str, dict[str, Any]] = {}
    history: Counter[str] = Counter()  # calls each client made so far
    lists, sessions, outcomes, searches = [], [], Counter(), []
    errors = inconsistent = 0
    for i, call in enumerate(calls):
        token = tokens[call.client or ""]
        state = open_sessions.get(call.session)
        if state is None:
            sid = client.open(token, opt_in=True)
            tools = client.tools(token, sid)
            payload = orjson.dumps(tools)
            lists.append({"history": history[call.client or ""], "tools": len(tools), "bytes": len(payload),
                          "tokens": approx_tokens(payload), "pieces": pieces(payload)})
            state = open_sessions[call.session] = {"sid": sid, "visible": {t["name"] for t in tools},
                                                   "bytes": len(payload), "warm": history[call.client or ""] > 0}
        exposed = names[call.tool]
        if exposed in state["visible"]:
            outcome = "listed"
        else:
            query = task_query(call.tool, call.args, rng)
            reply = client.request(token, state["sid"], "tools/call", {"name": SEARCH_TOOL,
                                                                       "arguments": {"query": query}})
            text = reply["result"]["content"][0]["text"]
            found = [t["name"] for t in json.loads(text)] if text.startswith("[") else []
            state["bytes"] += len(text)
            searches.append({"tool": call.tool, "query": query, "found": exposed in found, "bytes": len(text)})
            outcome = "missed"
            if exposed in found:
                outcome = "found"
                tools = client.tools(token, state["sid"])  # as on the search's list_changed
                state["visible"] = {t["name"] for t in tools}
                state["bytes"] += len(orjson.dumps(tools))
                inconsistent += exposed not in state["visible"]
        outcomes[("warm " if state["warm"] else "cold ") + outcome] += 1
        answer = client.request(token, state["sid"], "tools/call", {"name": exposed, "arguments": call.args})
        errors += "error" in answer or bool(answer.get("result", {}).get("isError"))
        history[call.client or ""] += 1
        if last_call[call.session] == i:
            client.close(token, state["sid"])
            sessions.append({"warm": state["warm"], "bytes": state["bytes"]})
            del open_sessions[call.session]
    return {"lists": lists, "sessions": sessions, "outcomes": dict(outcomes), "searches": searches,
            "errors": errors, "inconsistent": inconsistent}


def search_alone(catalog: list[dict[str, Any]], calls: list[TraceCall], limit: int, seed: int) -> dict[str, float]:
    """Recall of the search on every call (the proxy's scorer over the same catalog), per query mode."""
    index, names = ToolIndex(catalog), exposed_names()
    descriptions = {tool["name"]: tool.get("description", "") for tool in catalog}
    rng = random.Random(seed + 1)
    hits = Counter()
    for call in calls:
        exposed = names[call.tool]
        for mode, query in (("task", task_query(call.tool, call.args, rng)),
                            ("description", description_query(call.tool, descriptions[exposed], rng))):
            hits[mode] += any(tool["name"] == exposed for tool, _ in index.search(query, limit))
    return {mode: hits[mode] / len(calls) for mode in ("task", "description")}


def run(args: argparse.Namespace) -> int:
    limit = args.calls if args.calls is not None else (150 if args.quick else None)
    calls = _load(limit)
    clients = sorted({c.client or "" for c in calls})
    tokens = {name: f"bench-context-{i}-{name}" for i, name in enumerate(clients)}
    full_token = "bench-context-not-opted-in"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="only1mcp-bench-context-") as tmp, ProcessGroup(Path(tmp)) as group:
        url = _start(group, Path(tmp), args, [*tokens.values(), full_token])
        client = Client(url)
        catalog = _wait_catalog(client, full_token, group, sum(len(tools) for _n, _w, tools in SERVERS))
        replayed_at = time.monotonic()
        result = replay(client, calls, tokens, args.seed)
        replay_s = time.monotonic() - replayed_at
    full = orjson.dumps(catalog)
    report = _report(args, calls, catalog, full, result, search_alone(catalog, calls, args.search_limit, args.seed),
                     replay_s, client.requests, time.monotonic() - started)
    print(report.pop("_text"))
    path = write_json(args.out, report)
    print(f"\nresults: {path}")
    return 1 if args.strict and any(bar["status"] != "PASS" for bar in report["bars"]) else 0


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _report(args: argparse.Namespace, calls: list[TraceCall], catalog: list[dict[str, Any]], full: bytes,
            result: dict[str, Any], alone: dict[str, float], replay_s: float, requests: int,
            total_s: float) -> dict[str, Any]:
    lists = result["lists"]
    groups = {"no history of its own (cold)": [x for x in lists if x["history"] == 0],
              "client with history": [x for x in lists if x["history"] > 0],
              "client with ≥ 50 calls": [x for x in lists if x["history"] >= 50]}
    full_row = ["full catalog (not opted in)", "1", str(len(catalog)), f"{len(full):,}", f"{approx_tokens(full):,}",
                f"{pieces(full):,}", "-"]
    rows: list[list[str] | str] = [full_row]
    reductions: dict[str, float] = {}
    for label, chosen in groups.items():
        if not chosen:
            rows.append(f"{label}: no session")
            continue
        size = _mean([x["bytes"] for x in chosen])
        reductions[label] = 1 - size / len(full)
        rows.append([f"pruned, {label}", str(len(chosen)), f"{_mean([x['tools'] for x in chosen]):.1f}",
                     f"{size:,.0f}", f"{_mean([x['tokens'] for x in chosen]):,.0f}",
                     f"{_mean([x['pieces'] for x in chosen]):,.0f}", f"-{reductions[label]:.1%}"])
    warm_sessions = [s["bytes"] for s in result["sessions"] if s["warm"]]
    if warm_sessions:
        whole = _mean(warm_sessions)
        rows.append(["per session of a client with history, lists + searches", str(len(warm_sessions)), "",
                     f"{whole:,.0f}", f"{whole / 4:,.0f}", "", f"-{1 - whole / len(full):.1%}"])
    outcomes = result["outcomes"]
    total = sum(outcomes.values())
    at_hand = (outcomes.get("warm listed", 0) + outcomes.get("cold listed", 0) + outcomes.get("warm found", 0)
               + outcomes.get("cold found", 0)) / total
    outcome_rows: list[list[str] | str] = []
    for who in ("warm", "cold", "all"):
        keys = ("warm", "cold") if who == "all" else (who,)
        counts = {o: sum(outcomes.get(f"{k} {o}", 0) for k in keys) for o in ("listed", "found", "missed")}
        n = sum(counts.values())
        if n:
            outcome_rows.append([{"warm": "client with history", "cold": "no history of its own", "all": "all"}[who],
                                 str(n), f"{counts['listed'] / n:.1%}", f"{counts['found'] / n:.1%}",
                                 f"{counts['missed'] / n:.1%}", f"{(counts['listed'] + counts['found']) / n:.1%}"])
    searches = result["searches"]
    warm_reduction = reductions.get("client with history")
    bars = [
        Bar("pruned_smaller", "pruned tools/list vs the full catalog, sessions of a client with history (bytes)",
            ">=", 70, "%").judge(None if warm_reduction is None else 100 * warm_reduction),
        Bar("at_hand", "next call's tool in the session's list or found by search_tools", ">=", 95, "%").judge(
            100 * at_hand),
        Bar("calls_fail", "replayed calls answered with an error (unlisted tools are called by name)", "<=", 0,
            "").judge(float(result["errors"])),
    ]
    sessions = len({c.session for c in calls})
    text = "\n".join([
        f"catalog: {len(SERVERS)} toolbox servers, {len(catalog)} tools; [context] max_tools {args.max_tools}, "
        f"search_limit {args.search_limit}",
        f"replay: {', '.join(p.name for p in TRACES)} merged by time: {len(calls)} calls, {sessions} sessions, "
        f"{len({c.client for c in calls})} clients ({requests:,} HTTP requests in {replay_s:.1f} s)",
        "tokens ≈ bytes / 4; pieces = runs of letters, digits or punctuation in the JSON",
        "", render_table(["tools/list payload", "sessions", "tools", "bytes", "≈tokens", "pieces", "vs full"], rows),
        "", render_table(["next call's tool", "calls", "in list", "found by search", "neither", "at hand"],
                         outcome_rows),
        f"searches: {len(searches)} (query from the tool's task), found {sum(s['found'] for s in searches)}, "
        f"mean answer {_mean([s['bytes'] for s in searches]):,.0f} bytes; found tools missing from the list that "
        f"followed: {result['inconsistent']}",
        f"search alone over every replayed call (recall@{args.search_limit}): task query {alone['task']:.1%}, "
        f"three words of the tool's description {alone['description']:.1%}",
        "", render_bars(bars)])
    missed = Counter(s["tool"] for s in searches if not s["found"])
    return {"_text": text, "benchmark": "context", "bars": [b.to_json() for b in bars], "catalog_tools": len(catalog),
            "full_bytes": len(full), "full_tokens": approx_tokens(full), "full_pieces": pieces(full),
            "reductions": reductions, "outcomes": outcomes, "at_hand": at_hand, "errors": result["errors"],
            "inconsistent": result["inconsistent"], "search_alone": alone, "missed_by_tool": dict(missed),
            "search_examples": searches[:50], "lists": lists, "calls": len(calls), "sessions": sessions,
            "settings": {"max_tools": args.max_tools, "search_limit": args.search_limit, "seed": args.seed,
                         "quick": args.quick, "calls_per_trace": args.calls},
            "duration_s": round(total_s, 1), "machine": machine_info(["mcp", "httpx"])}
