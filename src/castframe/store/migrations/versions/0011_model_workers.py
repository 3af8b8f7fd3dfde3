"""Model-aware workers: a per-model queue index and the table of live workers

Revision ID: 0011
Revises: 0010

``ix_jobs_queued_model`` (model, queue_key) over the queued jobs only, for the claims of
workers that serve some models (``castframe worker --models``); ``workers`` lists the live
workers and the models each serves (jobs/fleet.py). On PostgreSQL the index is built
CONCURRENTLY, outside the migration's transaction, so a running deployment keeps submitting
and claiming while it builds (as 0005 did).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEX = "ix_jobs_queued_model"
WHERE = "status = 'QUEUED'"


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("models", sa.JSON, nullable=True),
        sa.Column("lanes", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            # A build interrupted earlier leaves an invalid index of this name behind.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
            op.create_index(
                INDEX,
                "jobs",
                ["model", "queue_key"],
                postgresql_where=sa.text(WHERE),
                postgresql_concurrently=True,
            )
        return
    op.create_index(INDEX, "jobs", ["model", "queue_key"], sqlite_where=sa.text(WHERE))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="jobs")
    op.drop_table("workers")
