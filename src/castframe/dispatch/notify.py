"""Wake-ups: tell idle workers (and webhook senders) that there is new work.

In one process a ``threading.Event`` is enough. On PostgreSQL, writers also run
``pg_notify`` inside the transaction that creates the work (delivered at commit), and every
process listens on a dedicated connection, so a queued job is picked up within milliseconds by
a worker on another machine. A slow poll in each loop stays as the safety net for anything a
wake-up misses (a dropped listener connection, SQLite in several processes).
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

log = logging.getLogger("castframe.notify")

JOBS_CHANNEL = "castframe_jobs"
WEBHOOKS_CHANNEL = "castframe_webhooks"


class Notifier:
    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        if self._event.wait(timeout):
            self._event.clear()


def publish(conn: sa.Connection, channel: str) -> None:
    """Announce new work to other processes; a no-op on SQLite (one process polls)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": channel})


class PostgresListener:
    """``LISTEN`` on channels and turn notifications into local wake-ups; reconnects forever."""

    def __init__(self, dsn: str, routes: dict[str, Notifier]) -> None:
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
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            notifier = self.routes.get(note.channel)
                            if notifier:
                                notifier.notify()
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
