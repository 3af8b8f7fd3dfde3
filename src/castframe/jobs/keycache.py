"""A per-process cache of API-key lookups.

Every authenticated request otherwise reads the key and its account (one read transaction,
about a tenth of a submission's cost). A process reuses a successful lookup for
``CASTFRAME_KEY_CACHE_SECONDS`` (by default 5 on PostgreSQL and off on SQLite, where nothing
would announce the CLI's changes), and forgets it sooner when the key or its account changes:
- in this process, at once (``accounts.key_generation`` moves on every change);
- in other processes on PostgreSQL, within milliseconds of the change's commit (the change
  announces itself on ``castframe_keys``; every API process listens and clears its cache);
- otherwise (SQLite with the CLI in another process, or a lost listener connection) after at
  most the TTL.
Failed lookups are never cached, so a new key works at once.
"""

from __future__ import annotations

import threading
import time

from castframe.jobs.accounts import Principal, hash_key, key_generation

MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[str, tuple[float, int, Principal]] = {}
        self._lock = threading.Lock()

    def generation(self) -> int:
        """Read before a lookup and pass to ``put``: a change during the lookup then voids it."""
        return key_generation()

    def get(self, raw_key: str) -> Principal | None:
        if self.seconds <= 0:
            return None
        digest = hash_key(raw_key)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            expires, generation, principal = entry
            if expires < time.monotonic() or generation != key_generation():
                del self._entries[digest]
                return None
            return principal

    def put(self, raw_key: str, principal: Principal, generation: int) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()  # simple bound; lookups refill it
            self._entries[hash_key(raw_key)] = (
                time.monotonic() + self.seconds,
                generation,
                principal,
            )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
