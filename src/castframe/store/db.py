"""Connections: one SQLAlchemy engine per process, tuned per dialect.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with
``BEGIN IMMEDIATE`` so that read-then-write transactions (balance checks, idempotency
records, queue claims) serialise instead of failing with "database is locked" on upgrade.
"""

from __future__ import annotations

import logging
import math
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from castframe.store.notify import Wakeups, take_notices, take_published

log = logging.getLogger("castframe.db")

T = TypeVar("T")

RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 2.0


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` (what operators paste) and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


TRANSIENT_SQLSTATE_CLASSES = ("08", "53")
"""PostgreSQL error classes of the server, not the statement: connection exceptions and
insufficient resources (disk full, out of memory, too many connections)."""
TRANSIENT_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: the backend was terminated (pg_terminate_backend, restart)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up, or in recovery
        "40001",  # serialization_failure: the transaction may simply be run again
        "40P01",  # deadlock_detected: likewise
        "55000",  # object_not_in_prerequisite_state: "not currently accepting connections"
    }
)
TRANSIENT_SQLITE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def is_transient(exc: BaseException) -> bool:
    """A failure of the database rather than of the statement: refused, dropped or not
    accepting connections, a server shutting down, out of space, a pool timeout, SQLite busy.

    The API answers these with 503 ``not_ready`` (507 when out of space); the worker retries
    the transaction. Anything else, a missing table or column, a syntax error or a constraint,
    would fail the same way again: not retried, so a worker deployed before its migration fails
    loudly instead of retrying forever. Decided by the driver's error code, because both
    drivers raise ``OperationalError`` for either kind.
    """
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in TRANSIENT_SQLITE_CODES
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None:
        # psycopg's own errors, with no server code: a connection that could not be made
        # or was lost ("connection refused", "server closed the connection unexpectedly").
        return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES


POSTGRES_DISK_FULL = "53100"


def is_database_full(exc: BaseException) -> bool:
    """Whether the database refused a write for lack of space: SQLite's SQLITE_FULL (its file
    system, or ``max_page_count``) or PostgreSQL's disk_full. Transient to the worker, which
    retries until space is freed; a 507 to an API client, not an outage to retry in seconds."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    return getattr(orig, "sqlstate", None) == POSTGRES_DISK_FULL


def create_db_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    engine = sa.create_engine(url, pool_recycle=1800, pool_size=10, max_overflow=20)
    event.listen(engine, "checkout", _refuse_dead_connection)
    return engine


def _refuse_dead_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pre-ping without the round trip: an idle pooled connection has nothing to read.

    A server that terminated the backend (``pg_terminate_backend``, a restart, an idle
    timeout) sends its FATAL message and closes the socket, so the socket of a dead idle
    connection is readable. ``poll`` with a zero timeout sees that in a system call (about a
    microsecond, where ``pool_pre_ping``'s ``SELECT 1`` costs a round trip on every
    checkout). Raising ``DisconnectionError`` makes the pool drop the connection and check
    out another. A silently vanished peer (no FIN) is not detected here; the retries of the
    worker and the API's 503 cover it, and ``pool_recycle`` bounds a connection's age.
    """
    if dbapi_connection.closed:
        raise sa_exc.DisconnectionError("connection closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        raise sa_exc.DisconnectionError("the server closed the idle connection")


def _sqlite_engine(url: str) -> Engine:
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        readonly = connection.get_execution_options().get("castframe_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows: one as a plain INSERT, several through the driver's executemany (one
    round trip on psycopg's pipeline; a multi-row ``VALUES`` would be compiled per row count)."""
    if len(rows) == 1:
        conn.execute(table.insert(), rows[0])
    elif rows:
        conn.execute(table.insert(), list(rows))


def is_postgres(engine_or_conn: Engine | sa.Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


class Database:
    """The process's engine with two kinds of transaction: ``write()`` and ``read()``.

    On SQLite a write transaction takes the write lock up front (``BEGIN IMMEDIATE``) and a
    read transaction does not, so polling readers never queue behind writers under WAL.
    A write transaction that committed wakes this process's subscribers of the channels it
    published (store/notify.py).
    """

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = create_db_engine(self.url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.wakeups = Wakeups()
        self.outage_seen_at = -math.inf
        """``time.monotonic()`` when a transient failure was last seen (``note_outage``)."""

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        published: set[str] = set()
        notices: dict[str, set[str]] = {}
        with self.engine.begin() as connection:
            try:
                yield connection
            finally:
                # An invalidated connection (the database went away) has no info to read,
                # and the transaction will not commit: nothing to announce.
                if not connection.invalidated:
                    published = take_published(connection)
                    notices = take_notices(connection)
        self.wakeups.fire(published, notices)  # reached only once the transaction has committed

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            connection = connection.execution_options(castframe_readonly=True)
            with connection.begin():
                yield connection

    def retry_write(
        self,
        work: Callable[[sa.Connection], T],
        what: str,
        give_up: threading.Event | None = None,
    ) -> T:
        """``work(conn)`` in a write transaction, run again after transient failures.

        For the worker's own writes (progress, leases, completions, failures): the database
        blinking must delay them, never lose them or fail the job. The transaction is rolled
        back on failure, so running ``work`` again is safe; if a commit succeeded but its
        acknowledgement was lost, the next run finds the job already moved, and the store's
        guards (``lease_owner``, the transition's source states) make it a no-op, never a
        second charge. Retries back off from 50 ms to 2 s, until ``give_up`` is set.
        """

        def attempt() -> T:
            with self.write() as conn:
                return work(conn)

        return self.retry(attempt, what, give_up)

    def retry_read(
        self,
        work: Callable[[sa.Connection], T],
        what: str,
        give_up: threading.Event | None = None,
    ) -> T:
        """``work(conn)`` in a read transaction, run again after transient failures."""

        def attempt() -> T:
            with self.read() as conn:
                return work(conn)

        return self.retry(attempt, what, give_up)

    def retry(
        self, attempt: Callable[[], T], what: str, give_up: threading.Event | None = None
    ) -> T:
        """``retry_transient``, noting each failure as an outage of this database."""
        return retry_transient(attempt, what, give_up, on_failure=self.note_outage)

    def note_outage(self) -> None:
        """Remember that the database just failed transiently. The worker waits a lease period
        after an outage before requeueing expired leases: the live workers' heartbeats could
        not renew theirs while the database was away."""
        self.outage_seen_at = time.monotonic()

    def seconds_since_outage(self) -> float:
        return time.monotonic() - self.outage_seen_at

    def dispose(self) -> None:
        self.engine.dispose()


def retry_transient(
    attempt: Callable[[], T],
    what: str,
    give_up: threading.Event | None = None,
    on_failure: Callable[[], None] | None = None,
) -> T:
    """``attempt()``, again after each transient database failure (``is_transient``), with
    exponential backoff; the last failure is raised once ``give_up`` is set. A run of
    failures is logged once as it starts and once when it ends, not per retry."""
    delay = RETRY_FIRST_DELAY
    failures = 0
    while True:
        try:
            value = attempt()
        except Exception as exc:
            if not is_transient(exc) or (give_up is not None and give_up.is_set()):
                raise
            failures += 1
            if on_failure is not None:
                on_failure()
            if failures == 1:
                log.warning("%s: database unavailable (%s); retrying", what, _first_line(exc))
            if give_up is not None:
                give_up.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
            continue
        if failures:
            log.info("%s: succeeded after %d retries", what, failures)
        return value


def _first_line(exc: BaseException) -> str:
    """An error's first line: SQLAlchemy appends the statement and parameters below it."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
