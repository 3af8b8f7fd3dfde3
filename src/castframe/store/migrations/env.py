"""Alembic environment: the engine is handed in by ``castframe.store.migrate``."""

from __future__ import annotations

from alembic import context

from castframe.store.tables import metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    if connection.dialect.name == "postgresql":
        # Many API machines may start at once; only one migrates at a time.
        connection.exec_driver_sql("SELECT pg_advisory_lock(7318201)")
        connection.commit()
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_unlock(7318201)")
        connection.commit()
