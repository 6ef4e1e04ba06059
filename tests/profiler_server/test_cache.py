"""The TTL cache in front of token and device lookups: hits, expiry, failed loads, size bound."""

from __future__ import annotations

import threading
import time

import pytest

from profiler_server.cache import TTLCache


def test_a_hit_does_not_load_again_until_the_entry_expires() -> None:
    cache: TTLCache[int] = TTLCache(ttl_s=0.2)
    loads = []
    assert cache.get_or_load("k", lambda: loads.append(1) or 1) == 1
    assert cache.get_or_load("k", lambda: loads.append(2) or 2) == 1
    assert loads == [1]
    time.sleep(0.25)
    assert cache.get_or_load("k", lambda: loads.append(3) or 3) == 3
    assert loads == [1, 3]


def test_a_load_that_raises_is_not_cached() -> None:
    cache: TTLCache[int] = TTLCache(ttl_s=60)

    def fail() -> int:
        raise LookupError("no such token")

    with pytest.raises(LookupError):
        cache.get_or_load("k", fail)
    assert cache.get_or_load("k", lambda: 7) == 7


def test_the_least_recently_used_entry_goes_first_when_full() -> None:
    cache: TTLCache[str] = TTLCache(ttl_s=60, max_items=2)
    cache.get_or_load("a", lambda: "a")
    cache.get_or_load("b", lambda: "b")
    cache.get_or_load("a", lambda: "reloaded")  # a is now the most recently used
    cache.get_or_load("c", lambda: "c")  # evicts b
    assert cache.get_or_load("a", lambda: "reloaded") == "a"
    assert cache.get_or_load("b", lambda: "reloaded") == "reloaded"


def test_clear_forgets_everything() -> None:
    cache: TTLCache[int] = TTLCache(ttl_s=60)
    cache.get_or_load("k", lambda: 1)
    cache.clear()
    assert cache.get_or_load("k", lambda: 2) == 2


def test_concurrent_threads_see_one_consistent_value() -> None:
    cache: TTLCache[int] = TTLCache(ttl_s=60, max_items=50)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(2000):
                key = (seed + i) % 100
                assert cache.get_or_load(key, lambda k=key: k * 10) == key * 10
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
