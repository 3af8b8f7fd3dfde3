"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from castframe.jobs import admission, ledger
from castframe.store.db import Database
from castframe.store.migrate import alembic_config, upgrade
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


def test_account_totals_are_backfilled_from_the_ledger_and_jobs(database_url: str) -> None:
    """Upgrading a database that predates the running totals computes them from history."""
    db = Database(database_url)
    upgrade(db.engine, "0003")  # a fresh SQLite file stops here...
    command.downgrade(alembic_config(db.engine), "0003")  # ...the session's PostgreSQL goes back
    now = time.time()
    with db.write() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO accounts (id, name, created_at, webhook_secret) "
                "VALUES ('a1', 'old', :now, 's')"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO api_keys (id, account_id, name, mode, key_hash, prefix, created_at,"
                " active) VALUES ('k1', 'a1', 'k', 'live', 'h', 'p', :now, true)"
            ),
            {"now": now},
        )
        for job_id, status in (("j1", "COMPLETED"), ("j2", "QUEUED"), ("j3", "PROCESSING")):
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (id, account_id, api_key_id, mode, model, engine, status,"
                    " input, params, progress, price, created_at, run_after, attempts,"
                    " cancel_requested) VALUES (:id, 'a1', 'k1', 'live', 'm', 'sandbox', :status,"
                    " '{}', '{}', 0, 10, :now, :now, 0, false)"
                ),
                {"id": job_id, "status": status, "now": now},
            )
        for job_id, kind, amount in (
            (None, "topup", 100),
            ("j1", "hold", 10),
            ("j1", "capture", 10),
            ("j2", "hold", 10),
            ("j3", "hold", 10),
            (None, "adjustment", -5),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO ledger (account_id, job_id, kind, amount, created_at)"
                    " VALUES ('a1', :job, :kind, :amount, :now)"
                ),
                {"job": job_id, "kind": kind, "amount": amount, "now": now},
            )
    upgrade(db.engine)
    with db.read() as conn:
        assert ledger.account_balance(conn, "a1") == ledger.ledger_balance(conn, "a1")
        assert ledger.account_balance(conn, "a1") == ledger.Balance(balance=85, held=20)
        assert admission.active_jobs(conn, "a1") == 2
    db.dispose()
