"""job_upstream: an upstream engine's record of a job's provider task (BFL's task id)

Revision ID: 0009_bfl_upstream
Revises: 0008

The ``bfl`` engine records BFL's task id and polling URL here before it polls, so a job
whose worker died (or whose polling failed) is resumed by that id on its next attempt
instead of being submitted, and billed, again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_bfl_upstream"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_upstream",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("engine", sa.String(64), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_upstream")
