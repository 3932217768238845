"""Fuzzing the proxy's other inputs (hypothesis), in process and fast.

- the configuration: generated TOML tables (wrong types, unknown keys, out-of-range values) through
  ``parse_settings``, ``load_settings`` and ``only1mcp config`` → Settings holding exactly what was
  written, or a ``ConfigError`` naming the key; never another exception;
- the event decoders on arbitrary bytes and on mutated valid records → the record or an
  ``EventDecodeError``; a decoded record re-encodes to JSON that decodes to an equal record;
- the disk spool: real segments, then torn, flipped and garbage-appended → the intact records come
  back in order, the damaged lines are counted and dropped, the spool keeps taking records;
- ``/admin/*`` through a real app (in process): odd JSON bodies and unknown ids → a 4xx with a JSON
  error, never a 5xx.

The "ci" profile (tests/conftest.py) bounds the cases and fixes the seed; ``ONLY1MCP_FUZZ=1`` runs long.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")

import orjson  # noqa: E402
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from only1mcp.commands import config as config_command  # noqa: E402
from only1mcp.errors import ConfigError  # noqa: E402
from only1mcp.events import (  # noqa: E402
    AnomalyEvent, DeadLetter, EventDecodeError, Remediation, RequestEvent, RoutingWeights,
)
from only1mcp.settings import load_settings, parse_settings  # noqa: E402

# -- the configuration -----------------------------------------------------------------------------------
BASE: dict[str, Any] = {
    "proxy": {"listen": "127.0.0.1:8080"},
    "servers": [{"name": "echo", "replicas": [{"url": "http://127.0.0.1:9/mcp"}],
                 "tools": {"echo": {"timeout": 1.0}}, "health": {}, "outlier": {}, "breaker": {}, "remediation": {}}],
}


def _keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _tables() -> dict[tuple[Any, ...], list[str]]:
    from only1mcp.settings import _TABLES, ProxySettings, ReplicaSettings, ServerSettings
    from only1mcp.traffic import BreakerSettings, HealthSettings, OutlierSettings, RemediationSettings, ToolSettings

    found: dict[tuple[Any, ...], list[str]] = {("proxy",): _keys(ProxySettings)}
    found.update({(name,): _keys(cls) for name, cls in _TABLES.items()})
    found[("servers", 0)] = _keys(ServerSettings)
    for name, cls in (("health", HealthSettings), ("outlier", OutlierSettings), ("breaker", BreakerSettings),
                      ("remediation", RemediationSettings)):
        found[("servers", 0, name)] = _keys(cls)
    found[("servers", 0, "tools", "echo")] = _keys(ToolSettings)
    found[("servers", 0, "replicas", 0)] = _keys(ReplicaSettings)
    return found


TABLES = _tables()
toml_scalars = st.one_of(
    st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(),
    st.sampled_from([0, -1, 1, 2**31, 65536, 0.0, -0.0, 1e-300, 1e300, "", "127.0.0.1:0", "[::1]:8080", "host:99999",
                     "http://x", "https://x/mcp", "round_robin", "learned", "weighted", "debug", "lru", "batch",
                     "2026-07-28", "auto", "session", "arguments"]))
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3),
                        st.dictionaries(st.text(max_size=8), toml_scalars, max_size=3))


def _get(raw: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        raw = raw[part]
    return raw


@st.composite
def config_mutations(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Any, ...], str, Any]:
    raw = json.loads(json.dumps(BASE))
    path = draw(st.sampled_from(sorted(TABLES, key=str)))
    if len(path) == 1:
        raw.setdefault(path[0], {})
    key = draw(st.one_of(st.sampled_from(TABLES[path]), st.text(min_size=1, max_size=12)))
    value = draw(toml_values)
    table = _get(raw, path)
    if draw(st.integers(0, 9)) == 0 and len(path) > 1:  # the table itself of the wrong type
        parent, key = _get(raw, path[:-1]), path[-1]
        parent[key] = value
        return raw, path[:-1], str(key), value
    table[key] = value
    return raw, path, key, value


def _names(exc: ConfigError, key: str) -> bool:
    """The error names the key: its last component is ``key`` (servers appear by index or by name)."""
    parts = [p for p in re.split(r"[.\[\]]", exc.key) if p]
    return key in parts or exc.key.endswith(key)


def _norm(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_norm(v) for v in value]
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_CROSS = {"url", "command"}  # one of the two per replica: the error names the replica


@given(case=config_mutations())
@example(case=({"proxy": {"listen": "127.0.0.1:8080", "call_timeout": float("nan")}}, ("proxy",), "call_timeout",
               float("nan")))
@example(case=({"servers": [{"name": "e", "replicas": [{"url": "http://x"}], "tools": {"t": {"pin": "r0"}}}]},
               ("servers", 0, "tools", "t"), "pin", "r0"))
@example(case=({"servers": [{"name": "e", "replicas": [{"url": "http://x"}], "tools": {"t": 5}}]},
               ("servers", 0, "tools"), "t", 5))
@example(case=({"servers": [{"name": "e", "replicas": [{"url": "http://x", "headers": {"a": 1}}]}]},
               ("servers", 0, "replicas", 0), "headers", {"a": 1}))
def test_parse_settings(case: tuple[dict[str, Any], tuple[Any, ...], str, Any]) -> None:
    raw, path, key, value = case
    try:
        settings = parse_settings(raw, "fuzz.toml", {})
    except ConfigError as exc:
        assert exc.source == "fuzz.toml"
        named = _names(exc, key) or (key in _CROSS and exc.key.endswith("]"))
        assert named, f"the error does not name {key!r} (at {path}): {exc.key}: {exc.reason}"
        assert exc.reason, exc
        return
    # accepted: what is in force is what was written (no silent coercion)
    if path == ("proxy",) or (len(path) == 1 and path[0] != "servers"):
        held = getattr(getattr(settings, path[0]), key)
        if isinstance(held, float) and isinstance(value, int):  # a float setting: the nearest float
            value = float(value)
        assert _norm(held) == _norm(value), f"{path[0]}.{key}: wrote {value!r}, in force {held!r}"
    if isinstance(value, float) and math.isnan(value):
        pytest.fail(f"{path}.{key} = nan was accepted")


env_values = st.one_of(st.text(max_size=20), st.sampled_from(["", "nan", "inf", "-1", "0", "1_000", " 5 ", "1e3",
                                                               "a,b", "127.0.0.1:x", "debug", "8080"]))


@given(key=st.one_of(st.sampled_from(TABLES[("proxy",)]), st.text(min_size=1, max_size=10)), value=env_values)
@example(key="call_timeout", value="nan")
@example(key="listen", value="127.0.0.1:99999")
def test_proxy_environment(key: str, value: str) -> None:
    environ = {f"ONLY1MCP_PROXY_{key.upper()}": value}
    try:
        parse_settings({}, "fuzz.toml", environ)
    except ConfigError as exc:
        assert exc.key == f"proxy.{key.upper().lower()}", exc
    except UnicodeError:
        pytest.fail("an environment variable name that does not lower-case cleanly")


def _toml_str(text: str) -> str:
    # a TOML basic string: JSON's escapes, but no surrogate pairs (astral characters stay literal)
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_text(value: Any) -> str:
    """A value as TOML (inline tables and arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_str(k)} = {toml_text(v)}" for k, v in value.items()) + "}"


def config_file(raw: dict[str, Any]) -> str:
    lines = []
    # top-level values that are not tables first: after a [table] header a key belongs to that table
    tables_last = sorted(raw.items(), key=lambda item: isinstance(item[1], dict) or (
        isinstance(item[1], list) and bool(item[1]) and all(isinstance(t, dict) for t in item[1])))
    for name, table in tables_last:
        if name == "servers" and isinstance(table, list) and table and all(isinstance(t, dict) for t in table):
            for server in table:
                lines.append("[[servers]]")
                lines += [f"{_toml_str(k)} = {toml_text(v)}" for k, v in server.items()]
        elif isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{_toml_str(k)} = {toml_text(v)}" for k, v in table.items()]
        else:
            lines.append(f"{_toml_str(name)} = {toml_text(table)}")
    return "\n".join(lines) + "\n"


@given(case=config_mutations(), damage=st.one_of(st.none(), st.binary(min_size=1, max_size=12)),
       at=st.integers(0, 10_000))
@example(case=(BASE, ("proxy",), "listen", "127.0.0.1:8080"), damage=b"\xff", at=5)
@example(case=(BASE, ("proxy",), "listen", "127.0.0.1:8080"), damage=b"\xef\xbb\xbf", at=0)
def test_load_settings(tmp_path_factory: pytest.TempPathFactory, case: Any, damage: bytes | None, at: int) -> None:
    raw, _path, key, _value = case
    data = config_file(raw).encode()
    if damage is not None:
        at %= len(data) + 1
        data = data[:at] + damage + data[at:]
    path = tmp_path_factory.mktemp("cfg") / "only1mcp.toml"
    path.write_bytes(data)
    try:
        load_settings(path, {})
    except ConfigError as exc:
        assert exc.source == str(path) and exc.reason, exc
        if damage is None:
            assert _names(exc, key) or key in _CROSS, exc
        refused = True
    else:
        refused = False
    # `only1mcp config` on the same file: the resolved settings as JSON, or exit 2 with one line
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = config_command.run(argparse.Namespace(config=str(path), environ={}))
        except SystemExit as exit_:
            code = exit_.code
    if refused:
        assert code == 2 and err.getvalue().startswith("only1mcp: configuration error: "), err.getvalue()
    else:
        assert code == 0 and json.loads(out.getvalue())["source"] == str(path)


def test_load_settings_unreadable(tmp_path: Path) -> None:
    """Found by fuzzing: a file that is not UTF-8 (or not a file) raised UnicodeDecodeError / OSError."""
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[proxy]\nlisten = "caf\xe9:80"\n')
    with pytest.raises(ConfigError, match=r"latin1.toml: -: not UTF-8 text .*byte 0xe9 at position 21\)"):
        load_settings(bad, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path, {})  # a directory
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml", {})


def test_config_command_never_crashes(tmp_path: Path) -> None:
    """``only1mcp config`` on a broken file: exit 2, one line naming the file, the key and why; no traceback."""
    cases = {"type.toml": b'[proxy]\nlisten = 8080\n', "unknown.toml": b'[proxy]\nlisten = "127.0.0.1:1"\nfoo = 1\n',
             "utf8.toml": b'[proxy]\nlisten = "\xff"\n', "toml.toml": b"[proxy\n"}
    expected = {"type.toml": "proxy.listen", "unknown.toml": "proxy.foo", "utf8.toml": "not UTF-8",
                "toml.toml": "invalid TOML"}
    for name, body in cases.items():
        path = tmp_path / name
        path.write_bytes(body)
        done = subprocess.run([sys.executable, "-m", "only1mcp.cli", "config", "--config", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and expected[name] in done.stderr, (name, done.stderr)


# -- the event decoders ----------------------------------------------------------------------------------
VALID_EVENTS: dict[type, dict[str, Any]] = {
    RequestEvent: dataclasses.asdict(RequestEvent(event_id="e1", ts=1.5, latency_ms=3.0, method="tools/call",
                                                  status="ok", tool="echo__echo", server="echo", replica="r0",
                                                  request_bytes=10, response_bytes=20, attempts=1, inflight=0)),
    RoutingWeights: dataclasses.asdict(RoutingWeights(decision_id="d1", ts=1.0, valid_until=2.0, server="echo",
                                                      weights={"r0": 1.0, "r1": 0.5}, tool="echo__echo",
                                                      predicted_ms={"r0": [1.0, 2.0]})),
    AnomalyEvent: dataclasses.asdict(AnomalyEvent(anomaly_id="a1", ts=1.0, state="open", server="echo", replica="r0",
                                                  score=0.9, severity="high", confidence=0.5,
                                                  detectors={"spc": 0.9}, features={"p95": 4.0},
                                                  time_to_failure_s=30.0)),
    Remediation: dataclasses.asdict(Remediation(decision_id="d2", ts=1.0, valid_until=2.0, server="echo", replica="r0",
                                                action="eject", severity="high", confidence=0.7)),
    DeadLetter: dataclasses.asdict(DeadLetter(topic="mcp.requests", partition=0, offset=5, reason="bad", consumer="w",
                                              ts=1.0, key="r0", value="{}")),
}
EVENT_CLASSES = list(VALID_EVENTS)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=20), st.sampled_from([0, -1, 1, 2, 1.0, 0.5, -0.0, 2**63, 2**64 - 1, 2**64,
                                                                1e308, -1e308, 1.5, True, False]))
def _dumps(value: Any) -> bytes:
    """JSON as any producer writes it (integers of any size, unlike orjson)."""
    return json.dumps(value).encode()


json_any = st.recursive(json_scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                              st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                        max_leaves=10)


def _roundtrip(cls: type, data: bytes) -> None:
    try:
        record = cls.from_json(data)
    except EventDecodeError as exc:
        assert str(exc), "an EventDecodeError without a reason"
        return
    assert isinstance(record, cls)
    again = cls.from_json(record.to_json())
    assert again == record, f"{record} re-encodes to {again}"
    # no silent wrong value: every field holds what the record said, of the type the schema names
    sent = orjson.loads(data)
    for name, value in sent.items():
        held = getattr(record, name)
        assert held == value and type(held) is type(value) or (isinstance(value, int) and isinstance(held, float)
                                                               and float(value) == held), (name, value, held)
        if isinstance(held, float):
            assert math.isfinite(held), (name, held)
    assert record.type == VALID_EVENTS[cls]["type"], f"a {record.type!r} record decoded as {cls.__name__}"


@given(cls=st.sampled_from(EVENT_CLASSES), data=st.one_of(st.binary(max_size=300), json_any.map(_dumps)))
def test_decoders_on_arbitrary_bytes(cls: type, data: bytes) -> None:
    _roundtrip(cls, data)
    _roundtrip(cls, data.decode("utf-8", "replace"))


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[type, bytes]:
    cls = draw(st.sampled_from(EVENT_CLASSES))
    record = dict(VALID_EVENTS[cls])
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "set", "drop", "add", "type"]))
        if action == "set" or not record:
            record[draw(st.sampled_from(sorted(VALID_EVENTS[cls])))] = draw(json_any)
        elif action == "drop":
            record.pop(draw(st.sampled_from(sorted(record))))
        elif action == "add":
            record[draw(st.text(max_size=10))] = draw(json_any)
        else:
            record["type"] = draw(st.sampled_from(["request", "routing_weights", "anomaly", "remediation",
                                                   "dead_letter", "", "REQUEST"]))
    data = _dumps(record)
    if draw(st.booleans()):  # and at the byte level: numbers the JSON parser widens or refuses
        data = data.replace(b"1.0", draw(st.sampled_from([b"1e400", b"NaN", b"-0.0", b"1E2", b"true", b"18446744073709551616",
                                                          b"0.1e-400"])), 1)
    return cls, data


@given(case=mutated_records())
@example(case=(RequestEvent, orjson.dumps({**VALID_EVENTS[RequestEvent], "type": "anomaly"})))
@example(case=(Remediation, orjson.dumps({**VALID_EVENTS[Remediation], "confidence": True})))
@example(case=(RoutingWeights, orjson.dumps({**VALID_EVENTS[RoutingWeights], "weights": {"r0": -1}})))
@example(case=(AnomalyEvent, orjson.dumps({**VALID_EVENTS[AnomalyEvent], "score": 1.5})))
@example(case=(DeadLetter, _dumps({**VALID_EVENTS[DeadLetter], "partition": 2**64})))
def test_decoders_on_mutated_records(case: tuple[type, bytes]) -> None:
    cls, data = case
    _roundtrip(cls, data)


def test_decoders_name_the_problem() -> None:
    """The reasons the fuzzing relies on, pinned."""
    record = {**VALID_EVENTS[RequestEvent], "type": "anomaly"}
    with pytest.raises(EventDecodeError, match=r"type 'anomaly', expected 'request'"):
        RequestEvent.from_json(orjson.dumps(record))
    with pytest.raises(EventDecodeError, match="not JSON"):
        Remediation.from_json(b'{"confidence": NaN}')
    with pytest.raises(EventDecodeError, match=r"field 'confidence': True is not"):
        Remediation.from_json(orjson.dumps({**VALID_EVENTS[Remediation], "confidence": True}))


# -- the disk spool --------------------------------------------------------------------------------------
def _event(i: int) -> bytes:
    return RequestEvent(event_id=f"e{i:06d}", ts=1000.0 + i, latency_ms=float(i), method="tools/call", status="ok",
                        replica=f"r{i % 3}").to_json()


@st.composite
def spool_damage(draw: st.DrawFn) -> tuple[int, int, list[tuple[str, int, bytes]]]:
    count = draw(st.integers(1, 40))
    segment = draw(st.sampled_from([200, 1000, 4096, 1 << 20]))
    damage = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "append", "cursor", "empty", "stray"]))
        damage.append((kind, draw(st.integers(0, 1 << 30)), draw(st.binary(min_size=1, max_size=40))))
    return count, segment, damage


def _apply(directory: Path, damage: list[tuple[str, int, bytes]]) -> set[bytes]:
    """Damage the files; return the original lines that no longer exist intact."""
    segments = sorted(directory.glob("*.seg"))
    for kind, where, junk in damage:
        if kind == "cursor":  # garbage, or a negative position: to be ignored, not to skip records
            (directory / "cursor").write_bytes(junk if where % 2 else f"{int(segments[0].stem) if segments else 1} "
                                               f"{-(where % 50) - 1}".encode())
            continue
        if kind == "stray":
            (directory / f"{where % 10**6:020d}.seg").write_bytes(junk)
            continue
        if not segments:
            continue
        path = segments[where % len(segments)]
        data = path.read_bytes()
        if kind == "truncate":
            data = data[:where % (len(data) + 1)]
        elif kind == "flip" and data:
            at = where % len(data)
            data = data[:at] + bytes([data[at] ^ (junk[0] or 1)]) + data[at + 1:]
        elif kind == "append":
            data = data + junk
        else:
            data = b""
        path.write_bytes(data)
    return set()


@given(case=spool_damage())
@example(case=(10, 200, [("truncate", 150, b"x")]))
@example(case=(10, 1 << 20, [("cursor", 3, b"x")]))  # a cursor "SEQ -3": a negative position
@example(case=(10, 1 << 20, [("flip", 7, b"\x08")]))
def test_spool_survives_damage(tmp_path_factory: pytest.TempPathFactory,
                               case: tuple[int, int, list[tuple[str, int, bytes]]]) -> None:
    from only1mcp.proxy.events.spool import Spool, request_event_line

    count, segment, damage = case
    directory = tmp_path_factory.mktemp("spool")
    originals = [_event(i) for i in range(count)]
    spool = Spool(directory, max_bytes=1 << 30, fsync="never", segment_bytes=segment, check=request_event_line)
    spool.append(originals)
    spool.close()
    _apply(directory, damage)

    on_disk = []  # every line left on disk, in the order of the segments
    for path in sorted(directory.glob("*.seg"), key=lambda p: int(p.stem)):
        lines = path.read_bytes().split(b"\n")
        on_disk += lines[:-1] if lines and lines[-1] == b"" else lines
    spool = Spool(directory, max_bytes=1 << 30, fsync="never", segment_bytes=segment, check=request_event_line)
    got = _drain(spool)
    # every intact record comes back, in order, once; nothing damaged does (a flipped byte that leaves a
    # record still decoding is not detectable without checksums: it is returned, and it is an event)
    assert got == [line for line in on_disk if _decodes(line)]
    assert [originals.index(line) for line in got if line in originals] == \
        sorted({originals.index(line) for line in got if line in originals})
    assert spool.pending == 0
    # the damaged part is reported: the reader counts every line it refused
    assert spool.counters()["corrupt"] == len(on_disk) - len(got), (spool.counters(), len(on_disk), len(got))
    # and it keeps accepting records
    fresh = [_event(10_000 + i) for i in range(3)]
    assert spool.append(fresh) == 3
    assert _drain(spool) == fresh
    spool.close()


def _decodes(line: bytes) -> bool:
    try:
        RequestEvent.from_json(line)
    except EventDecodeError:
        return False
    return True


def _drain(spool: Any) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(10_000):
        lines = spool.read(7)
        if not lines:
            break
        out.extend(lines)
        spool.ack(len(lines))
    return out


def test_spool_reader_keeps_the_intact_records(tmp_path: Path) -> None:
    """A torn last line and a flipped byte: the records before (and after) the damage come back."""
    from only1mcp.proxy.events.spool import Spool, request_event_line

    originals = [_event(i) for i in range(6)]
    spool = Spool(tmp_path, max_bytes=1 << 30, fsync="never", check=request_event_line)
    spool.append(originals)
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    data = seg.read_bytes()
    second = data.index(b"\n") + 5
    data = data[:second] + b"\x00" + data[second + 1:]
    seg.write_bytes(data[:-20])  # and the last line torn
    spool = Spool(tmp_path, max_bytes=1 << 30, fsync="never", check=request_event_line)
    assert _drain(spool) == [originals[0], *originals[2:5]]
    assert spool.counters()["corrupt"] == 2 and spool.pending == 0
    spool.close()


def test_spool_damaged_cursor_neither_skips_nor_sticks(tmp_path: Path) -> None:
    """Found by fuzzing: a cursor "SEQ -3" made the position negative (records read twice, a wrong
    pending count); a cursor past a head segment truncated since left read() empty for good while
    later segments waited (the sink would never drain the spool)."""
    from only1mcp.proxy.events.spool import Spool, request_event_line

    originals = [_event(i) for i in range(8)]
    spool = Spool(tmp_path, max_bytes=1 << 30, fsync="never", segment_bytes=len(originals[0]) * 4 + 4,
                  check=request_event_line)
    spool.append(originals)
    spool.close()
    head, *_rest = sorted(tmp_path.glob("*.seg"))
    (tmp_path / "cursor").write_text(f"{int(head.stem)} -3\n")
    spool = Spool(tmp_path, max_bytes=1 << 30, fsync="never", check=request_event_line)
    assert spool.pending == 8 and _drain(spool) == originals
    spool.close()

    spool = Spool(tmp_path / "b", max_bytes=1 << 30, fsync="never", segment_bytes=len(originals[0]) * 4 + 4,
                  check=request_event_line)
    spool.append(originals)
    assert spool.read(2) == originals[:2]
    spool.ack(2)  # the cursor says: 2 lines of the head delivered
    spool.close()
    head = sorted((tmp_path / "b").glob("*.seg"))[0]
    head.write_bytes(head.read_bytes()[:len(originals[0]) + 1])  # the head lost all but its first line
    spool = Spool(tmp_path / "b", max_bytes=1 << 30, fsync="never", check=request_event_line)
    assert _drain(spool) == originals[4:] and spool.pending == 0
    spool.close()


# -- /admin/* ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from starlette.testclient import TestClient

    from only1mcp.proxy.app import build_app

    tmp = tmp_path_factory.mktemp("admin")
    path = tmp / "only1mcp.toml"
    path.write_text('[proxy]\nlisten = "127.0.0.1:9"\nconnect_timeout = 0.2\n[[servers]]\nname = "echo"\n'
                    'policy = "weighted"\nfallback_policy = "round_robin"\n'
                    '[[servers.replicas]]\nurl = "http://127.0.0.1:9/mcp"\n')
    settings = load_settings(path, {})
    app = build_app(settings, reload_from=lambda: load_settings(path, {}))
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 5000)) as client:
        client.config_path = path  # type: ignore[attr-defined]
        yield client


admin_bodies = st.one_of(
    json_any.map(_dumps),
    st.binary(max_size=60),
    st.fixed_dictionaries({"server": json_scalars, "auto": json_scalars}).map(_dumps),
    st.fixed_dictionaries({"server": st.sampled_from(["echo", "nope", ""]), "tool": json_scalars,
                           "pin": json_any, "ban": json_any}).map(_dumps),
    st.fixed_dictionaries({"weights": json_any, "valid_until": json_scalars, "model_version": json_scalars})
    .map(_dumps),
    st.sampled_from([b"", b"null", b"[]", b"{}", b'{"server": "echo", "auto": "no"}', b"NaN", b"\xff",
                     b'{"weights": {"echo-0": 1e400}}', b'{"weights": {"x": 1}, "valid_until": 1e300}']),
)


def _admin_ok(resp: Any) -> None:
    assert resp.status_code < 500, f"HTTP {resp.status_code}: {resp.text[:500]}"
    assert "Traceback" not in resp.text
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], resp.text


@given(route=st.sampled_from(["/admin/overrides", "/admin/remediation", "/admin/weights/echo", "/admin/weights/nope",
                              "/admin/reload"]), body=admin_bodies)
@example(route="/admin/weights/echo", body=b'{"weights": {"echo-0": 1}, "valid_until": 1e300}')
@example(route="/admin/overrides", body=b'{"server": "echo", "tool": "x", "pin": [[1]]}')
def test_admin_bodies(admin: Any, route: str, body: bytes) -> None:
    resp = admin.post(route, content=body, headers={"content-type": "application/json"})
    _admin_ok(resp)


def test_admin_unknown_paths_and_methods_answer_json(admin: Any) -> None:
    resp = admin.get("/admin/nothing")
    assert resp.status_code == 404 and resp.json() == {"error": "Not Found: GET '/admin/nothing'"}
    resp = admin.delete("/admin/overrides")
    assert resp.status_code == 405 and "Method Not Allowed" in resp.json()["error"]
    assert "GET" in resp.headers["allow"]


@given(request_id=st.text(min_size=1, max_size=200).filter(lambda s: "/" not in s and s not in (".", "..")),
       view=st.sampled_from(["explain", "decisions"]))
@example(request_id="\n", view="explain")  # found: the router's plain-text 404, not a JSON error
@example(request_id="..", view="explain")
def test_admin_unknown_ids(admin: Any, request_id: str, view: str) -> None:
    from urllib.parse import quote

    resp = admin.get(f"/admin/{view}/{quote(request_id, safe='')}")
    _admin_ok(resp)
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    # (the test client decodes the path twice: "%2541" arrives as "A", so the id is not compared)
    assert "for request id " in error or error.startswith("Not Found: GET "), error


@given(body=toml_values.map(lambda v: config_file({"proxy": {"listen": "127.0.0.1:9", "connect_timeout": v}})),
       junk=st.one_of(st.none(), st.binary(max_size=20)))
def test_admin_reload_of_odd_files(admin: Any, body: str, junk: bytes | None) -> None:
    path: Path = admin.config_path
    original = path.read_bytes()
    try:
        path.write_bytes(body.encode() + (junk or b""))
        resp = admin.post("/admin/reload")
        _admin_ok(resp)
    finally:
        path.write_bytes(original)
