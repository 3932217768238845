"""Event schemas: JSON round trips, precise refusals of malformed records, JSON Schema export."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from only1mcp.cli import main
from only1mcp.events import (
    EVENT_TYPES, SCHEMA_VERSION, TOPICS, DeadLetter, EventDecodeError, RequestEvent, json_schema, keyed_hash,
)

FULL = RequestEvent(
    event_id="0" * 32, ts=1_700_000_000.25, latency_ms=12.5, method="tools/call", status="error",
    proxy_id="host:8080", client_id="c" * 32, session_id="s" * 32, tool="fs__read", server="fs", replica="fs-1",
    error_code=-32000, error_class="upstream_failed", request_bytes=120, response_bytes=0, args_hash="a" * 32,
    cache_hit=False, prefetch_hit=True, policy="p2c", reason="lowest ewma", attempts=2,
)
MINIMAL = RequestEvent(event_id="1" * 32, ts=1.0, latency_ms=0.0, method="ping", status="ok")
LETTER = DeadLetter(topic="mcp.requests", partition=3, offset=42, reason="not JSON", consumer="features", ts=2.0,
                    key="fs-1", value="{oops")


def as_dict(event: object) -> dict:
    return dataclasses.asdict(event)  # type: ignore[call-overload]


def with_changes(event: object, **changes: object) -> bytes:
    doc = as_dict(event)
    for name, value in changes.items():
        if value is KeyError:
            del doc[name]
        else:
            doc[name] = value
    return orjson.dumps(doc)


@pytest.mark.parametrize("event", [FULL, MINIMAL, LETTER], ids=["full", "minimal", "dead-letter"])
def test_round_trip(event: object) -> None:
    data = event.to_json()  # type: ignore[attr-defined]
    assert type(event).from_json(data) == event  # type: ignore[attr-defined]
    assert type(event).from_json(data.decode()) == event  # type: ignore[attr-defined]
    assert orjson.dumps(event) == data  # what the Kafka sink sends: the same bytes


def test_ints_are_accepted_where_floats_are_expected() -> None:
    assert RequestEvent.from_json(with_changes(MINIMAL, ts=5, latency_ms=0)).ts == 5


MALFORMED = [
    ("not-json", b"{not json", "not JSON: "),
    ("empty", b"", "not JSON: "),
    ("array", b"[1, 2]", "not a JSON object"),
    ("string", b'"event"', "not a JSON object"),
    ("no-version", with_changes(FULL, schema_version=KeyError), f"schema_version None, expected {SCHEMA_VERSION}"),
    ("future-version", with_changes(FULL, schema_version=2), f"schema_version 2, expected {SCHEMA_VERSION}"),
    ("version-as-text", with_changes(FULL, schema_version="1"), f"schema_version '1', expected {SCHEMA_VERSION}"),
    ("unknown-fields", with_changes(FULL, zeta=1, arguments={"path": "/"}), "unknown fields: arguments, zeta"),
    ("missing-id", with_changes(FULL, event_id=KeyError), "missing field 'event_id'"),
    ("missing-status", with_changes(FULL, status=KeyError), "missing field 'status'"),
    ("float-as-text", with_changes(FULL, latency_ms="12"), "field 'latency_ms': '12' is not <class 'float'>"),
    ("bool-as-float", with_changes(FULL, ts=True), "field 'ts': True is not <class 'float'>"),
    ("bool-as-int", with_changes(FULL, attempts=False), "field 'attempts': False is not <class 'int'>"),
    ("float-as-int", with_changes(FULL, request_bytes=1.5), "field 'request_bytes': 1.5 is not <class 'int'>"),
    ("null-required", with_changes(FULL, method=None), "field 'method': None is not <class 'str'>"),
    ("int-as-optional-text", with_changes(FULL, tool=7), "field 'tool': 7 is not str | None"),
    ("text-as-bool", with_changes(FULL, cache_hit="false"), "field 'cache_hit': 'false' is not <class 'bool'>"),
]


@pytest.mark.parametrize(("data", "reason"), [(d, r) for _, d, r in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_records_are_refused_with_a_precise_reason(data: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        RequestEvent.from_json(data)
    assert str(caught.value).startswith(reason), str(caught.value)


def test_a_dead_letter_is_not_a_request_event() -> None:
    with pytest.raises(EventDecodeError, match="unknown fields: consumer, key, offset, partition, topic, value"):
        RequestEvent.from_json(LETTER.to_json())


def test_keyed_hash_is_canonical_and_keyed() -> None:
    assert keyed_hash(b"k", {"a": 1, "b": [1, 2]}) == keyed_hash(b"k", {"b": [1, 2], "a": 1})
    assert keyed_hash(b"k", {"a": 1}) != keyed_hash(b"other", {"a": 1})
    assert keyed_hash(b"k", {"a": 1}) != keyed_hash(b"k", {"a": 2})
    assert len(keyed_hash(b"k", "x")) == 32 and keyed_hash(b"k", b"raw") == keyed_hash(b"k", b"raw")


def test_topics_are_the_designed_ones() -> None:
    assert TOPICS["requests"] == "mcp.requests" and TOPICS["dead_letter"] == "mcp.dead-letter"
    assert len(set(TOPICS.values())) == len(TOPICS)


jsonschema = pytest.importorskip("jsonschema")


@pytest.mark.parametrize("event", [FULL, MINIMAL, LETTER], ids=["full", "minimal", "dead-letter"])
def test_json_schema_accepts_real_events(event: object) -> None:
    schema = json_schema(type(event))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(orjson.loads(event.to_json()))  # type: ignore[attr-defined]


SCHEMA_CASES = [pytest.param(n, d, r, id=n) for n, d, r in MALFORMED[4:]]


@pytest.mark.parametrize(("name", "data", "reason"), SCHEMA_CASES)
def test_json_schema_rejects_what_the_decoder_rejects(name: str, data: bytes, reason: str) -> None:
    validator = jsonschema.Draft202012Validator(json_schema(RequestEvent))
    assert not validator.is_valid(orjson.loads(data)), name


def test_json_schema_rejects_a_dead_letter_posing_as_a_request() -> None:
    validator = jsonschema.Draft202012Validator(json_schema(RequestEvent))
    errors = list(validator.iter_errors(orjson.loads(LETTER.to_json())))
    assert errors and any("additional" in e.message.lower() or "required" in e.message for e in errors)


def test_schema_export_writes_one_file_per_event_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "export", "--out", str(tmp_path / "schemas")]) == 0
    files = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert files == sorted(f"{name}.v{SCHEMA_VERSION}.schema.json" for name in EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        written = json.loads((tmp_path / "schemas" / f"{name}.v{SCHEMA_VERSION}.schema.json").read_text())
        assert written == json_schema(cls)
        jsonschema.Draft202012Validator.check_schema(written)
    assert "request.v1.schema.json" in capsys.readouterr().out


def test_schema_export_prints_them_without_out() -> None:
    result = subprocess.run([sys.executable, "-m", "only1mcp.cli", "schema", "export"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == set(EVENT_TYPES)
    assert printed["request"]["properties"]["schema_version"]["const"] == SCHEMA_VERSION
