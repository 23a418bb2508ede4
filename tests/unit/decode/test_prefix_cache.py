"""The prefix cache's bookkeeping: longest common prefix, LRU eviction under the byte budget,
entries a longer prompt extends dropped."""

from __future__ import annotations

from toolwire.services.decode.prefix_cache import PrefixCache, common_prefix


def test_common_prefix_finds_the_first_difference():
    a = list(range(1000))
    for n in (0, 1, 7, 500, 999):
        b = a[:n] + [-1] + a[n + 1 :]
        assert common_prefix(a, b) == n
    assert common_prefix(a, a[:300]) == 300
    assert common_prefix([], a) == 0


def test_lookup_returns_the_longest_match():
    cache = PrefixCache(1000)
    cache.insert([1, 2, 3, 4], "short", 10)
    cache.insert([1, 2, 9, 9, 9], "other", 10)
    entry, n = cache.lookup([1, 2, 3, 4, 5])
    assert (entry.kv, n) == ("short", 4)
    entry, n = cache.lookup([7])
    assert entry is None and n == 0


def test_least_recently_used_goes_first_within_the_budget():
    cache = PrefixCache(30)
    cache.insert([1], "a", 10)
    cache.insert([2], "b", 10)
    cache.insert([3], "c", 10)
    cache.lookup([1, 5])  # a is now the most recent
    cache.insert([4], "d", 10)
    assert sorted(e.kv for e in cache.entries.values()) == ["a", "c", "d"]
    assert cache.used == 30
    cache.insert([5], "too big", 31)  # larger than the whole budget: not kept
    assert cache.used == 30 and len(cache) == 3


def test_an_extending_prompt_replaces_its_prefix():
    cache = PrefixCache(100)
    cache.insert([1, 2, 3], "turn1", 10)
    cache.insert([1, 2, 3, 4, 5], "turn2", 20)
    assert [e.kv for e in cache.entries.values()] == ["turn2"] and cache.used == 20
    assert cache.covers([1, 2, 3]) and not cache.covers([1, 2, 4])
