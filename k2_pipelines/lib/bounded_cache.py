"""A thread-safe cache of immutable things (Iceberg files never change once written), bounded by a count of entries:
when full it starts again, which is simple and, for what is cached here, cheap to refill."""

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class BoundedCache(Generic[Value]):
    def __init__(self, max_entries: int):
        self._max_entries = max_entries
        self._entries: dict[Hashable, Value] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        return self._entries.get(key)

    def put_all(self, entries: dict[Hashable, Value]) -> None:
        with self._lock:
            if len(self._entries) + len(entries) > self._max_entries:
                self._entries.clear()
            self._entries.update(entries)

    def get_or_make(self, key: Hashable, make: Callable[[], Value]) -> Value:
        """The cached value, else make() (outside the lock: two threads may both make it; either result is right)."""
        value = self._entries.get(key)
        if value is None:
            value = make()
            self.put_all({key: value})
        return value
