"""The queue's statements use its partial indexes, on both databases, whatever plan is cached.

A claim that stops using ``ix_jobs_queued`` still returns the right jobs, only slowly: it
would read every job ever run. So these tests read the plans themselves. On PostgreSQL they
force the generic plan, the one a prepared statement settles on after a few runs, where a
status passed as a parameter could not match the indexes' ``status = '...'`` predicates.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from castframe.jobs import store as job_store
from castframe.store import states
from castframe.store.db import Database
from castframe.store.migrate import upgrade
from castframe.store.tables import jobs, status_is


def _plan(db: Database, statement: sa.Executable, params: dict[str, Any]) -> str:
    """The plan of ``statement`` as text: PostgreSQL's generic plan, SQLite's query plan."""
    with db.write() as conn:
        if db.is_postgres:
            # Compiled with $n placeholders, so PostgreSQL itself prepares it.
            compiled = statement.compile(dialect=PGDialect_asyncpg())
            bound = compiled.construct_params(params)
            values = [
                sa.literal(bound[name]).compile(
                    dialect=PGDialect_asyncpg(), compile_kwargs={"literal_binds": True}
                )
                for name in compiled.positiontup or []
            ]
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.exec_driver_sql(f"PREPARE plan_probe AS {compiled}")
            args = f"({', '.join(str(value) for value in values)})" if values else ""
            rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE plan_probe{args}").all()
            conn.exec_driver_sql("DEALLOCATE plan_probe")
            return "\n".join(row[0] for row in rows)
        compiled = statement.compile(dialect=sqlite_dialect())
        bound = compiled.construct_params(params)
        rows = conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}",
            tuple(bound[name] for name in compiled.positiontup or []),
        ).all()
        return "\n".join(str(row[-1]) for row in rows)


def _migrated(url: str) -> Database:
    db = Database(url)
    upgrade(db.engine)
    return db


def test_claims_read_the_queued_index(database_url: str) -> None:
    db = _migrated(database_url)
    statement = job_store._window_of("postgresql" if db.is_postgres else "sqlite", 0)
    params = {"now": time.time(), "window": 20}
    assert "ix_jobs_queued" in _plan(db, statement, params)
    db.dispose()


def test_takeovers_and_queue_metrics_read_the_partial_indexes(database_url: str) -> None:
    db = _migrated(database_url)
    expired = sa.select(jobs.c.id).where(
        status_is(jobs.c.status, states.PROCESSING), jobs.c.lease_expires_at < sa.bindparam("now")
    )
    assert "ix_jobs_running" in _plan(db, expired, {"now": time.time()})
    assert "ix_jobs_queued" in _plan(db, job_store._QUEUE_DEPTH[states.QUEUED], {})
    assert "ix_jobs_running" in _plan(db, job_store._QUEUE_DEPTH[states.PROCESSING], {})
    assert "ix_jobs_queued" in _plan(db, job_store._OLDEST_QUEUED, {})
    db.dispose()


def test_status_is_refuses_what_is_not_a_status() -> None:
    try:
        status_is(jobs.c.status, "QUEUED' OR '1'='1")
    except ValueError:
        return
    raise AssertionError("an unknown status was put into SQL text")


def test_postgres_vacuums_the_jobs_table_early(postgres_url: str) -> None:
    """Stale queue-index entries are read by claims until a vacuum: on PostgreSQL the jobs
    table is vacuumed after 2% of its rows changed, not the default 20%."""
    db = _migrated(postgres_url)
    with db.read() as conn:
        options = conn.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = 'jobs'"
        ).scalar()
    assert "autovacuum_vacuum_scale_factor=0.02" in (options or [])
    db.dispose()


def test_claims_of_some_models_read_the_per_model_index(database_url: str) -> None:
    """A worker that serves one model reads that model's queue (``ix_jobs_queued_model``),
    never every queued job; one that serves every model keeps ``ix_jobs_queued``."""
    db = _migrated(database_url)
    dialect = "postgresql" if db.is_postgres else "sqlite"
    params = {"now": time.time(), "window": 20}
    one = job_store._window_of(dialect, 1)
    assert "ix_jobs_queued_model" in _plan(db, one, {**params, "model_0": "ideogram-v3-turbo"})
    two = job_store._window_of(dialect, 2)
    plan = _plan(db, two, {**params, "model_0": "ideogram-v3-turbo", "model_1": "flux-2-pro"})
    assert "ix_jobs_queued" in plan  # either queue index: never a scan of every job
    assert "SCAN jobs" not in plan.replace("SCAN jobs USING", "") and "Seq Scan" not in plan
    db.dispose()
