"""``only1mcp anomalies score`` end to end through ``only1mcp.cli.main`` with real files."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from only1mcp.cli import main


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _metric_rows(n: int = 600, iso: bool = False) -> list[list[object]]:
    rng = np.random.default_rng(0)
    values = rng.normal(250.0, 10.0, n)
    values[400:] += 120.0
    start = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    rows = []
    for i, v in enumerate(values):
        ts = start + 300 * i
        when = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if iso else int(ts)
        rows.append([when, f"{v:.3f}", "" if i % 50 == 7 else f"{rng.random():.3f}"])
    return rows


@pytest.mark.parametrize("iso", [False, True])
def test_scores_every_row_in_order(tmp_path: Path, iso: bool, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _metric_rows(iso=iso)
    src = _write(tmp_path / "in.csv", ["when", "latency_ms", "other"], rows)
    out = tmp_path / "deep" / "out.csv"
    code = main(["anomalies", "score", str(src), "--time-col", "when", "--value-col", "latency_ms",
                 "--value-col", "other", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    written = _read(out)
    assert list(written[0]) == ["when", "anomaly_score", "is_anomaly"]
    assert [r["when"] for r in written] == [str(r[0]) for r in rows]
    scores = np.array([float(r["anomaly_score"]) for r in written])
    flags = np.array([r["is_anomaly"] == "1" for r in written])
    assert ((scores >= 0) & (scores <= 1)).all() and flags[400:410].any() and flags.sum() < 100
    assert (flags == (scores >= 0.5)).all()
    assert "600 rows scored" in capsys.readouterr().out


def test_same_scores_from_unix_and_iso_times(tmp_path: Path) -> None:
    outs = []
    for iso in (False, True):
        src = _write(tmp_path / f"in{iso}.csv", ["when", "latency_ms", "other"], _metric_rows(iso=iso))
        out = tmp_path / f"out{iso}.csv"
        assert main(["anomalies", "score", str(src), "--time-col", "when", "--value-col", "latency_ms",
                     "--out", str(out)]) == 0
        outs.append([r["anomaly_score"] for r in _read(out)])
    assert outs[0] == outs[1]


def test_missing_column_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "in.csv", ["when", "v"], [[1, 2]])
    code = main(["anomalies", "score", str(src), "--time-col", "when", "--value-col", "latency",
                 "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "no column 'latency'" in err and "when, v" in err
    assert not (tmp_path / "o.csv").exists()


def test_unparsable_time_names_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _metric_rows(20)
    rows[9][0] = "yesterday"
    src = _write(tmp_path / "in.csv", ["when", "latency_ms", "other"], rows)
    code = main(["anomalies", "score", str(src), "--time-col", "when", "--value-col", "latency_ms",
                 "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "row 11" in err and "'yesterday'" in err


def test_non_numeric_value_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "in.csv", ["when", "v"], [[1, "1.5"], [2, "NaN"], [3, "lots"]])
    code = main(["anomalies", "score", str(src), "--time-col", "when", "--value-col", "v", "--out", str(tmp_path / "o")])
    assert code == 2 and "row 4" in capsys.readouterr().err
    code = main(["anomalies", "score", str(tmp_path / "absent.csv"), "--time-col", "when", "--value-col", "v",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "cannot open" in capsys.readouterr().err
