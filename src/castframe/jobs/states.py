"""Job states and the transitions allowed between them (pure)."""

from __future__ import annotations

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELED = "CANCELED"

ALL = (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELED})
ACTIVE = frozenset({QUEUED, PROCESSING})

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({PROCESSING, CANCELED, FAILED}),
    # Back to QUEUED: a retryable failure, or a drained worker giving the job back.
    PROCESSING: frozenset({COMPLETED, FAILED, CANCELED, QUEUED, PROCESSING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELED: frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def is_terminal(status: str) -> bool:
    return status in TERMINAL
