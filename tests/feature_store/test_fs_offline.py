"""The offline store on real files: atomic Parquet writes, hive partitions, dedupe (views and
compaction), DuckDB views, point-in-time training sets, and the ``features`` command."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from only1mcp.cli import main
from only1mcp.events import RequestEvent
from only1mcp.feature_store.compute import compute
from only1mcp.feature_store.offline.duckdb import connect
from only1mcp.feature_store.offline.parquet import write_atomic, write_feature_rows, write_requests
from only1mcp.feature_store.training import training_set
from only1mcp.jobs.compact import compact

T0 = datetime(2026, 3, 2, 9, 59, 30, tzinfo=timezone.utc).timestamp()  # 30 s before 10:00 UTC


def events(n: int, start: float = T0, step: float = 1.0, replica: str = "r1") -> list[dict]:
    return [dataclasses.asdict(RequestEvent(event_id=f"{replica}-{i}", ts=start + i * step, latency_ms=float(i + 1),
                                            method="tools/call", status="ok", replica=replica, tool="t"))
            for i in range(n)]


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_raw_events_land_in_hive_partitions_by_hour_deduplicated_within_the_batch(tmp_path: Path) -> None:
    batch = events(60)  # 09:59:30 .. 10:00:29: two hours
    written = write_requests(tmp_path, batch + batch[:5])
    assert [p.parent.relative_to(tmp_path).as_posix() for p in written] == [
        "requests/date=2026-03-02/hour=09", "requests/date=2026-03-02/hour=10"]
    assert sum(pq.read_metadata(p).num_rows for p in written) == 60
    assert not list(tmp_path.rglob("*.tmp"))
    con = connect(tmp_path)
    assert con.sql("SELECT hour, count(*) FROM requests GROUP BY hour ORDER BY hour").fetchall() == [(9, 30), (10, 30)]
    assert con.sql("SELECT DISTINCT date FROM requests").fetchall()[0][0].isoformat() == "2026-03-02"


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path) -> None:
    with pytest.raises(AttributeError):  # fails inside the Parquet writer, after the temp file was opened
        write_atomic("not a table", tmp_path / "p")  # type: ignore[arg-type]
    assert list((tmp_path / "p").iterdir()) == []
    path = write_atomic(pa.table({"a": [1]}), tmp_path / "p")
    assert [p.name for p in (tmp_path / "p").iterdir()] == [path.name] and path.name.endswith(".parquet")


def test_replayed_events_are_read_once_and_compaction_removes_them_on_disk(tmp_path: Path) -> None:
    batch = events(60)
    write_requests(tmp_path, batch)
    write_requests(tmp_path, batch[10:40])  # a replay after a crash
    con = connect(tmp_path)
    assert con.sql("SELECT count(*) FROM requests_raw").fetchall() == [(90,)]
    assert con.sql("SELECT count(*), count(DISTINCT event_id) FROM requests").fetchall() == [(60, 60)]
    stats = compact(tmp_path)["requests"]
    assert (stats.partitions, stats.files_before, stats.files_after) == (2, 4, 2)
    assert (stats.rows_before, stats.rows_after) == (90, 60)
    assert len(parquet_files(tmp_path / "requests")) == 2
    con = connect(tmp_path)
    assert con.sql("SELECT count(*) FROM requests_raw").fetchall() == [(60,)]
    assert con.sql("SELECT sum(latency_ms) FROM requests").fetchall() == [(sum(range(1, 61)),)]
    assert compact(tmp_path)["requests"].partitions == 0  # nothing left to do


def test_a_merge_takes_the_small_files_and_leaves_the_compacted_one(tmp_path: Path) -> None:
    batch = events(200, start=T0 + 60)  # one hour partition
    write_requests(tmp_path, batch[:100])
    compact(tmp_path)
    (big,) = parquet_files(tmp_path / "requests")
    for start in range(100, len(batch), 10):  # micro-batches, one replaying rows of the one before
        write_requests(tmp_path, batch[start - 2:start + 10])
    small = [f for f in parquet_files(tmp_path / "requests") if f != big]
    cutoff = max(f.stat().st_size for f in small)
    assert big.stat().st_size > cutoff  # the compacted file is the big one
    stats = compact(tmp_path, max_bytes=cutoff)["requests"]
    assert (stats.partitions, stats.files_before, stats.files_after) == (1, len(small), 1)
    # Replays among the merged files are removed; the 2 rows replayed from the compacted file stay
    # until the next compaction (the view hides them meanwhile).
    assert stats.rows_after == len(batch) - 100 + 2
    files = parquet_files(tmp_path / "requests")
    assert len(files) == 2 and big in files  # untouched
    con = connect(tmp_path)
    assert con.sql("SELECT count(*), count(DISTINCT event_id) FROM requests").fetchall() == [(len(batch),) * 2]
    assert compact(tmp_path, max_bytes=cutoff)["requests"].partitions == 0  # one small file: nothing to merge
    assert compact(tmp_path)["requests"].files_after == 1  # a compaction takes both


def test_a_long_lived_connection_stays_exactly_once_as_files_are_added_and_compacted(tmp_path: Path) -> None:
    # The views decide at query time which partitions need deduplicating (those with > 1 file).
    batch = events(60)
    write_requests(tmp_path, batch[:20])
    con = connect(tmp_path)
    count = "SELECT count(*), count(DISTINCT event_id), sum(latency_ms) FROM requests"
    assert con.sql(count).fetchall() == [(20, 20, sum(range(1, 21)))]
    write_requests(tmp_path, batch)  # the same partition (09:59) gets a second file overlapping the first
    assert con.sql(count).fetchall() == [(60, 60, sum(range(1, 61)))]
    compact(tmp_path)
    assert con.sql(count).fetchall() == [(60, 60, sum(range(1, 61)))]
    write_requests(tmp_path, batch[25:35])  # a replay into the compacted 10:00 partition
    assert con.sql("SELECT count(*) FROM requests_raw").fetchall() == [(70,)]
    assert con.sql(count).fetchall() == [(60, 60, sum(range(1, 61)))]


def test_feature_views_keep_the_latest_computation_of_a_window(tmp_path: Path) -> None:
    rows = compute(events(20), ["10s"])["replica_10s"]
    write_feature_rows(tmp_path, rows, computed_at=1.0)
    changed = [{**rows[0], "count": 999}]
    write_feature_rows(tmp_path, changed, computed_at=2.0)
    con = connect(tmp_path)
    assert "replica_10s" in {r[0] for r in con.sql("SHOW TABLES").fetchall()}
    assert con.sql("SELECT count(*) FROM replica_10s_raw").fetchall() == [(len(rows) + 1,)]
    got = con.sql("SELECT window_start, count FROM replica_10s ORDER BY window_start").fetchall()
    assert got[0] == (rows[0]["window_start"], 999) and len(got) == len(rows)
    write_feature_rows(tmp_path, [{**rows[0], "count": -1}], computed_at=0.5)  # written last, computed first
    assert con.sql(f"SELECT count FROM replica_10s WHERE window_start = {rows[0]['window_start']}").fetchall() == [(999,)]
    stats = compact(tmp_path)["replica_10s"]
    assert stats.rows_after == len(rows)
    assert connect(tmp_path).sql("SELECT count FROM replica_10s_raw WHERE window_start = "
                                 f"{rows[0]['window_start']}").fetchall() == [(999,)]


def test_an_empty_store_answers_with_no_rows(tmp_path: Path) -> None:
    con = connect(tmp_path / "nothing-yet")
    assert con.sql("SELECT count(*) FROM requests").fetchall() == [(0,)]
    assert "event_id" in con.sql("SELECT * FROM requests").columns


def test_training_set_joins_each_label_to_features_as_of_its_time_with_a_max_age(tmp_path: Path) -> None:
    # r1: windows [0,10) count 10, [10,20) count 10, [20,30) count 5 (relative to T0 rounded down)
    start = (T0 // 10) * 10
    batch = events(25, start=start) + events(3, start=start, replica="r2")
    write_feature_rows(tmp_path, [r for rows in compute(batch, ["10s", "60s/10s"]).values() for r in rows])
    labels = pa.table({"entity_id": ["r1", "r1", "r1", "r1", "r1", "r2", "nobody"],
                       "ts": [start + 5, start + 10, start + 19.9, start + 30, start + 95, start + 12, start + 50],
                       "label": [0, 1, 2, 3, 4, 5, 6]})
    con = connect(tmp_path)
    out = training_set(con, labels, ["replica_10s.count", "replica_10s.latency_mean_ms", "replica_60s_10s.count"],
                       max_age=30).to_pylist()
    assert [r["label"] for r in out] == [0, 1, 2, 3, 4, 5, 6]  # label order and columns kept
    counts = [r["replica_10s__count"] for r in out]
    # before the first window ends: nothing; at its end: that window; later: the latest ended one;
    # 65 s after the last window ended (> max_age 30): nothing; r2 sees its own rows only.
    assert counts == [None, 10, 10, 5, None, 3, None]
    assert out[1]["replica_10s__window_end"] == start + 10
    assert out[1]["replica_10s__latency_mean_ms"] == pytest.approx(5.5)
    assert out[3]["replica_60s_10s__count"] == 25  # the hopping window [start-30, start+30) holds all 25
    unbounded = training_set(con, labels, ["replica_10s.count"]).to_pylist()
    assert unbounded[4]["replica_10s__count"] == 5  # without max_age the stale row is used
    stamped = pa.table({"entity_id": ["r1"], "ts": [datetime.fromtimestamp(start + 21, tz=timezone.utc)]})
    assert training_set(con, stamped, ["replica_10s.count"]).to_pylist()[0]["replica_10s__count"] == 10
    with pytest.raises(ValueError):
        training_set(con, labels, ["count"])


def test_features_command_lists_queries_and_compacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 14 * 4 * 3 and listed[0]["name"] == "count" and listed[0]["table"] == "replica_10s"
    write_requests(tmp_path, events(5))
    write_requests(tmp_path, events(5))
    data = ["features", "--data-dir", str(tmp_path)]
    assert main([*data, "sql", "SELECT replica, count(*) AS n FROM requests GROUP BY replica", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"replica": "r1", "n": 5}]
    assert main([*data, "sql", "SELECT count(*) AS n FROM requests", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ['"n"', "5"]
    assert main(["features", "sql", "--data-dir", str(tmp_path), "SELECT count(*) AS n FROM requests"]) == 0
    assert capsys.readouterr().out.split()[-1] == "5"  # a table; options also after the action
    out = tmp_path / "r.parquet"
    assert main([*data, "sql", "SELECT * FROM requests", "--format", "parquet", "--out", str(out)]) == 0
    assert pq.read_table(out).num_rows == 5
    assert main([*data, "sql", "SELECT nope FROM requests"]) == 1
    assert main([*data, "compact"]) == 0
    assert "requests: 1 partition(s), 2 → 1 files, 10 → 5 rows" in capsys.readouterr().out


def test_retry_vanished_lists_the_files_again(tmp_path: Path) -> None:
    """A query that read a file the compaction removed meanwhile fails with an IOException; the retry
    runs it again and sees the files as they are now. Other errors are not retried."""
    import duckdb

    from only1mcp.feature_store.offline.duckdb import retry_vanished

    path = tmp_path / "part.parquet"
    con = duckdb.connect()
    calls = []

    def run() -> int:
        calls.append(1)
        try:
            return int(con.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0])
        finally:
            if not path.exists():
                pq.write_table(pa.table({"a": [1, 2]}), path)  # the replacement lands after the first try

    assert retry_vanished(run, delay_s=0.01) == 2 and len(calls) == 2
    with pytest.raises(duckdb.IOException):
        retry_vanished(lambda: con.sql(f"SELECT * FROM read_parquet('{tmp_path}/none.parquet')").fetchall(),
                       attempts=2, delay_s=0.01)
    syntax: list[int] = []
    with pytest.raises(duckdb.ParserException):
        retry_vanished(lambda: syntax.append(1) or con.sql("SELEC 1"), delay_s=0.01)
    assert len(syntax) == 1


def test_query_reads_a_store_being_compacted_without_error_or_duplicates(tmp_path: Path) -> None:
    """The race CI met: a compactor replaces a partition's files while queries run. Every
    ``query`` answers, each event once; a bare DuckDB query over the same race may not."""
    import threading
    import time

    from only1mcp.feature_store.offline.duckdb import query
    from only1mcp.jobs.compact import compact_partition

    batch = events(30, start=T0 + 60)  # one hour partition
    write_requests(tmp_path, batch)
    stop = threading.Event()
    rounds = [0]

    def compact_forever() -> None:
        while not stop.is_set():
            for _ in range(4):
                write_requests(tmp_path, batch)  # replays: the same events again
            folder = parquet_files(tmp_path)[0].parent
            compact_partition(folder, raw_events=True)
            rounds[0] += 1

    compactor = threading.Thread(target=compact_forever, daemon=True)
    compactor.start()
    answers = []
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            answers.append(query(tmp_path, "SELECT count(*), count(DISTINCT event_id) FROM requests")[1][0])
    finally:
        stop.set()
        compactor.join(10)
    assert rounds[0] > 5 and len(answers) > 5
    assert set(answers) == {(30, 30)}
    names, rows = query(tmp_path, "SELECT event_id, latency_ms FROM requests ORDER BY ts LIMIT 2")
    assert names == ["event_id", "latency_ms"] and rows == [(batch[0]["event_id"], 1.0), (batch[1]["event_id"], 2.0)]
