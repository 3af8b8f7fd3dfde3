"""Connections: one SQLAlchemy engine per process, tuned per dialect.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with
``BEGIN IMMEDIATE`` so that read-then-write transactions (balance checks, idempotency
records, queue claims) serialise instead of failing with "database is locked" on upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from castframe.store.notify import Wakeups, take_notices, take_published


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` (what operators paste) and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def create_db_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # No pre-ping (a round trip per checkout): connections broken by a database restart are
    # invalidated by SQLAlchemy on first use; recycling bounds their age.
    return sa.create_engine(url, pool_recycle=1800, pool_size=10, max_overflow=20)


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

    def dispose(self) -> None:
        self.engine.dispose()
