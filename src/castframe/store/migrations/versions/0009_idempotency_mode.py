"""Idempotency keys scoped by account and mode, with an owner token; uploads indexed by
account (the storage quota's sum)

Revision ID: 0009
Revises: 0008

The key's primary key becomes (account_id, mode, key), so a live submission and a test
submission with the same Idempotency-Key are two requests (jobs/idempotency.py). Existing
records are copied with the mode of the job they answered (read from their stored response);
a record without a job (a request in flight during the upgrade) is kept as live. The owner
token (NULL for copied records) lets a takeover prove the first request lost its key.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_CHUNK = 1000


def _new_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("owner_token", sa.String(length=64), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "mode", "key", name=f"pk_{name}"),
    )


def _job_id(body: str | None) -> str | None:
    try:
        found = json.loads(body or "")
    except ValueError:
        return None
    job_id = found.get("jobId") if isinstance(found, dict) else None
    return job_id if isinstance(job_id, str) else None


def upgrade() -> None:
    conn = op.get_bind()
    _new_table("idempotency_keys_v2")
    columns = "account_id, key, request_hash, state, response_status, response_body, created_at"
    rows = conn.execute(sa.text(f"SELECT {columns} FROM idempotency_keys")).mappings().all()
    for begin in range(0, len(rows), _CHUNK):
        chunk = [dict(row) for row in rows[begin : begin + _CHUNK]]
        ids = sorted({i for row in chunk if (i := _job_id(row["response_body"]))})
        modes: dict[str, str] = {}
        if ids:
            query = sa.text("SELECT id, mode FROM jobs WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            )
            modes = {str(i): str(m) for i, m in conn.execute(query, {"ids": ids}).all()}
        for row in chunk:
            row["mode"] = modes.get(_job_id(row["response_body"]) or "", "live")
            row["owner_token"] = None
        conn.execute(
            sa.text(
                "INSERT INTO idempotency_keys_v2 (account_id, mode, key, request_hash, state,"
                " owner_token, response_status, response_body, created_at) VALUES (:account_id,"
                " :mode, :key, :request_hash, :state, :owner_token, :response_status,"
                " :response_body, :created_at)"
            ),
            chunk,
        )
    op.drop_table("idempotency_keys")
    op.rename_table("idempotency_keys_v2", "idempotency_keys")
    op.create_index("ix_uploads_account", "uploads", ["account_id", "size"])


def downgrade() -> None:
    op.drop_index("ix_uploads_account", table_name="uploads")
    conn = op.get_bind()
    op.create_table(
        "idempotency_keys_v1",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "key"),
    )
    # One record per (account, key): the live one wins over the test one.
    conn.execute(
        sa.text(
            "INSERT INTO idempotency_keys_v1 SELECT account_id, key, request_hash, state,"
            " response_status, response_body, created_at FROM idempotency_keys i WHERE"
            " mode = 'live' OR NOT EXISTS (SELECT 1 FROM idempotency_keys o WHERE"
            " o.account_id = i.account_id AND o.key = i.key AND o.mode = 'live')"
        )
    )
    op.drop_table("idempotency_keys")
    op.rename_table("idempotency_keys_v1", "idempotency_keys")
