"""A thread-safe least-recently-used cache bounded in bytes, not in entries.

Counting entries bounds nothing when entries differ in size by four orders of magnitude: a
16-entry cache of decoded images held 16 thumbnails or 16 x 108 MB (6000x6000 RGB). Every
cache of images, arrays or descriptors in Castframe is one of these, with its budget in
bytes (docs/operations.md, "Memory ceiling", adds them up). An entry larger than the whole
budget is not kept at all, so a single huge input can never evict everything and still stay.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def nbytes_of(*parts: object) -> int:
    """The bytes held by arrays, bytes and strings among ``parts`` (others count 64)."""
    total = 0
    for part in parts:
        if isinstance(part, np.ndarray):
            total += int(part.nbytes)
        elif isinstance(part, bytes | bytearray | memoryview | str):
            total += len(part)
        else:
            total += 64
    return total


class ByteLRU(Generic[K, V]):
    """At most ``max_bytes`` of values (as ``size_of`` counts them), least recently used
    dropped first. ``max_bytes`` 0 disables the cache (every ``put`` is dropped)."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: K, value: V) -> bool:
        """Keep ``value``; False when it alone is over the budget (then it is not kept)."""
        size = max(0, int(self._size_of(value)))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return False
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _key, (_value, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
            return True

    def discard(self, key: K) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def discard_where(self, predicate: Callable[[K], bool]) -> int:
        """Drop every entry whose key matches (a deleted upload's decoded images)."""
        with self._lock:
            doomed = [key for key in self._items if predicate(key)]
            for key in doomed:
                self._bytes -= self._items.pop(key)[1]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items
