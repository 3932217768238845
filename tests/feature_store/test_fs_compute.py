"""Pure feature computation: windows, known numbers, and incremental == batch."""

from __future__ import annotations

import math
import random

import pytest

from only1mcp.feature_store import compute as fc
from only1mcp.feature_store.registry import FEATURES, definitions, table_name
from only1mcp.streams.folding import FeatureFolder

WINDOWS = ["10s", "60s", "60s/10s"]
MONDAY = 4 * 86400.0  # 1970-01-05 00:00 UTC was a Monday


def event(ts: float, latency: float, *, status: str = "ok", replica: str | None = "r1", tool: str | None = "t1",
          session: str | None = None, req: int = 0, resp: int = 0, event_id: str | None = None) -> dict:
    return {"event_id": event_id or f"e{ts}-{latency}-{replica}", "ts": ts, "latency_ms": latency, "status": status,
            "replica": replica, "tool": tool, "session_id": session, "request_bytes": req, "response_bytes": resp}


def test_window_specs_parse_and_list_the_windows_holding_an_instant() -> None:
    tumbling, hopping = fc.parse_window("10s"), fc.parse_window("60s/10s")
    assert (tumbling.size_ms, tumbling.step_ms, tumbling.hopping) == (10_000, 10_000, False)
    assert (hopping.size_ms, hopping.step_ms, hopping.hopping) == (60_000, 10_000, True)
    assert fc.parse_window("500ms").size_ms == 500 and fc.parse_window("2m").size_ms == 120_000
    assert list(tumbling.starts_ms(125_000)) == [120_000]
    assert list(hopping.starts_ms(125_000)) == [70_000, 80_000, 90_000, 100_000, 110_000, 120_000]
    assert list(hopping.starts_ms(120_000)) == [70_000, 80_000, 90_000, 100_000, 110_000, 120_000]
    assert list(fc.parse_window("40s/20s").starts_ms(45_000)) == [20_000, 40_000]
    for bad in ("10", "10x", "0s", "5s/10s", "10s/3s", ""):
        with pytest.raises(ValueError):
            fc.parse_window(bad)
    assert fc.pane_size_ms([fc.parse_window(w) for w in WINDOWS]) == 10_000
    assert fc.pane_size_ms([fc.parse_window("15s"), fc.parse_window("10s")]) == 5_000


def test_entities_of_an_event() -> None:
    assert list(fc.entity_ids(event(0, 1, session="s1"))) == [
        ("replica", "r1"), ("tool", "t1"), ("replica_tool", "r1|t1"), ("session", "s1")]
    assert list(fc.entity_ids(event(0, 1, replica=None))) == [("tool", "t1")]


def test_known_numbers_of_one_window() -> None:
    start = MONDAY + 6 * 3600  # Monday 06:00 UTC
    events = [event(start + i * 0.05, float(i), status="error" if i % 10 == 0 else "ok", req=100, resp=2 * i,
                    event_id=f"e{i}") for i in range(1, 101)]
    events.append(event(start + 9, 7.0, status="rejected", replica="r2", event_id="other"))  # another replica
    rows = {(r["entity_id"], r["window_start"]): r for r in fc.compute(events, ["10s"])["replica_10s"]}
    row = rows[("r1", start)]
    assert row["count"] == 100 and row["window"] == "10s" and row["window_end"] == start + 10
    assert row["error_rate"] == pytest.approx(0.10)
    assert row["latency_mean_ms"] == pytest.approx(50.5)
    for q, value in (("p50", 50), ("p95", 95), ("p99", 99)):  # DDSketch: within 1 % relative
        assert row[f"latency_{q}_ms"] == pytest.approx(value, rel=0.011)
    assert row["inflight"] == pytest.approx(5050 / 10_000)  # summed latency over the window (Little's law)
    assert row["request_bytes_mean"] == 100 and row["response_bytes_mean"] == pytest.approx(101)
    assert (row["hour_sin"], row["hour_cos"]) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert (row["dow_sin"], row["dow_cos"]) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert rows[("r2", start)]["error_rate"] == 0.0  # rejected is not the replica's fault
    assert set(row) >= {f.name for f in FEATURES}


def test_ewma_weighs_recent_latency_by_the_time_constant() -> None:
    events = [event(1000.0, 10.0, event_id="a"), event(1005.0, 20.0, event_id="b")]
    row = fc.compute(events, ["10s"])["replica_10s"][0]
    w = math.exp(5.0 / fc.EWMA_TAU_S)
    assert row["latency_ewma_ms"] == pytest.approx((10 + 20 * w) / (1 + w))
    flat = fc.compute([event(1000.0 + i, 42.0, event_id=str(i)) for i in range(10)], ["10s"])["replica_10s"][0]
    assert flat["latency_ewma_ms"] == pytest.approx(42.0)


def test_hopping_windows_count_an_event_once_per_window_holding_it() -> None:
    rows = fc.compute([event(125.0, 5.0)], ["60s/10s"])["tool_60s_10s"]
    assert [r["window_start"] for r in rows] == [70.0, 80.0, 90.0, 100.0, 110.0, 120.0]
    assert all(r["count"] == 1 for r in rows)


def random_events(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    return [event(1_700_000_000 + rng.uniform(0, 300), rng.lognormvariate(3, 1),
                  status=rng.choice(["ok", "ok", "ok", "error", "timeout"]), replica=rng.choice(["a", "b", "c"]),
                  tool=rng.choice(["x", "y"]), session=rng.choice(["s1", "s2", None]), req=rng.randrange(1000),
                  resp=rng.randrange(5000), event_id=f"e{i}") for i in range(n)]


def assert_same_rows(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    by_key = {(r["entity_id"], r["window_start"]): r for r in right}
    for row in left:
        other = by_key[(row["entity_id"], row["window_start"])]
        for column, value in row.items():
            if column == "latency_sketch":
                assert fc.sketch_from_bytes(value).count == fc.sketch_from_bytes(other[column]).count
            elif column == "latency_ewma_ms":  # a float sum in another order: equal up to rounding
                assert value == pytest.approx(other[column], rel=1e-12)
            else:  # counts, integer sums, sketch quantiles: exactly equal
                assert value == other[column], column


def test_merging_micro_batches_equals_the_batch_computation() -> None:
    events = random_events(3000)
    shuffled = events[:]
    random.Random(1).shuffle(shuffled)
    pane = fc.pane_size_ms([fc.parse_window(w) for w in WINDOWS])
    batches = [fc.aggregate(shuffled[i:i + 137], pane) for i in range(0, len(shuffled), 137)]
    merged = fc.merge(batches)
    whole = fc.aggregate(events, pane)
    assert merged.keys() == whole.keys()
    assert all(merged[k].count == whole[k].count and merged[k].latency_us == whole[k].latency_us for k in whole)
    batch_rows = fc.compute(events, WINDOWS)
    for spec in map(fc.parse_window, WINDOWS):
        for entity in ("replica", "tool", "replica_tool", "session"):
            rows = [fc.feature_row(e, i, spec, s, fc.window_partial(merged, e, i, spec, s, pane))
                    for e, i, s in sorted(fc.window_keys(merged, spec)) if e == entity]
            assert_same_rows(rows, batch_rows[table_name(entity, spec.text)])


def test_merge_leaves_its_inputs_alone() -> None:
    pane = 10_000
    first = fc.aggregate(random_events(50, seed=1), pane)
    before = {k: p.count for k, p in first.items()}
    fc.merge([first, first])
    assert {k: p.count for k, p in first.items()} == before


@pytest.mark.parametrize("jitter_s", [0.0, 20.0])
def test_the_workers_folder_with_flushes_gives_the_batch_rows(jitter_s: float) -> None:
    """The streaming fold (micro-batches, windows closed as the watermark moves) == batch, with
    events in time order or out of order by up to ``jitter_s`` (less than the grace)."""
    rng = random.Random(4)
    events = sorted(random_events(2000, seed=3), key=lambda e: e["ts"] + rng.uniform(0, jitter_s))
    folder = FeatureFolder(WINDOWS, grace_s=30.0)
    closed: list[dict] = []
    newest = 0.0
    for i in range(0, len(events), 250):
        for e in events[i:i + 250]:
            assert folder.add(e, token=e["event_id"]) == "ok"
            newest = max(newest, e["ts"])
        closed += folder.cut(math.floor(newest * 1000)).closed
    final = folder.cut(10**13)  # far future: every window closes
    closed += final.closed
    assert sorted(folder.release(final)) == sorted(e["event_id"] for e in events)
    assert folder.panes == {} and folder.held == [] and folder.by_pane == {} and folder.latest_ms == {}
    batch = fc.compute(events, WINDOWS)
    for table, rows in batch.items():
        assert_same_rows([r for r in closed if table_name(r["entity_type"], r["window"]) == table], rows)


def test_folder_counts_duplicates_once_and_late_events_not_at_all() -> None:
    folder = FeatureFolder(["10s"], grace_s=0)
    assert folder.add(event(100.0, 1.0, event_id="a")) == "ok"
    assert folder.add(event(100.0, 1.0, event_id="a")) == "duplicate"
    plan = folder.cut(200_000)
    assert [r["count"] for r in plan.closed if r["entity_type"] == "replica"] == [1]
    assert len(plan.raw) == 1
    assert folder.add(event(105.0, 1.0, event_id="b")) == "late"  # its window closed at 110 s
    assert folder.cut(300_000).closed == []


def test_sketches_survive_serialization_and_merge_across_windows() -> None:
    events = random_events(500, seed=5)
    rows = fc.compute(events, ["10s"])["replica_10s"]
    merged = fc.sketch_from_bytes(rows[0]["latency_sketch"])
    for row in rows[1:]:
        merged.merge(fc.sketch_from_bytes(row["latency_sketch"]))
    direct = fc.aggregate(events, 10_000)
    whole = fc.Partial(0)
    for (entity_type, _, _), partial in direct.items():
        if entity_type == "replica":
            fc.merge_into(whole, partial)
    assert merged.count == whole.sketch.count == 500
    for q in (0.5, 0.95, 0.99):
        assert merged.get_quantile_value(q) == whole.sketch.get_quantile_value(q)
    again = fc.sketch_from_bytes(rows[0]["latency_sketch"])
    assert again.get_quantile_value(0.5) == rows[0]["latency_p50_ms"]


def test_registry_defines_every_feature_for_every_entity_and_window() -> None:
    defs = definitions(WINDOWS)
    assert len(defs) == len(FEATURES) * 4 * 3
    assert {d.table for d in defs} == {table_name(e, w) for e in ("replica", "tool", "replica_tool", "session")
                                       for w in WINDOWS}
    assert defs[0].qualified_name == "count@10s" and table_name("replica_tool", "60s/10s") == "replica_tool_60s_10s"


def test_a_cut_without_online_values_settles_nothing_until_a_cut_with_them() -> None:
    # Catching up, the worker cuts without current values; the events behind them must not be
    # acknowledged before their contribution to Redis is written, even for an entity gone quiet.
    folder = FeatureFolder(["10s"], grace_s=0)
    folder.add(event(100.0, 5.0, replica="quiet", tool=None), token="q")
    folder.add(event(100.0, 7.0, replica="busy", tool=None), token="b1")
    folder.add(event(125.0, 9.0, replica="busy", tool=None), token="b2")
    plan = folder.cut(120_000, online=False)  # closes [100, 110): quiet's only window
    assert plan.online == [] and not plan.settles and folder.release(plan) == []
    assert sorted(r["entity_id"] for r in plan.closed) == ["busy", "quiet"]
    assert folder.dirty == {("replica", "quiet"), ("replica", "busy")}
    later = folder.cut(121_000)
    assert sorted((r["entity_id"], r["window_start"], r["count"]) for r in later.online) == [
        ("busy", 120.0, 1), ("quiet", 100.0, 1)]
    assert later.closed == [] and sorted(folder.release(later)) == ["b1", "q"]
