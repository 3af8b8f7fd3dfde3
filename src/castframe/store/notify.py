"""Wake-ups: tell idle workers (and webhook senders) that there is new work.

In one process a condition variable wakes one idle thread per announcement (waking all of
them would make every idle thread of every worker run a claim for each new job: a thundering
herd that costs more than the jobs). On PostgreSQL, writers also run
``pg_notify`` inside the transaction that creates the work (delivered at commit), and every
process listens on a dedicated connection, so a queued job is picked up within milliseconds by
a worker on another machine. A slow poll in each loop stays as the safety net for anything a
wake-up misses (a dropped listener connection, SQLite in several processes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

log = logging.getLogger("castframe.notify")

JOBS_CHANNEL = "castframe_jobs"
WEBHOOKS_CHANNEL = "castframe_webhooks"
KEYS_CHANNEL = "castframe_keys"
"""API keys or their accounts changed: API processes drop their cached key lookups."""


class Notifier:
    """Wake one waiting thread per ``notify``; ``notify_all`` wakes every one (shutdown).

    A wake-up sent while no thread waits is kept (one at most), so a thread that is about to
    wait after finding nothing still sees work announced a moment before.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._pending = False

    def notify(self) -> None:
        with self._condition:
            self._pending = True
            self._condition.notify()

    def notify_all(self) -> None:
        with self._condition:
            self._pending = True
            self._condition.notify_all()

    def wait(self, timeout: float) -> None:
        """Return on a wake-up (consuming it) or after ``timeout`` seconds."""
        with self._condition:
            if not self._pending:
                self._condition.wait(timeout)
            self._pending = False


def publish(conn: sa.Connection, channel: str) -> None:
    """Announce new work to other processes; a no-op on SQLite (one process polls)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"channel": channel})


_NOTIFY = sa.text("SELECT pg_notify(:channel, '')")


class PostgresListener:
    """``LISTEN`` on channels and call each channel's handler; reconnects forever.

    Every handler also runs once each time the connection is (re)established: whatever was
    announced while nobody listened is then treated as announced (a spurious wake-up, a cache
    dropped once), never as missed.
    """

    def __init__(self, dsn: str, routes: dict[str, Callable[[], None]]) -> None:
        self.dsn = dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        self.routes = routes
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="castframe-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(3)

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    for channel in self.routes:
                        conn.execute(f"LISTEN {channel}")
                    backoff = 0.5
                    for handler in self.routes.values():
                        handler()
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            routed = self.routes.get(note.channel)
                            if routed is not None:
                                routed()
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
