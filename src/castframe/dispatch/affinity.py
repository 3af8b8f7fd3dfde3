"""Model affinity: a lane's claims prefer the model it has loaded, within a bound.

A lane that serves several models from one device pays a load (seconds) each time it
switches. Claiming in plain queue order on a mixed queue switches on most jobs. So a lane
prefers jobs of the models it has (``ModelHost.resident_models``, engines/residency.py) and
of the model it switched to last, and takes other models' jobs only when none of those are
due.

The starvation bound: a lane prefers its model for at most ``CASTFRAME_WORKER_AFFINITY_SECONDS``
(``bound``) after switching to it. After that it claims in plain fair-queue order, so the job
at the head of the queue, whatever its model, is the next one the lane claims; the lane
switches to it, and a new period starts. A job of another model at the head of the queue
therefore waits at most ``bound``, plus the jobs the lane already holds (the one on its
engine and the one prepared: ``PREPARED_PER_LANE``), plus one load. While nothing else is
due, a lane keeps its model however long (no switch is needed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection


class Affinity:
    """One lane's preference: the model it switched to last, and since when."""

    def __init__(self, bound: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound
        self.clock = clock
        self.model: str | None = None
        self.since = 0.0
        self._lock = threading.Lock()

    def preferred(self, resident: Collection[str]) -> list[str]:
        """The models whose jobs the next claim takes first ([]: plain queue order)."""
        with self._lock:
            if self.bound <= 0 or self.clock() - self.since >= self.bound:
                return []
            models = set(resident)
            if self.model is not None:
                models.add(self.model)
            return sorted(models)

    def took(self, model: str) -> bool:
        """The lane took a job of ``model`` (in the order it will run them); True when that
        is a switch, which starts a new period."""
        with self._lock:
            if model == self.model:
                return False
            self.model = model
            self.since = self.clock()
            return True
