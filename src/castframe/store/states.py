"""Job states and the transitions between them (pure): the one table the job store's SQL
guards are generated from (``tables.guard``), so what a write may do is written here and
nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"

ALL = (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
ACTIVE = frozenset({QUEUED, PROCESSING})


@dataclass(frozen=True)
class Transition:
    """A named move of a job: from any of ``sources`` to ``target``."""

    name: str
    sources: frozenset[str]
    target: str


CLAIM = Transition("claim", frozenset({QUEUED}), PROCESSING)
COMPLETE = Transition("complete", frozenset({PROCESSING}), COMPLETED)
FAIL = Transition("fail", frozenset({PROCESSING}), FAILED)
"""The engine failed, or its worker gave up on a non-retryable error."""
STOP_CANCELLED = Transition("stop a cancelled job", frozenset({PROCESSING}), CANCELLED)
"""The engine saw the cancellation its owner asked for."""
CANCEL_QUEUED = Transition("cancel a queued job", frozenset({QUEUED}), CANCELLED)
GIVE_UP = Transition("give up", ACTIVE, FAILED)
"""Its workers died ``max_attempts`` times (the job store's ``reap_abandoned``)."""
REQUEUE = Transition("requeue", frozenset({PROCESSING}), QUEUED)
"""A retryable failure, a drained worker giving the job back, or an expired lease."""

TRANSITIONS = (CLAIM, COMPLETE, FAIL, STOP_CANCELLED, CANCEL_QUEUED, GIVE_UP, REQUEUE)
ALLOWED: dict[str, frozenset[str]] = {
    status: frozenset(t.target for t in TRANSITIONS if status in t.sources) for status in ALL
}
"""Status -> the statuses it may move to (terminal ones: none)."""
