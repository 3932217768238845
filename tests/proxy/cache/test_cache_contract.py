"""The contract every response-cache policy keeps, run against each one; and the cache key."""

from __future__ import annotations

import hashlib
import json
import random
from types import MappingProxyType

import pytest

from only1mcp.proxy.cache import POLICIES, ResponseCache, cache_key, make_cache
from only1mcp.traffic import CACHE_POLICIES

ZERO = dict.fromkeys(("hits", "misses", "evictions", "expirations", "rejected", "invalidations", "entries", "bytes"), 0)


@pytest.fixture(params=CACHE_POLICIES)
def policy(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_configurable_policy_is_registered() -> None:
    assert sorted(POLICIES) == sorted(CACHE_POLICIES)


def test_make_cache_builds_the_named_policy(policy: str) -> None:
    cache = make_cache(policy, 100)
    assert isinstance(cache, ResponseCache) and cache.name == policy and cache.max_bytes == 100
    assert len(cache) == 0 and cache.bytes_used == 0 and cache.stats() == ZERO


def test_make_cache_refuses_unknown_policies_and_negative_sizes() -> None:
    with pytest.raises(ValueError, match="unknown cache policy 'arc'.*lru, s3fifo, sieve"):
        make_cache("arc", 100)
    with pytest.raises(ValueError, match="max_bytes"):
        make_cache("lru", -1)
    with pytest.raises(ValueError, match="size"):
        make_cache("lru", 100).put("k", 1, -1, 10, 0, "s")


def test_hit_and_miss(policy: str) -> None:
    cache = make_cache(policy, 100)
    assert cache.get("k", 0) is None
    cache.put("k", {"result": 1}, 10, 60, 0, "s")
    assert cache.get("k", 1) == {"result": 1}
    assert cache.get("other", 1) is None
    assert cache.stats() == {**ZERO, "hits": 1, "misses": 2, "entries": 1, "bytes": 10}


def test_entries_expire_with_the_injected_clock(policy: str) -> None:
    cache = make_cache(policy, 100)
    cache.put("k", "v", 10, 5.0, 100.0, "s")
    assert cache.get("k", 104.999) == "v"
    assert cache.get("k", 105.0) is None  # expired at exactly put time + ttl
    assert len(cache) == 0 and cache.bytes_used == 0
    assert cache.get("k", 105.0) is None  # gone, so now a plain miss
    assert cache.stats() == {**ZERO, "hits": 1, "misses": 2, "expirations": 1}


def test_a_ttl_of_zero_stores_nothing_and_drops_the_older_value(policy: str) -> None:
    cache = make_cache(policy, 100)
    cache.put("k", "old", 10, 60, 0, "s")
    cache.put("k", "new", 10, 0, 1, "s")
    assert len(cache) == 0 and cache.get("k", 1) is None


def test_oversize_values_are_rejected(policy: str) -> None:
    cache = make_cache(policy, 100)
    cache.put("small", "v", 40, 60, 0, "s")
    cache.put("huge", "v", 101, 60, 0, "s")
    assert cache.get("huge", 0) is None and cache.get("small", 0) == "v"
    cache.put("exact", "v", 100, 60, 0, "s")  # exactly the budget fits, alone
    assert cache.get("exact", 0) == "v" and cache.bytes_used == 100 and len(cache) == 1
    assert cache.stats()["rejected"] == 1


def test_invalidate_drops_only_that_servers_entries(policy: str) -> None:
    cache = make_cache(policy, 1000)
    for key, tag in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        cache.put(key, key, 10, 60, 0, tag)
    assert cache.invalidate("a") == 2
    assert cache.invalidate("a") == 0 and cache.invalidate("nobody") == 0
    assert cache.get("a1", 0) is None and cache.get("a2", 0) is None and cache.get("b1", 0) == "b1"
    assert cache.bytes_used == 10
    cache.put("a1", "again", 10, 60, 0, "a")  # the server's results are cacheable again
    assert cache.get("a1", 0) == "again"
    assert cache.stats()["invalidations"] == 2


def test_overwriting_a_key_updates_the_size_accounting(policy: str) -> None:
    cache = make_cache(policy, 100)
    cache.put("a", "v1", 30, 60, 0, "s")
    cache.put("a", "v2", 50, 60, 0, "s")
    assert (len(cache), cache.bytes_used, cache.get("a", 0)) == (1, 50, "v2")
    cache.put("b", "b", 40, 60, 0, "s")
    cache.put("a", "v3", 55, 60, 0, "s")  # 40 + 55 fits: nothing evicted
    assert (len(cache), cache.bytes_used) == (2, 95)
    cache.put("a", "v4", 70, 60, 0, "s")  # 40 + 70 does not: b goes, never the new a
    assert (len(cache), cache.bytes_used, cache.get("a", 0)) == (1, 70, "v4")
    cache.put("a", "v5", 500, 60, 0, "s")  # too big: refused, and the stale v4 is dropped too
    assert (len(cache), cache.bytes_used, cache.get("a", 0)) == (0, 0, None)
    cache.put("c", "c", 10, 60, 0, "old-tag")
    cache.put("c", "c", 10, 60, 0, "new-tag")  # the tag moves with the value
    assert cache.invalidate("old-tag") == 0 and cache.invalidate("new-tag") == 1


def test_stats_count_exactly(policy: str) -> None:
    cache = make_cache(policy, 100)
    cache.put("a", 1, 40, 60, 0, "s")
    cache.put("b", 2, 40, 60, 0, "s")
    assert cache.get("a", 1) == 1 and cache.get("b", 1) == 2 and cache.get("zz", 1) is None
    cache.put("big", 0, 200, 60, 1, "s")  # rejected
    cache.put("c", 3, 40, 60, 2, "t")  # 120 > 100: the policy evicts exactly one of a, b
    assert cache.invalidate("t") == 1
    cache.put("d", 4, 10, 1, 3, "s")
    assert cache.get("d", 5) is None  # expired
    assert cache.stats() == {
        "hits": 2, "misses": 2, "evictions": 1, "expirations": 1, "rejected": 1, "invalidations": 1,
        "entries": 1, "bytes": 40,
    }
    assert (len(cache), cache.bytes_used) == (1, 40)
    cache.clear()
    assert (len(cache), cache.bytes_used, cache.get("a", 6), cache.get("b", 6)) == (0, 0, None, None)
    assert cache.stats() == {
        "hits": 2, "misses": 4, "evictions": 1, "expirations": 1, "rejected": 1, "invalidations": 1,
        "entries": 0, "bytes": 0,
    }  # the counters are cumulative: clear() keeps them


def test_the_byte_bound_holds_after_any_sequence(policy: str) -> None:
    """Random puts, gets, invalidations and a moving clock; a model of the last value put
    under each key checks that every hit is current and unexpired."""
    rng = random.Random(20240611)
    max_bytes = 3_000
    cache = make_cache(policy, max_bytes)
    model: dict[str, tuple[int, float, str, int]] = {}  # key -> (value, expires_at, tag, size) of the last put
    now, counted = 0.0, dict.fromkeys(("hits", "misses", "invalidations", "rejected"), 0)
    for step in range(4_000):
        now += rng.random()
        key, op = f"k{rng.randrange(60)}", rng.random()
        if op < 0.55:
            size = rng.randrange(1, 200) if rng.random() < 0.9 else rng.randrange(1, max_bytes + 500)
            ttl, tag = rng.uniform(-1, 60), rng.choice("abc")
            cache.put(key, step, size, ttl, now, tag)
            model.pop(key, None)
            if ttl > 0 and size <= max_bytes:
                model[key] = (step, now + ttl, tag, size)
            counted["rejected"] += ttl > 0 and size > max_bytes
        elif op < 0.98:
            value = cache.get(key, now)
            counted["hits" if value is not None else "misses"] += 1
            if value is not None:
                assert key in model and model[key][0] == value and now < model[key][1]
        else:
            tag = rng.choice("abc")
            dropped = cache.invalidate(tag)
            counted["invalidations"] += dropped
            assert dropped <= sum(v[2] == tag for v in model.values())
            model = {k: v for k, v in model.items() if v[2] != tag}
        assert 0 <= cache.bytes_used <= max_bytes
        assert cache.stats()["bytes"] == cache.bytes_used and cache.stats()["entries"] == len(cache)
    stats = cache.stats()
    assert {name: stats[name] for name in counted} == counted
    assert stats["evictions"] > 100 and stats["expirations"] > 10 and stats["hits"] > 100  # all paths ran
    live = {key: cache.get(key, now) for key in sorted(model)}  # drops whatever has expired
    assert len(cache) == sum(v is not None for v in live.values())
    assert cache.bytes_used == sum(model[key][3] for key, v in live.items() if v is not None)


def test_a_zero_byte_cache_stores_nothing(policy: str) -> None:
    cache = make_cache(policy, 0)
    cache.put("k", "v", 1, 60, 0, "s")
    assert len(cache) == 0 and cache.stats()["rejected"] == 1


# -- the key -------------------------------------------------------------------------------

def test_key_ignores_argument_order_and_whitespace() -> None:
    one = json.loads('{"b": [1, 2], "a": {"y": "é", "x": null}}')
    two = json.loads('{"a":{"x":null,"y":"é"},"b":[1,2]}')
    assert list(one) != list(two)
    assert cache_key("srv", "tool", one) == cache_key("srv", "tool", two)
    assert cache_key("srv", "tool", MappingProxyType(one)) == cache_key("srv", "tool", two)


def test_key_distinguishes_values_tools_and_servers() -> None:
    keys = {
        cache_key("srv", "tool", {"a": 1}), cache_key("srv", "tool", {"a": "1"}),
        cache_key("srv", "tool", {"a": 1.5}), cache_key("srv", "tool", {"a": True}),
        cache_key("srv", "tool", {"a": [1, 2]}), cache_key("srv", "tool", {"a": [2, 1]}),
        cache_key("srv", "tool", {"b": 1}), cache_key("srv", "other", {"a": 1}),
        cache_key("other", "tool", {"a": 1}), cache_key("srv", "tool", {"a": 2**70}),
    }
    assert len(keys) == 10


def test_key_layout_is_server_tool_and_sha256_of_canonical_json() -> None:
    canonical = json.dumps({"q": "café", "n": 3}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical == '{"n":3,"q":"café"}'
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    assert cache_key("srv", "search", {"q": "café", "n": 3}) == f"srv\x00search\x00{digest}"
    assert cache_key("srv", "now", None) == cache_key("srv", "now", {})  # no arguments is {}
