"""What sets each eviction policy apart, and how they compare on a skewed trace with scans."""

from __future__ import annotations

import itertools
import random

import pytest

from only1mcp.proxy.cache import LRUCache, ResponseCache, S3FIFOCache, SieveCache, make_cache
from only1mcp.traffic import CACHE_POLICIES

TTL = 3600.0


def fill(cache: ResponseCache, keys: str | list[str], size: int = 100, now: float = 0.0) -> None:
    for key in keys:
        cache.put(key, key.upper(), size, TTL, now, "s")


def survivors(cache: ResponseCache, keys: str | list[str]) -> set[str]:
    return {key for key in keys if cache.get(key, 0.0) is not None}


def request(cache: ResponseCache, key: str, size: int = 100) -> bool:
    """What the proxy does per safe call: look up, and on a miss store the fresh result."""
    if cache.get(key, 0.0) is not None:
        return True
    cache.put(key, key.upper(), size, TTL, 0.0, "s")
    return False


# -- LRU ---------------------------------------------------------------------------------

def test_lru_evicts_the_least_recently_used() -> None:
    cache = make_cache("lru", 300)
    fill(cache, "abc")
    assert cache.get("a", 0) == "A"  # b is now the least recent
    fill(cache, "d")
    assert cache.get("c", 0) == "C"  # a is now the least recent
    fill(cache, "e")
    assert survivors(cache, "abcde") == {"c", "d", "e"}


# -- S3-FIFO -----------------------------------------------------------------------------

HOT = [f"hot{i}" for i in range(5)]


def hot_set_then_scan(policy: str) -> ResponseCache:
    cache = make_cache(policy, 10_000)  # 100 entries of 100 bytes
    for _ in range(3):
        for key in HOT:
            request(cache, key)
    for i in range(500):  # a one-time scan five times the cache
        assert not request(cache, f"scan{i}")
    return cache


def test_s3fifo_is_scan_resistant() -> None:
    cache = hot_set_then_scan("s3fifo")
    assert survivors(cache, HOT) == set(HOT)
    assert cache.stats()["evictions"] == 405  # only scan keys were evicted
    assert hot_set_then_scan("lru").get(HOT[0], 0) is None  # whereas LRU lost the hot set


def test_s3fifo_admits_keys_found_in_the_ghost_queue_straight_to_main() -> None:
    cache = make_cache("s3fifo", 1_000)
    assert isinstance(cache, S3FIFOCache)
    assert not request(cache, "k")
    for i in range(10):  # k is evicted from the small queue unused; its key goes to the ghost queue
        request(cache, f"once{i}")
    assert "k" in cache._ghost and cache.get("k", 0) is None
    assert not request(cache, "k")  # re-requested soon after: evicted too early, so into main
    assert "k" in cache._main and "k" not in cache._ghost
    request(cache, "fresh")  # a key never seen before goes to the small queue
    assert "fresh" in cache._small
    for i in range(50):
        request(cache, f"scan{i}")
    assert cache.get("fresh", 0) is None
    assert cache.get("k", 0) == "K"  # never hit since, but safe in main from the scan


def test_s3fifo_ghosts_of_an_invalidated_server_are_forgotten() -> None:
    cache = make_cache("s3fifo", 1_000)
    assert isinstance(cache, S3FIFOCache)
    cache.put("k", "v", 100, TTL, 0, "a")
    fill(cache, [f"once{i}" for i in range(10)])
    assert "k" in cache._ghost
    assert cache.invalidate("a") == 0  # nothing cached under "a", but the ghost goes too
    assert "k" not in cache._ghost


def test_s3fifo_frequency_is_capped_at_three_and_spent_in_main() -> None:
    cache = make_cache("s3fifo", 1_000)
    assert isinstance(cache, S3FIFOCache)
    fill(cache, "a")
    for _ in range(10):
        cache.get("a", 0)
    assert cache._small["a"].freq == 3
    fill(cache, [f"once{i}" for i in range(10)])  # a moves to main, its count cleared
    assert "a" in cache._main and cache._main["a"].freq == 0


# -- SIEVE -------------------------------------------------------------------------------

def test_sieve_keeps_visited_entries_past_the_hand() -> None:
    cache = make_cache("sieve", 400)
    fill(cache, "abcd")
    cache.get("a", 0)
    cache.get("c", 0)
    fill(cache, "e")  # the hand clears a's bit and stops at b
    fill(cache, "f")  # from where it stopped: clears c's bit, evicts d
    fill(cache, "g")  # goes on from there: the newcomer e, not a, though a's bit is clear
    fill(cache, "h")  # and f; a and c stay behind the hand, unmoved
    assert survivors(cache, "abcdefgh") == {"a", "c", "g", "h"}
    lru = make_cache("lru", 400)
    fill(lru, "abcd")
    lru.get("a", 0)
    lru.get("c", 0)
    fill(lru, "efgh")
    assert survivors(lru, "abcdefgh") == {"e", "f", "g", "h"}  # LRU let both hot keys go


def test_sieve_hand_survives_removals_from_the_middle() -> None:
    cache = make_cache("sieve", 300)
    assert isinstance(cache, SieveCache)
    fill(cache, "abc")
    cache.get("a", 0)
    fill(cache, "d")  # evicts b; the hand rests on c
    assert cache._hand is not None and cache._hand.key == "c"
    cache.put("c", "C2", 100, 1, 0, "s")  # replace c: the hand moves on to its newer neighbour
    assert cache._hand is not None and cache._hand.key == "d"
    assert cache.get("c", 5) is None  # expired and unlinked
    fill(cache, "ef")
    assert survivors(cache, "abcdef") == {"a", "e", "f"}


# -- all policies --------------------------------------------------------------------------

def queue_keys(cache: ResponseCache) -> list[str]:
    """The keys in the policy's own queues, checking their byte accounting on the way."""
    if isinstance(cache, LRUCache):
        return list(cache._order)
    if isinstance(cache, S3FIFOCache):
        assert cache._small_bytes == sum(e.size for e in cache._small.values())
        assert cache._main_bytes == sum(e.size for e in cache._main.values())
        assert cache._ghost_bytes == sum(size for size, _ in cache._ghost.values())
        assert not set(cache._ghost) & set(cache._entries)
        assert all(not e.in_main for e in cache._small.values()) and all(e.in_main for e in cache._main.values())
        return [*cache._small, *cache._main]
    assert isinstance(cache, SieveCache)
    keys, node = [], cache._oldest
    while node is not None:
        keys.append(node.key)
        node = node.newer
    assert cache._hand is None or cache._hand.key in keys
    return keys


@pytest.mark.parametrize("policy", CACHE_POLICIES)
def test_the_policy_queues_always_agree_with_the_index(policy: str) -> None:
    rng = random.Random(7)
    cache = make_cache(policy, 1_000)
    now = 0.0
    for _ in range(3_000):
        now += 0.1
        key, op = f"k{rng.randrange(40)}", rng.random()
        if op < 0.5:
            cache.put(key, 0, rng.randrange(1, 250), rng.uniform(0.5, 30), now, rng.choice("ab"))
        elif op < 0.97:
            cache.get(key, now)
        else:
            cache.invalidate(rng.choice("ab"))
        keys = queue_keys(cache)
        assert len(keys) == len(set(keys)) and set(keys) == set(cache._entries)
        assert cache.bytes_used == sum(e.size for e in cache._entries.values()) <= 1_000


def zipf_with_scans(seed: int = 7, requests: int = 20_000, catalog: int = 5_000) -> list[int]:
    """Zipf(1.0) over ``catalog`` keys, with a one-time scan of 600 new keys every 2,500 requests."""
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / rank for rank in range(1, catalog + 1)))
    fresh = itertools.count(catalog)
    trace: list[int] = []
    for i, key in enumerate(rng.choices(range(catalog), cum_weights=weights, k=requests)):
        if i and i % 2_500 == 0:
            trace.extend(next(fresh) for _ in range(600))
        trace.append(key)
    return trace


def test_s3fifo_and_sieve_hit_at_least_as_often_as_lru_on_zipf_with_scans() -> None:
    trace = zipf_with_scans()

    def size(key: int) -> int:
        return 200 + key * 7919 % 800  # 200..999 bytes, fixed per key

    budget = sum(size(key) for key in range(5_000)) // 20  # 5 % of the catalog
    ratios = {}
    for policy in CACHE_POLICIES:
        cache = make_cache(policy, budget)
        hits = sum(request(cache, str(key), size(key)) for key in trace)
        ratios[policy] = hits / len(trace)
    assert ratios["s3fifo"] >= ratios["lru"] and ratios["sieve"] >= ratios["lru"], ratios
    assert ratios["lru"] > 0.3  # a real workload, not a degenerate one
