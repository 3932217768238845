"""[worker.prefetch]: a nested table of [worker], parsed and checked like every table."""

from __future__ import annotations

import pytest

from only1mcp.errors import ConfigError
from only1mcp.settings import parse_settings
from only1mcp.streaming import WorkerPrefetchSettings


def test_defaults_and_values() -> None:
    assert parse_settings({}, "t", {}).worker.prefetch == WorkerPrefetchSettings()
    s = parse_settings({"worker": {"bootstrap": "x:1", "prefetch": {"min_confidence": 0.3, "valid_for": 5,
                                                                   "enabled": False}}},
                       "t", {"KAFKA_BOOTSTRAP": "y:2"})  # the address override keeps the nested table
    assert s.worker.bootstrap == "y:2"
    assert (s.worker.prefetch.min_confidence, s.worker.prefetch.valid_for, s.worker.prefetch.enabled) == (0.3, 5.0,
                                                                                                          False)


@pytest.mark.parametrize(("table", "where", "says"), [
    ({"bogus": 1}, "worker.prefetch.bogus", "unknown key"),
    ({"min_confidence": 1.5}, "worker.prefetch.min_confidence", "between 0 and 1"),
    ({"max_per_event": 0}, "worker.prefetch.max_per_event", ""),
    ({"valid_for": "soon"}, "worker.prefetch.valid_for", "expected float"),
])
def test_bad_values_name_the_key(table: dict, where: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"worker": {"prefetch": table}}, "f.toml", {})
    assert where in str(info.value) and says in str(info.value)


def test_not_a_table() -> None:
    with pytest.raises(ConfigError, match="worker.prefetch: must be a table"):
        parse_settings({"worker": {"prefetch": 3}}, "f.toml", {})


def test_worker_niceness_is_a_priority() -> None:
    assert parse_settings({}, "t", {}).worker.nice == 0
    assert parse_settings({"worker": {"nice": 10}}, "t", {}).worker.nice == 10
    for bad in (-1, 20):
        with pytest.raises(ConfigError, match=r"worker\.nice.*between 0 .* and 19"):
            parse_settings({"worker": {"nice": bad}}, "f.toml", {})
