"""Per-key token buckets for submissions, and the ``RateLimit-*`` headers.

In-process: each API process keeps its own buckets, so N processes allow up to N times the
configured rate; put a shared limiter in front (or divide the rate) when scaling out.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def refill(tokens: float, elapsed: float, rate: float, burst: int) -> float:
    """Pure: tokens after ``elapsed`` seconds at ``rate`` per second, capped at ``burst``."""
    return min(float(burst), tokens + max(elapsed, 0.0) * rate)


def decide(tokens: float, rate: float, burst: int, take: bool) -> tuple[float, Decision]:
    """Pure: spend one token if asked and possible; the bucket's new level and the decision."""
    allowed = tokens >= 1.0
    if take and allowed:
        tokens -= 1.0
    missing = max(0.0, 1.0 - tokens)
    decision = Decision(
        allowed=allowed,
        limit=burst,
        remaining=math.floor(tokens),
        reset_seconds=math.ceil((burst - tokens) / rate),
        retry_after=max(1, math.ceil(missing / rate)) if not allowed else 0,
    )
    return tokens, decision


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(
        self, key_id: str, take: bool, rate: float | None = None, burst: int | None = None
    ) -> Decision:
        rate = rate or self.rate
        burst = burst or self.burst
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(burst), now))
            tokens, decision = decide(refill(tokens, now - last, rate, burst), rate, burst, take)
            self._buckets[key_id] = (tokens, now)
        return decision

    def give_back(self, key_id: str, burst: int | None = None) -> None:
        """Return a token taken for a request that turned out to cost nothing (a replay)."""
        burst = burst or self.burst
        with self._lock:
            found = self._buckets.get(key_id)
            if found is not None:
                self._buckets[key_id] = (min(float(burst), found[0] + 1.0), found[1])
