"""``only1mcp anomalies score FILE.csv``: score any metric series offline.

Reads a CSV, scores each row from the rows before it only (``models.anomaly.series``), and writes
OUT.csv with the time column as given, ``anomaly_score`` in [0, 1] and ``is_anomaly`` (1/0): one
row per input row, in input order. Times are unix seconds or ISO-8601 (a time without a zone is
UTC). An empty value or NaN / NA / null is a missing value; anything else that is not a number, an
unparsable time or a missing column is an error naming the row or the column (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["add_score_arguments", "run_score", "InputError", "read_series"]

_MISSING = {"", "nan", "na", "n/a", "null", "none"}


class InputError(ValueError):
    """The CSV cannot be scored; the message names the file, row or column."""


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.csv", help="CSV with a header row")
    parser.add_argument("--time-col", required=True, metavar="T", help="time column: unix seconds or ISO-8601")
    parser.add_argument("--value-col", required=True, action="append", metavar="V",
                        help="a value column to score (repeat for several: one score over all of them)")
    parser.add_argument("--out", required=True, metavar="OUT.csv", help="where to write the scores")
    parser.add_argument("--threshold", type=float, default=None,
                        help="is_anomaly when anomaly_score >= this (default: the ensemble's 'low' threshold)")


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite time")
    return value


def read_series(path: Path, time_col: str, value_cols: list[str]) -> tuple[list[str], list[float], list[list[float]]]:
    """(time texts, unix seconds, values per row) of a CSV; InputError on anything unusable."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file (a header row is needed)")
        header = [h.strip() for h in header]
        missing = [c for c in [time_col, *value_cols] if c not in header]
        if missing:
            raise InputError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(header)})")
        ti, vi = header.index(time_col), [header.index(c) for c in value_cols]
        texts, times, rows = [], [], []
        for line_no, record in enumerate(reader, start=2):  # line 1 is the header
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) <= max(ti, *vi):
                raise InputError(f"{path}: row {line_no}: {len(record)} fields, the header has {len(header)}")
            try:
                times.append(_parse_time(record[ti]))
            except ValueError:
                raise InputError(f"{path}: row {line_no}: time {record[ti]!r} in column {time_col!r} is "
                                 "neither unix seconds nor ISO-8601") from None
            values = []
            for column, index in zip(value_cols, vi):
                cell = record[index].strip()
                if cell.lower() in _MISSING:
                    values.append(math.nan)
                    continue
                try:
                    values.append(float(cell))
                except ValueError:
                    raise InputError(f"{path}: row {line_no}: value {cell!r} in column {column!r} is not a number") from None
            texts.append(record[ti])
            rows.append(values)
    if not rows:
        raise InputError(f"{path}: no data rows")
    return texts, times, rows


def run_score(args: argparse.Namespace) -> int:
    import numpy as np

    from only1mcp.models.anomaly.series import score_series

    value_cols = list(dict.fromkeys(args.value_col))
    if args.time_col in value_cols:
        print(f"error: {args.time_col!r} is the time column; it cannot also be a value column", file=sys.stderr)
        return 2
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        print(f"error: --threshold must be in (0, 1], not {args.threshold}", file=sys.stderr)
        return 2
    try:
        texts, times, rows = read_series(Path(args.file), args.time_col, value_cols)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = score_series(np.array(times), np.array(rows, dtype=float), value_cols, threshold=args.threshold)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([args.time_col, "anomaly_score", "is_anomaly"])
        for text, score, flag in zip(texts, result.score.tolist(), result.is_anomaly.tolist()):
            writer.writerow([text, f"{score:.6f}", int(flag)])
    flagged = int(result.is_anomaly.sum())
    print(f"{len(texts)} rows scored, {flagged} anomalous (score >= {result.threshold:g}) → {out}")
    return 0
