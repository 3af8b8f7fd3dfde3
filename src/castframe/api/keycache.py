"""An optional per-process cache of API-key lookups, for APIs under heavy load.

Every authenticated request otherwise reads the key and its account (one read transaction).
With ``CASTFRAME_KEY_CACHE_SECONDS`` > 0 a process reuses a successful lookup for that long:
a key revoked or deactivated elsewhere keeps working in this process for at most that many
seconds, and account limits changed elsewhere apply after it. Failed lookups are never cached,
so a new key works at once. Off (0) by default.
"""

from __future__ import annotations

import threading
import time

from castframe.jobs.accounts import Principal, hash_key

MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, raw_key: str) -> Principal | None:
        if self.seconds <= 0:
            return None
        digest = hash_key(raw_key)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, raw_key: str, principal: Principal) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()  # simple bound; lookups refill it
            self._entries[hash_key(raw_key)] = (time.monotonic() + self.seconds, principal)
