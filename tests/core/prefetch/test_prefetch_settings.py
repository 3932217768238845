"""``[prefetch]`` and the per-server and per-tool ``prefetch`` opt-outs: parsed, defaulted, refused."""

from __future__ import annotations

import pytest

from only1mcp.errors import ConfigError
from only1mcp.prefetch import PrefetchSettings
from only1mcp.settings import parse_settings

SERVER = {"name": "t", "replicas": [{"url": "http://127.0.0.1:1/mcp"}]}


def _parse(table: dict | None = None, **server: object) -> object:  # noqa: ANN401
    """Settings with ``[prefetch]`` = ``table`` and one server with the given keys."""
    raw: dict = {"servers": [{**SERVER, **server}]}
    if table is not None:
        raw["prefetch"] = table
    return parse_settings(raw, "test.toml", {})


def test_off_by_default_with_the_documented_budget() -> None:
    settings = _parse()
    assert settings.prefetch == PrefetchSettings()
    p = settings.prefetch
    assert (p.enabled, p.min_confidence, p.max_concurrent, p.max_share) == (False, 0.5, 4, 0.2)
    assert settings.servers[0].prefetch is True


def test_values_and_opt_outs_are_read() -> None:
    settings = _parse({"enabled": True, "min_confidence": 0.7, "max_concurrent": 2, "max_share": 0.1,
                       "window_s": 30, "max_sessions": 5, "max_calls": 4, "max_values": 16, "session_idle": 60,
                       "result_bytes": 1024},
                      prefetch=False, tools={"get": {"cache_ttl": 5.0, "prefetch": False}})
    p = settings.prefetch
    assert p.enabled and p.min_confidence == 0.7 and p.window_s == 30.0 and p.result_bytes == 1024
    assert settings.servers[0].prefetch is False and settings.servers[0].tools["get"].prefetch is False


@pytest.mark.parametrize(("table", "server", "key"), [
    ({"enabled": "yes"}, {}, "prefetch.enabled"),
    ({"min_confidence": 1.5}, {}, "prefetch.min_confidence"),
    ({"max_share": -0.1}, {}, "prefetch.max_share"),
    ({"max_concurrent": 0}, {}, "prefetch.max_concurrent"),
    ({"result_bytes": 10}, {}, "prefetch.result_bytes"),
    ({"nope": 1}, {}, "prefetch.nope"),
    (None, {"prefetch": "no"}, "servers[t].prefetch"),
    (None, {"tools": {"get": {"prefetch": 1}}}, "servers[t].tools.get.prefetch"),
])
def test_bad_values_are_refused_with_the_key(table: dict | None, server: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(table, **server)
    assert caught.value.key == key, caught.value
