"""The prefetch agent in process, fed session events as the entity stage hands them over (the real
broker and worker: tests/streams/test_prefetch_worker.py): decisions for the right next tool, only tools the
session called, none from a stale backlog, bounded memory, args hashes only for tools that repeat,
late calls, and the model loaded from the registry (a corrupt one refused)."""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from pathlib import Path
from typing import Any

from only1mcp.events import PrefetchDecision
from only1mcp.models.prefetch.markov import NextToolModel
from only1mcp.models.prefetch.registry import PrefetchRegistry, prefetch_root
from only1mcp.settings import Settings
from only1mcp.streaming import StoreSettings, WorkerPrefetchSettings, WorkerSettings
from only1mcp.streams.prefetch import PrefetchAgent

PATTERN = ("docs.search", "docs.get", "docs.comments")


class Captured:
    def __init__(self) -> None:
        self.decisions: list[PrefetchDecision] = []

    def publish(self, records: list[PrefetchDecision]) -> None:
        self.decisions += records

    async def close(self) -> None:
        pass


def settings(tmp: Path, **prefetch: Any) -> Settings:
    return Settings(worker=WorkerSettings(prefetch=WorkerPrefetchSettings(**prefetch)),
                    store=StoreSettings(data_dir=str(tmp / "data")))


def agent(tmp: Path, **prefetch: Any) -> tuple[PrefetchAgent, Captured]:
    captured = Captured()
    return PrefetchAgent(settings(tmp, **prefetch), publisher=captured), captured


def call(session: str, tool: str, ts: float, args_hash: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"{uuid.uuid4().hex}/session", "ts": ts, "latency_ms": 5.0, "status": "ok",
            "session_id": session, "tool": tool, "method": "tools/call", "args_hash": args_hash,
            "server": tool.split(".")[0], **extra}


def teach(a: PrefetchAgent, sessions: int, start: float, cycles: int = 3) -> float:
    """``sessions`` sessions cycling through PATTERN, one fetch per call; returns the next time."""
    t = start
    for s in range(sessions):
        for i in range(cycles * len(PATTERN)):
            a.observe([(0, [call(f"s{s}", PATTERN[i % 3], t, f"h{s}-{i}")])])
            t += 0.001
    return t


def test_a_recurring_pattern_gives_decisions_for_the_next_tool(tmp_path: Path) -> None:
    a, captured = agent(tmp_path)
    teach(a, 30, time.time() - 5)
    assert a.accuracy["top1"] > 0.9 and a.accuracy["top3"] > 0.98  # the first calls taught it
    captured.decisions.clear()
    now = time.time()
    events = [call("new", "docs.search", now - 0.3), call("new", "docs.get", now - 0.2),
              call("new", "docs.comments", now - 0.1), call("new", "docs.search", now - 0.05)]
    for e in events[:3]:
        a.observe([(1, [e])])
    (after_comments,) = a.observe([(1, [events[3]])])  # now the session has called all three
    assert after_comments.tool == "docs.get" and after_comments.confidence >= 0.5
    assert after_comments.session_id == "new" and after_comments.server == "docs"
    assert after_comments.after_event == events[3]["event_id"].split("/")[0]
    assert after_comments.model_version == "empty+online"
    assert now < after_comments.valid_until <= time.time() + 30.0
    assert after_comments.args_hash is None  # docs.get never repeated its arguments
    assert PrefetchDecision.from_json(after_comments.to_json()) == after_comments
    assert a.status()["sessions"] == 31


def test_no_decision_for_a_tool_the_session_never_called(tmp_path: Path) -> None:
    a, captured = agent(tmp_path)
    now = teach(a, 30, time.time() - 5)
    captured.decisions.clear()
    assert a.observe([(0, [call("fresh", "docs.search", now)])]) == []  # docs.get is likely, but never called here
    assert a.observe([(0, [call("fresh", "docs.get", now + 0.01)])]) == []  # docs.comments: same
    assert a.model.predict_one(["docs.search", "docs.get"], 1)[0][0] == "docs.comments"
    assert captured.decisions == []


def test_a_stale_backlog_teaches_but_decides_nothing(tmp_path: Path) -> None:
    a, captured = agent(tmp_path, valid_for=30.0)
    teach(a, 20, time.time() - 3600)  # an hour old: a replay
    assert captured.decisions == [] and a.counters["stale"] > 0
    assert a.model.learned == 20 * 9 and a.accuracy["top1"] > 0.9
    a.observe([(0, [call("s1", "docs.search", time.time())])])  # a live call of a known session decides
    assert [d.tool for d in captured.decisions] == ["docs.get"]


def test_memory_is_bounded_by_sessions_and_idle_time(tmp_path: Path) -> None:
    a, _ = agent(tmp_path, max_sessions=50, session_idle=60.0, max_history=4)
    t = time.time() - 1000
    for s in range(500):
        for i in range(12):
            a.observe([(0, [call(f"s{s}", PATTERN[i % 3], t)])])
            t += 0.01
    assert len(a.sessions) == 50 and a.sessions.evicted == 450
    assert all(len(state.tools) <= 4 for state in a.sessions.sessions.values())
    a.observe([(0, [call("late-comer", "docs.search", t + 61.0)])])  # stream time passes every session's idle horizon
    assert list(a.sessions.sessions) == ["late-comer"] and a.sessions.expired == 49  # the 50th made room for it


def test_args_hash_only_for_a_tool_that_repeats_its_arguments(tmp_path: Path) -> None:
    a, captured = agent(tmp_path, repeat_confidence=0.9)
    t = time.time() - 5
    for s in range(30):  # list_items always with the same arguments; docs.get with new ones
        for i in range(6):
            tool = ("app.list_items", "docs.get")[i % 2]
            a.observe([(0, [call(f"s{s}", tool, t, "same" if tool == "app.list_items" else f"h{s}-{i}")])])
            t += 0.001
    assert a.repeats.rate("app.list_items") == 1.0 and a.repeats.rate("docs.get") == 0.0
    captured.decisions.clear()
    for tool, args_hash in (("app.list_items", "mine"), ("docs.get", "doc-1"), ("app.list_items", "mine")):
        a.observe([(0, [call("x", tool, time.time(), args_hash)])])
    by_tool = {d.tool: d for d in captured.decisions}
    assert by_tool["app.list_items"].args_hash == "mine"  # the session's own previous arguments
    assert by_tool["docs.get"].args_hash is None


def test_a_late_call_is_taught_in_its_place_and_decides_nothing(tmp_path: Path) -> None:
    a, captured = agent(tmp_path)
    now = teach(a, 10, time.time() - 5)
    a.observe([(0, [call("z", "docs.get", now + 0.2)])])
    learned = a.model.learned
    assert a.observe([(0, [call("z", "docs.search", now + 0.1)])]) == []  # older than the session's newest
    assert a.model.learned == learned + 1 and a.counters["late_calls"] == 1 and a.counters["calls"] == a.model.learned
    assert a.sessions.sessions["z"].tools == ["docs.search", "docs.get"]


def test_at_most_max_per_event_decisions_above_min_confidence(tmp_path: Path) -> None:
    a, captured = agent(tmp_path, min_confidence=0.05, max_per_event=2)
    t = time.time() - 5
    rng = random.Random(7)
    for s in range(40):  # after t.0, any of t.1 … t.5
        for i in range(12):
            a.observe([(0, [call(f"s{s}", "t.0" if i % 2 == 0 else f"t.{rng.randrange(1, 6)}", t)])])
            t += 0.001
    decided = a.observe([(0, [call("s3", "t.0", time.time())])])
    assert len(decided) == 2 and all(d.confidence >= 0.05 for d in decided)
    assert decided[0].confidence >= decided[1].confidence


def test_non_calls_and_events_without_a_session_are_ignored(tmp_path: Path) -> None:
    a, _ = agent(tmp_path)
    a.observe([(0, [call("s", "docs.get", time.time(), method="tools/list"), {**call("s", "x", 1.0), "tool": None},
                    {**call("", "docs.get", time.time())}])])
    assert a.counters["events"] == 0 and len(a.sessions) == 0


def test_a_revoked_partition_takes_its_sessions(tmp_path: Path) -> None:
    a, _ = agent(tmp_path)
    a.observe([(0, [call("a", "docs.get", time.time())]), (1, [call("b", "docs.get", time.time())])])
    a.drop_partitions([1])
    assert list(a.sessions.sessions) == ["a"]


def _register(tmp: Path) -> tuple[PrefetchRegistry, str]:
    model = NextToolModel(order=2)
    for _ in range(50):
        history: list[str] = []
        for tool in PATTERN * 2:
            model.learn_one(history, tool)
            history.append(tool)
    registry = PrefetchRegistry(prefetch_root(tmp / "data" / "models"))
    version = registry.add(model, [(list(PATTERN * 2), 0)] * 10, {"metrics": {}})
    assert registry.promote(version)["promoted"]
    return registry, version


def test_the_worker_continues_from_the_live_model(tmp_path: Path) -> None:
    _, version = _register(tmp_path)
    a, captured = agent(tmp_path)
    assert a.model_version == f"{version}+online" and a.model.learned == 300
    now = time.time()
    a.observe([(0, [call("s", "docs.comments", now - 0.2)])])
    a.observe([(0, [call("s", "docs.search", now - 0.1)])])
    (decision,) = a.observe([(0, [call("s", "docs.get", now)])])  # no online teaching needed
    assert decision.tool == "docs.comments" and decision.model_version == f"{version}+online"


def test_a_corrupt_live_model_is_refused_and_the_worker_starts_empty(tmp_path: Path, caplog: Any) -> None:
    registry, version = _register(tmp_path)
    path = registry.root / version / "model.json"
    state = json.loads(path.read_text())
    state["unigram"]["docs.get"] = -5  # still JSON; the checksum says it was changed
    path.write_text(json.dumps(state))
    with caplog.at_level(logging.ERROR, logger="only1mcp.streams.prefetch"):
        a, _ = agent(tmp_path, order=3)
    assert a.model.learned == 0 and a.model.order == 3 and a.model_version == "empty(refused)+online"
    assert "refused" in caplog.text and "checksum mismatch" in caplog.text


def test_a_second_order_pattern_needs_order_2(tmp_path: Path) -> None:
    """search → get → comments and list → get → edit: after get, only the call before it tells which
    follows; order 1 cannot know (50/50, below min_confidence), order 2 (the default) does."""
    for order, expected in ((1, []), (2, ["docs.comments"])):
        a, _ = agent(tmp_path, order=order)
        t = time.time() - 5
        for s in range(40):
            flows = (("docs.search", "docs.get", "docs.comments"), ("docs.list", "docs.get", "docs.edit"))
            for i in range(12):
                a.observe([(0, [call(f"s{s}", flows[(i // 3) % 2][i % 3], t)])])
                t += 0.001
        a.observe([(0, [call("x", tool, time.time()) for tool in ("docs.list", "docs.get", "docs.edit",
                                                                  "docs.comments", "docs.search")])])
        decided = a.observe([(0, [call("x", "docs.get", time.time() + 0.01)])])
        assert [d.tool for d in decided] == expected, order


def test_one_burst_teaches_a_cold_model_and_decides_in_the_same_fetch(tmp_path: Path) -> None:
    """A fetch holding every session's calls: the predictions the agent reuses within a fetch must not
    be those of the model before it learned the burst (a cold model recomputes)."""
    a, _ = agent(tmp_path)
    now = time.time()
    burst = [call(f"s{s}", PATTERN[i % 3], now - 5 + s * 0.1 + i * 0.01) for s in range(40) for i in range(6)]
    decided = a.observe([(0, burst)])
    assert len(decided) >= 35 and all(d.tool == "docs.search" for d in decided)  # after comments: search
