"""Wake-ups: tell idle workers (and the webhook sender) that there is new work.

Embedded mode shares one process, so a ``threading.Event`` is enough; a slow poll in each
loop is the safety net for anything a wake-up misses.
"""

from __future__ import annotations

import threading


class Notifier:
    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        if self._event.wait(timeout):
            self._event.clear()
