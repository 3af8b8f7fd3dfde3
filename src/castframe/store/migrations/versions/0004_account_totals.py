"""Running totals on accounts (balance, held credits, unfinished jobs), fair-queue keys

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BACKFILL = """
UPDATE accounts SET
  credits_balance = (
    SELECT COALESCE(SUM(CASE WHEN kind IN ('topup', 'adjustment') THEN amount
                             WHEN kind = 'capture' THEN -amount ELSE 0 END), 0)
    FROM ledger WHERE ledger.account_id = accounts.id),
  credits_held = (
    SELECT COALESCE(SUM(CASE WHEN kind = 'hold' THEN amount
                             WHEN kind IN ('capture', 'release') THEN -amount ELSE 0 END), 0)
    FROM ledger WHERE ledger.account_id = accounts.id),
  active_jobs = (
    SELECT COUNT(*) FROM jobs
    WHERE jobs.account_id = accounts.id AND jobs.status IN ('QUEUED', 'PROCESSING'))
"""


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("credits_balance", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("credits_held", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("active_jobs", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("queue_clock", sa.Float, nullable=False, server_default="0"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queue_key", sa.Float, nullable=False, server_default="0"))
        batch.create_index("ix_jobs_claim", ["status", "queue_key"])
    op.execute(BACKFILL)
    # Jobs already queued keep their order: oldest first.
    op.execute("UPDATE jobs SET queue_key = created_at")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_claim")
        batch.drop_column("queue_key")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("queue_clock")
        batch.drop_column("active_jobs")
        batch.drop_column("credits_held")
        batch.drop_column("credits_balance")
