"""Group commit: many threads' small writes share one transaction.

Under load, a job's own work in the database is a handful of tiny statements; the transaction
around them (begin, commit, the round trips, the wake-up announcement) costs as much again.
``GroupCommit`` lets the threads that are waiting to write at the same moment share one: the
first caller to find no flush in progress becomes the leader and writes everything queued so
far through ``write_batch``; the others wait for their own results. By default nothing waits
for a batch to fill, so a lone caller is written at once (latency is unchanged when idle) and
batches grow only as far as callers actually overlap.

A caller that knows more writers are on their way (the worker's other busy slots) can pass
``siblings`` and ``linger``: the leader then waits up to ``linger`` seconds for as many items
as there are siblings, like PostgreSQL's ``commit_delay``/``commit_siblings``. Busy slots
that finish at almost the same moment then share one transaction instead of one each.

``write_batch`` returns one outcome per item: a value, or an exception that belongs to that
item alone (a refused submission). If the batch itself fails (the transaction raised), every
item is written again on its own through ``write_one``, so one poisoned item can neither fail
its neighbours nor be silently lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("castframe.group_commit")

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiter(Generic[Item]):
    item: Item
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when the outcome is in, or when this waiter is chosen to lead the next batch."""
    done: bool = False
    value: object = None
    error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        write_batch: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
        write_one: Callable[[Item], Result],
        max_batch: int = 64,
        siblings: Callable[[], int] | None = None,
        linger: float = 0.0,
    ) -> None:
        self._write_batch = write_batch
        self._write_one = write_one
        self._max_batch = max_batch
        self._siblings = siblings
        """How many items are expected soon, counting those queued (None: never wait)."""
        self._linger = linger
        self._lock = threading.Condition()
        self._queued: list[_Waiter[Item]] = []
        self._flushing = False
        """A leader is writing; while it is, new callers queue. False implies an empty queue."""
        self.batches = 0
        """Batches written so far (for tests and metrics)."""

    def submit(self, item: Item) -> Result:
        """Write ``item`` (with whatever else is waiting) and return its result, or raise."""
        waiter = _Waiter(item)
        with self._lock:
            self._queued.append(waiter)
            lead = not self._flushing
            self._flushing = True
            self._lock.notify_all()  # a lingering leader counts arrivals
        if not lead:
            waiter.wake.wait()
        if not waiter.done:  # leading: this waiter is at the head of the queue
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.value  # type: ignore[return-value]

    def _lead(self) -> None:
        """Write one batch from the head of the queue, then hand leadership to the next
        waiter in line (if any): each waiter is woken once, with its outcome or to lead."""
        with self._lock:
            self._wait_for_siblings()
            batch = self._queued[: self._max_batch]
            del self._queued[: self._max_batch]
        try:
            self._flush(batch)
        finally:
            with self._lock:
                following = self._queued[0] if self._queued else None
                self._flushing = following is not None
            for waiter in batch:
                if not waiter.done:  # only if the flush itself was interrupted
                    waiter.error, waiter.done = RuntimeError("the batch was interrupted"), True
                waiter.wake.set()
            if following is not None:
                following.wake.set()

    def _wait_for_siblings(self) -> None:
        """Up to ``linger`` seconds, until the queue holds every sibling's item (or a full
        batch). Called with the lock held; waiting releases it."""
        if self._siblings is None or self._linger <= 0:
            return
        deadline = time.monotonic() + self._linger
        while len(self._queued) < min(self._max_batch, self._siblings()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._lock.wait(remaining)

    def write(self, items: Sequence[Item]) -> list[Result | BaseException]:
        """Write these items as one batch now (falling back to one by one if the batch
        fails); one outcome each. For callers that gather batches themselves (an event loop)."""
        self.batches += 1
        try:
            outcomes = list(self._write_batch(items))
            if len(outcomes) != len(items):
                raise RuntimeError("write_batch returned the wrong number of outcomes")
            return outcomes
        except Exception:
            log.exception("a batch of %d failed; writing each on its own", len(items))
            return [self._write_alone(item) for item in items]

    def _flush(self, batch: list[_Waiter[Item]]) -> None:
        outcomes = self.write([waiter.item for waiter in batch])
        for waiter, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiter.error = outcome
            else:
                waiter.value = outcome
            waiter.done = True

    def _write_alone(self, item: Item) -> Result | BaseException:
        try:
            return self._write_one(item)
        except Exception as exc:  # the item's own failure goes back to its own caller
            return exc
