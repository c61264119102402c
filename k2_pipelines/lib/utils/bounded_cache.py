"""A thread-safe cache of immutable things (Iceberg files never change once written), bounded by a count of entries
or by their total weight (say, the items they hold): when full it starts again, which is simple and, for what is
cached here, cheap to refill."""

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class BoundedCache(Generic[Value]):
    def __init__(self, max_entries: int, weight: Callable[[Value], int] = lambda _: 1):
        self._max_entries, self._weight, self._total = max_entries, weight, 0
        self._entries: dict[Hashable, Value] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        return self._entries.get(key)

    def put_all(self, entries: dict[Hashable, Value]) -> None:
        added = sum(map(self._weight, entries.values()))
        with self._lock:
            if self._total + added > self._max_entries:
                self._entries.clear()
                self._total = 0
            self._entries.update(entries)
            self._total += added

    def get_or_make(self, key: Hashable, make: Callable[[], Value]) -> Value:
        """The cached value, else make() (outside the lock: two threads may both make it; either result is right)."""
        value = self._entries.get(key)
        if value is None:
            value = make()
            self.put_all({key: value})
        return value
