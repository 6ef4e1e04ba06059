"""A thread-safe TTL cache for hot, rarely changing lookups (token -> principal, agent's device ->
device class), which would otherwise cost a query on every lease and report.

``cachetools.TTLCache`` does the expiry and the size bound (least recently used goes first); it is
not thread-safe by itself, so every access holds a lock. ``load`` runs outside the lock: two threads
missing the same key at once both load it, which is harmless for these lookups."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import cachetools

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, ttl_s: float, max_items: int = 10_000) -> None:
        self._items: cachetools.TTLCache[Hashable, V] = cachetools.TTLCache(maxsize=max_items, ttl=ttl_s)
        self._lock = threading.Lock()

    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        """The cached value, or ``load()`` (not cached when it raises)."""
        with self._lock:
            try:
                return self._items[key]
            except KeyError:
                pass
        value = load()
        with self._lock:
            self._items[key] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
