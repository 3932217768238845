"""Adaptive TTLs (proxy/cache/adaptive.py) and what the cache gives them: the value of an entry a
look-up found expired, a look-up that does not count its miss, and client-scoped keys."""

from __future__ import annotations

import pytest

from only1mcp.proxy.cache import POLICIES, AdaptiveTTLs, cache_key, make_cache, scoped_key


def test_grows_while_the_same_shrinks_when_changed_within_bounds() -> None:
    ttls = AdaptiveTTLs()
    assert ttls.ttl("s", "t", 10.0, 1.0, 60.0) == 10.0  # nothing learned: the configured TTL
    assert ttls.ttl("s", "t", 0.5, 1.0, 60.0) == 1.0  # ... within the bounds
    assert ttls.learn("s", "t", 10.0, 1.0, 60.0, changed=False) == 15.0
    assert ttls.learn("s", "t", 10.0, 1.0, 60.0, changed=False) == 22.5
    assert ttls.ttl("s", "t", 10.0, 1.0, 60.0) == 22.5
    for _ in range(10):
        ttls.learn("s", "t", 10.0, 1.0, 60.0, changed=False)
    assert ttls.ttl("s", "t", 10.0, 1.0, 60.0) == 60.0  # capped at max
    assert ttls.ttl("s", "t", 10.0, 1.0, 30.0) == 30.0  # a lower max after a reload applies at once
    assert ttls.learn("s", "t", 10.0, 1.0, 60.0, changed=True) == 30.0
    for _ in range(10):
        ttls.learn("s", "t", 10.0, 1.0, 60.0, changed=True)
    assert ttls.ttl("s", "t", 10.0, 1.0, 60.0) == 1.0  # floored at min
    assert ttls.ttl("s", "other", 10.0, 1.0, 60.0) == 10.0  # per tool
    assert ttls.ttl("other", "t", 10.0, 1.0, 60.0) == 10.0  # and per server
    assert ttls.snapshot() == {"s": {"t": {"ttl": 1.0, "configured": 10.0, "unchanged": 12, "changed": 11}}}
    assert ttls.current() == {("s", "t"): 1.0}


def test_a_new_configured_ttl_starts_over_and_forget_drops_a_server() -> None:
    ttls = AdaptiveTTLs()
    ttls.learn("s", "t", 10.0, 1.0, 60.0, changed=False)
    assert ttls.ttl("s", "t", 20.0, 1.0, 60.0) == 20.0  # cache_ttl changed by a reload: learned value unused
    assert ttls.learn("s", "t", 20.0, 1.0, 60.0, changed=True) == 10.0  # and learning restarts from 20
    ttls.learn("u", "t", 10.0, 1.0, 60.0, changed=True)
    ttls.forget("s")
    assert list(ttls.snapshot()) == ["u"] and len(ttls) == 1


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_the_cache_hands_over_the_expired_value_once(policy: str) -> None:
    cache = make_cache(policy, 1000)
    cache.put("k", b"old", 3, 5.0, 0.0, "s")
    assert cache.get("k", 1.0) == b"old" and cache.expired is None
    assert cache.get("k", 5.0) is None and cache.expired == b"old"  # gone at t+ttl, its value kept
    assert cache.get("k", 6.0) is None and cache.expired is None  # only the look-up that dropped it sees it
    assert cache.stats()["expirations"] == 1


def test_a_look_up_may_leave_its_miss_uncounted() -> None:
    cache = make_cache("lru", 1000)
    assert cache.get("a", 0.0, count_miss=False) is None
    assert cache.get("b", 0.0) is None
    cache.put("c", b"v", 1, 5.0, 0.0, "s")
    assert cache.get("c", 1.0, count_miss=False) == b"v"  # a hit is always counted
    stats = cache.stats()
    assert (stats["misses"], stats["hits"]) == (1, 1), stats


def test_a_client_key_never_equals_a_shared_key() -> None:
    shared = cache_key("srv", "tool", {"q": 1})
    mine, theirs = scoped_key(shared, "client-a"), scoped_key(shared, "client-b")
    assert len({shared, mine, theirs}) == 3
    assert mine == shared + "\x00client-a"  # the shared key plus the client part
