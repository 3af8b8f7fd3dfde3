"""Test mode isolated from live: uploads and characters belong to a mode, and test keys sign
webhooks with a test secret of their own

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("test_webhook_secret", sa.String(100), nullable=True))
        batch.add_column(sa.Column("test_previous_webhook_secret", sa.String(100), nullable=True))
        batch.add_column(sa.Column("test_previous_secret_expires_at", sa.Float, nullable=True))
    for table in ("uploads", "characters"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("mode", sa.String(8), nullable=False, server_default="live"))
    # Every existing account gets its own test secret (a fresh random one, as at creation).
    conn = op.get_bind()
    for (account_id,) in conn.execute(sa.text("SELECT id FROM accounts")).all():
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        conn.execute(
            sa.text("UPDATE accounts SET test_webhook_secret = :secret WHERE id = :id"),
            {"secret": secret, "id": account_id},
        )


def downgrade() -> None:
    for table in ("characters", "uploads"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("mode")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("test_previous_secret_expires_at")
        batch.drop_column("test_previous_webhook_secret")
        batch.drop_column("test_webhook_secret")
