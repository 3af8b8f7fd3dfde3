"""Job states and the transitions allowed between them (pure)."""

from __future__ import annotations

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"

ALL = (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
ACTIVE = frozenset({QUEUED, PROCESSING})

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({PROCESSING, CANCELLED, FAILED}),
    # Back to QUEUED: a retryable failure, or a drained worker giving the job back.
    PROCESSING: frozenset({COMPLETED, FAILED, CANCELLED, QUEUED, PROCESSING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def is_terminal(status: str) -> bool:
    return status in TERMINAL
