"""The queue of storage keys whose files must be deleted (the ``file_deletions`` table).

Deciding that a file goes (a job expired, an upload row deleted) is a database write; deleting
the file is storage I/O, which must not run inside a transaction. So the decision writes the
key here in its own transaction, and the retention sweeper later takes keys with a lease
(``claim``), deletes their files outside any transaction and then ``forget``s them. A crash
in between leaves the key queued: once its lease runs out another pass deletes the file again
(storage deletes of a missing key succeed) and forgets it. Two sweepers never take the same
key at once (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock serialises).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from castframe.store.tables import file_deletions

LEASE_SECONDS = 600.0
"""How long a claimed key is left to its sweeper before another pass may take it again."""


def enqueue(conn: sa.Connection, keys: Iterable[str], now: float) -> None:
    """Queue these keys for deletion (a key already queued stays as it is)."""
    rows = [
        {"key": key, "due_at": now, "attempts": 0, "created_at": now} for key in sorted(set(keys))
    ]
    if rows:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(file_deletions).on_conflict_do_nothing(index_elements=["key"])
        conn.execute(statement, rows)


def claim(conn: sa.Connection, now: float, limit: int) -> list[str]:
    """Take up to ``limit`` due keys, oldest first, leased for ``LEASE_SECONDS``."""
    pick = (
        sa.select(file_deletions.c.key)
        .where(file_deletions.c.due_at <= now)
        .order_by(file_deletions.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    keys = [str(key) for key in conn.execute(pick).scalars()]
    if keys:
        conn.execute(
            file_deletions.update()
            .where(file_deletions.c.key.in_(keys))
            .values(due_at=now + LEASE_SECONDS, attempts=file_deletions.c.attempts + 1)
        )
    return keys


def forget(conn: sa.Connection, keys: Iterable[str]) -> None:
    """The files of these keys are gone: drop them from the queue."""
    done = sorted(set(keys))
    if done:
        conn.execute(file_deletions.delete().where(file_deletions.c.key.in_(done)))


def pending(conn: sa.Connection) -> int:
    """Keys still queued (what ``/metrics`` or an operator may watch)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(file_deletions)).scalar() or 0)
