"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from castframe.store.db import Database
from castframe.store.migrate import upgrade
from castframe.store.tables import metadata


def test_migrations_match_the_tables(database_url: str) -> None:
    db = Database(database_url)
    upgrade(db.engine)
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    db.dispose()
    assert differences == []


def test_upgrade_is_idempotent(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    upgrade(db.engine)
    upgrade(db.engine)
    db.dispose()
