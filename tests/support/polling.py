"""Waiting for jobs, with a deadline, so a broken worker fails a test instead of hanging it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within the timeout")


def wait_for_job(
    get: Callable[[str], dict[str, Any]], job_id: str, timeout: float = 60.0
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = get(job_id)
        return job if job["status"] in TERMINAL else None

    result: dict[str, Any] = wait_until(done, timeout)
    return result


def eventually(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Until ``condition()`` holds (a condition, not a duration, is what is asserted)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
