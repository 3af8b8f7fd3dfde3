"""Apiframe v2 shapes: account emails, job expiry, upload expiry, Apiframe's spellings

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("expired", sa.Boolean, nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("expires_at", sa.Float, nullable=True))
    # Apiframe spells the state CANCELLED, and its job webhookStatus is pending, delivered
    # or failed (a delivery still being retried is pending); the delivery log says
    # "delivered" too, where it said "sent".
    op.execute("UPDATE jobs SET status = 'CANCELLED' WHERE status = 'CANCELED'")
    op.execute("UPDATE jobs SET error_code = 'cancelled' WHERE error_code = 'canceled'")
    op.execute("UPDATE jobs SET webhook_status = 'delivered' WHERE webhook_status = 'sent'")
    op.execute("UPDATE jobs SET webhook_status = 'pending' WHERE webhook_status = 'failing'")
    op.execute("UPDATE webhook_deliveries SET status = 'delivered' WHERE status = 'sent'")


def downgrade() -> None:
    op.execute("UPDATE webhook_deliveries SET status = 'sent' WHERE status = 'delivered'")
    op.execute("UPDATE jobs SET webhook_status = 'sent' WHERE webhook_status = 'delivered'")
    op.execute("UPDATE jobs SET error_code = 'canceled' WHERE error_code = 'cancelled'")
    op.execute("UPDATE jobs SET status = 'CANCELED' WHERE status = 'CANCELLED'")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("expired")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("email")
