"""Partial indexes for the queue: queued jobs by fair-queue key, running jobs by lease expiry

Revision ID: 0005
Revises: 0004

Replaces ix_jobs_claim (status, queue_key) and ix_jobs_queue (status, run_after), which
indexed every job ever written, with indexes of only the jobs that are queued or running (see
store/tables.py for why). On PostgreSQL they are built CONCURRENTLY, outside the migration's
transaction, so a running deployment keeps submitting and claiming while they build.

Also on PostgreSQL: autovacuum visits ``jobs`` after 2% of its rows changed instead of the
default 20%. Every job's row is rewritten twice (claimed, finished), and until a vacuum the
stale entries of the queue's index are read again by claims; on a table of millions of jobs
the default would let hundreds of thousands pile up between vacuums.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NEW = (
    ("ix_jobs_queued", ["queue_key"], "status = 'QUEUED'"),
    ("ix_jobs_running", ["lease_expires_at"], "status = 'PROCESSING'"),
)
OLD = (("ix_jobs_claim", ["status", "queue_key"]), ("ix_jobs_queue", ["status", "run_after"]))
VACUUM_SETTINGS = "autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02"


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    if _postgres():
        with op.get_context().autocommit_block():
            for name, columns, where in NEW:
                # A build interrupted earlier leaves an invalid index of this name behind.
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                op.create_index(
                    name,
                    "jobs",
                    columns,
                    postgresql_where=sa.text(where),
                    postgresql_concurrently=True,
                )
            for name, _columns in OLD:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        op.execute(f"ALTER TABLE jobs SET ({VACUUM_SETTINGS})")
        return
    for name, columns, where in NEW:
        op.create_index(name, "jobs", columns, sqlite_where=sa.text(where))
    for name, _columns in OLD:
        op.drop_index(name, table_name="jobs")


def downgrade() -> None:
    if _postgres():
        op.execute(
            "ALTER TABLE jobs RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)"
        )
    for name, columns in OLD:
        op.create_index(name, "jobs", columns)
    for name, _columns, _where in NEW:
        op.drop_index(name, table_name="jobs")
