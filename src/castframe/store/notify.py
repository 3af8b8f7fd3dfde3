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

Some channels also say *which* objects changed: ``publish_ids(conn, channel, ids)`` collects
ids in the transaction, and after the commit ``Wakeups`` hands them to the channel's id
subscribers (``subscribe_ids``); plain subscribers of the channel are woken as for
``publish``. Ids cost no statement inside the transaction: on PostgreSQL a
``NoticeAnnouncer`` (itself an id subscriber) sends them to other processes after the commit,
one ``NOTIFY`` for everything its process committed in the last few milliseconds, so the
worker's hot transactions carry no extra round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import sqlalchemy as sa

log = logging.getLogger("castframe.notify")

JOBS_CHANNEL = "castframe_jobs"
WEBHOOKS_CHANNEL = "castframe_webhooks"
KEYS_CHANNEL = "castframe_keys"
"""API keys or their accounts changed: API processes drop their cached key lookups."""
JOB_CHANGES_CHANNEL = "castframe_job_changes"
"""Jobs whose status or progress changed, by id: live status (SSE, ``Prefer: wait``)."""
ANY = "*"
"""An id that stands for every object of its channel (a change whose ids are unknown, or a
listener that reconnected and may have missed some)."""
NOTIFY_PAYLOAD_LIMIT = 7900
"""Bytes of one NOTIFY payload (PostgreSQL refuses 8000 and more)."""


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

NOTICES = "castframe_notices"
"""Key of ``Connection.info`` where a transaction collects the ids it published, by channel."""


def publish_ids(conn: sa.Connection, channel: str, ids: Iterable[str]) -> None:
    """Announce, at this transaction's commit, that these objects of ``channel`` changed.

    No statement runs here (a set update: this sits on the worker's hot path); after the
    commit ``Database.write`` hands the ids to this process's id subscribers, among them, on
    PostgreSQL, the ``NoticeAnnouncer`` that tells other processes."""
    notices: dict[str, set[str]] = conn.info.setdefault(NOTICES, {})
    notices.setdefault(channel, set()).update(ids)


def take_notices(conn: sa.Connection) -> dict[str, set[str]]:
    """The ids this transaction published, by channel, forgotten by the connection."""
    notices: dict[str, set[str]] = conn.info.pop(NOTICES, {})
    return notices


class Wakeups:
    """This process's subscribers of each channel, called after a commit that published it."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._id_subscribers: dict[str, list[Callable[[frozenset[str]], None]]] = {}

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        self._subscribers.setdefault(channel, []).append(callback)

    def subscribe_ids(self, channel: str, callback: Callable[[frozenset[str]], None]) -> None:
        """``callback(ids)`` after each commit that published ids on ``channel``."""
        self._id_subscribers.setdefault(channel, []).append(callback)

    def fire(self, channels: set[str], notices: dict[str, set[str]] | None = None) -> None:
        """Call each subscriber; one that fails is logged, never raised: the transaction has
        committed, and its caller must not take the failure for its own. A channel with ids
        wakes its plain subscribers too."""
        notices = notices or {}
        for channel in channels | notices.keys():
            for callback in self._subscribers.get(channel, ()):
                try:
                    callback()
                except Exception:
                    log.exception("a wake-up subscriber of %s failed", channel)
        for channel, ids in notices.items():
            if not ids:
                continue
            frozen = frozenset(ids)
            for id_callback in self._id_subscribers.get(channel, ()):
                try:
                    id_callback(frozen)
                except Exception:
                    log.exception("a wake-up subscriber of %s failed", channel)


def payloads(ids: Iterable[str], limit: int = NOTIFY_PAYLOAD_LIMIT) -> Iterator[str]:
    """Comma-joined ids in payloads of at most ``limit`` bytes (``ANY`` alone if among them).

    Ids longer than ``limit`` cannot be sent and are left out."""
    ids = set(ids)
    if ANY in ids:
        yield ANY
        return
    chunk: list[str] = []
    size = 0
    for item in sorted(ids):
        length = len(item.encode())
        if length > limit:
            continue
        if chunk and size + 1 + length > limit:
            yield ",".join(chunk)
            chunk, size = [], 0
        size += length + (1 if chunk else 0)
        chunk.append(item)
    if chunk:
        yield ",".join(chunk)


class NoticeAnnouncer:
    """Tells other processes, through PostgreSQL NOTIFY, which ids this process committed.

    Subscribed to ``Wakeups`` (so it hears only committed changes), it gathers the ids of
    ``window`` seconds and sends them from its own connection as one NOTIFY per payload: a
    busy worker's hundred transactions a second cost a few notifications, not a statement in
    each transaction. Best effort by design: a notice lost to a crash or a broken connection
    is caught by the listeners' slow re-read (jobs/watch.py). Its connection's backend pid is
    ``pid``, so this process's own listener can skip what it already knows.
    """

    def __init__(self, dsn: str, channel: str, window: float = 0.01) -> None:
        self.dsn = dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        self.channel = channel
        self.window = window
        self.pid: int | None = None
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, ids: Iterable[str]) -> None:
        """Queue ids to announce (any thread; never blocks on the database)."""
        with self._lock:
            self._pending.update(ids)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="castframe-announce", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """Send what is pending (within a moment) and stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(3)

    def _take(self) -> set[str]:
        with self._lock:
            pending, self._pending = self._pending, set()
        return pending

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while True:
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    self.pid = conn.info.backend_pid
                    backoff = 0.5
                    while True:
                        self._wake.wait(1.0)
                        if self._stopping.is_set() and not self._pending:
                            return
                        self._wake.clear()
                        if not self._stopping.is_set():
                            time.sleep(self.window)  # gather what commits meanwhile
                        for payload in payloads(self._take()):
                            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except Exception as exc:
                self.pid = None
                self._take()  # dropped: the listeners' re-read covers them
                if self._stopping.is_set():
                    return
                log.warning("NOTIFY connection lost (%s); reconnecting in %.1fs", exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)


class PostgresListener:
    """``LISTEN`` on channels and call each channel's handler; reconnects forever.

    Every handler also runs once each time the connection is (re)established: whatever was
    announced while nobody listened is then treated as announced (a spurious wake-up, a cache
    dropped once), never as missed. ``payload_routes`` handlers get each notification's
    payload and the sender's backend pid (``ANY`` and 0 on a (re)connect).
    """

    def __init__(
        self,
        dsn: str,
        routes: dict[str, Callable[[], None]],
        payload_routes: dict[str, Callable[[str, int], None]] | None = None,
    ) -> None:
        self.dsn = dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        self.routes = routes
        self.payload_routes = payload_routes or {}
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
                    for channel in {*self.routes, *self.payload_routes}:
                        conn.execute(f"LISTEN {channel}")
                    backoff = 0.5
                    for handler in self.routes.values():
                        handler()
                    for payload_handler in self.payload_routes.values():
                        payload_handler(ANY, 0)
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            routed = self.routes.get(note.channel)
                            if routed is not None:
                                routed()
                            with_payload = self.payload_routes.get(note.channel)
                            if with_payload is not None:
                                with_payload(note.payload, note.pid)
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
