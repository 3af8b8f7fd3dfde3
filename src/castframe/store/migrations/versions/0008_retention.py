"""Retention: finished jobs indexed by (expired, completed_at), uploads by expires_at, and the
queue of storage keys to delete

Revision ID: 0008
Revises: 0007

The sweeper (jobs/retention.py) reads the oldest finished jobs that are not expired yet, and
(with CASTFRAME_JOB_RETENTION_DAYS) the oldest expired ones, from the head of
``ix_jobs_finished``. On PostgreSQL the index is built CONCURRENTLY, outside the migration's
transaction, so a running deployment keeps submitting and completing jobs while it builds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FINISHED = "completed_at IS NOT NULL"
EXPIRING = "expires_at IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "file_deletions",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("due_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_file_deletions_due", "file_deletions", ["due_at"])
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            # A build interrupted earlier leaves an invalid index of this name behind.
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_finished")
            op.create_index(
                "ix_jobs_finished",
                "jobs",
                ["expired", "completed_at"],
                postgresql_where=sa.text(FINISHED),
                postgresql_concurrently=True,
            )
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_uploads_expires")
            op.create_index(
                "ix_uploads_expires",
                "uploads",
                ["expires_at"],
                postgresql_where=sa.text(EXPIRING),
                postgresql_concurrently=True,
            )
        return
    op.create_index(
        "ix_jobs_finished", "jobs", ["expired", "completed_at"], sqlite_where=sa.text(FINISHED)
    )
    op.create_index("ix_uploads_expires", "uploads", ["expires_at"], sqlite_where=sa.text(EXPIRING))


def downgrade() -> None:
    op.drop_index("ix_uploads_expires", table_name="uploads")
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.drop_index("ix_file_deletions_due", table_name="file_deletions")
    op.drop_table("file_deletions")
