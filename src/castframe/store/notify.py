"""Wake-ups: tell idle workers (and webhook senders, and key caches) that something changed.

A writer says what its transaction touched with ``publish(conn, channel)``, once, where it
writes; the transaction itself does the rest, so no caller can forget half of it:
- on PostgreSQL ``pg_notify`` runs inside the transaction (delivered to every listening
  process at commit, so a worker on another machine picks a job up within milliseconds);
- after the commit, ``Database.write`` fires this process's subscribers of each channel
  (``Wakeups``), once per transaction; a rolled-back transaction wakes nobody.

In one process a condition variable (``Notifier``) wakes one idle thread per announcement
(waking all of them would make every idle thread of every worker run a claim for each new
job: a thundering herd that costs more than the jobs). A slow poll in each loop stays as the
safety net for anything a wake-up misses (a dropped listener connection, SQLite in several
processes).
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


PUBLISHED = "castframe_published"
"""Key of ``Connection.info`` where a transaction collects the channels it published."""


def publish(conn: sa.Connection, channel: str) -> None:
    """Announce, at this transaction's commit, that ``channel``'s work changed: to other
    processes (PostgreSQL NOTIFY) and to this one's subscribers (``Wakeups``, fired by
    ``Database.write``). Once per channel per transaction, however often it is called."""
    published: set[str] = conn.info.setdefault(PUBLISHED, set())
    if channel in published:
        return
    published.add(channel)
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"channel": channel})


def take_published(conn: sa.Connection) -> set[str]:
    """The channels this transaction published, forgotten by the connection (which the pool
    hands to the next transaction)."""
    published: set[str] = conn.info.pop(PUBLISHED, set())
    return published


_NOTIFY = sa.text("SELECT pg_notify(:channel, '')")


class Wakeups:
    """This process's subscribers of each channel, called after a commit that published it."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[], None]]] = {}

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        self._subscribers.setdefault(channel, []).append(callback)

    def fire(self, channels: set[str]) -> None:
        """Call each subscriber; one that fails is logged, never raised: the transaction has
        committed, and its caller must not take the failure for its own."""
        for channel in channels:
            for callback in self._subscribers.get(channel, ()):
                try:
                    callback()
                except Exception:
                    log.exception("a wake-up subscriber of %s failed", channel)


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
