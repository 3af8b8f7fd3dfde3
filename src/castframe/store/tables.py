"""The database schema (SQLAlchemy Core). Times are UNIX seconds (float) on every dialect.

The Alembic migrations in ``migrations/versions`` create exactly this schema; a test compares
them so the two never drift.
"""

from __future__ import annotations

import sqlalchemy as sa

from castframe.store import states

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("max_active_jobs", sa.Integer, nullable=True),
    sa.Column("webhook_secret", sa.String(100), nullable=False),
    sa.Column("previous_webhook_secret", sa.String(100), nullable=True),
    sa.Column("previous_secret_expires_at", sa.Float, nullable=True),
    # Test keys' own Standard Webhooks secret (test mode shares nothing with live).
    sa.Column("test_webhook_secret", sa.String(100), nullable=True),
    sa.Column("test_previous_webhook_secret", sa.String(100), nullable=True),
    sa.Column("test_previous_secret_expires_at", sa.Float, nullable=True),
    # Running totals, moved in the same transaction as the ledger rows and job transitions
    # they summarise (jobs/ledger.py, jobs/admission.py): submission checks them in one
    # conditional UPDATE instead of summing a ledger that grows forever.
    sa.Column("credits_balance", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("credits_held", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("active_jobs", sa.Integer, nullable=False, server_default="0"),
    # Fair queuing: the virtual time of the account's latest queued job (jobs/admission.py).
    sa.Column("queue_clock", sa.Float, nullable=False, server_default="0"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("rate_per_second", sa.Float, nullable=True),
    sa.Column("rate_burst", sa.Integer, nullable=True),
)


def _index_of_jobs_in(status: str, name: str, column: str) -> sa.Index:
    """A partial index of only the jobs in ``status``, on both dialects."""
    where = sa.text(f"status = '{status}'")
    return sa.Index(name, column, postgresql_where=where, sqlite_where=where)


jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("api_key_id", sa.String(36), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("engine", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("progress", sa.Integer, nullable=False, default=0),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("price", sa.Integer, nullable=False),
    sa.Column("charged", sa.Integer, nullable=True),
    sa.Column("delivered", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Column("run_after", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("webhook_events", sa.JSON, nullable=True),
    sa.Column("webhook_status", sa.String(16), nullable=True),
    sa.Column("webhook_key_hash", sa.String(64), nullable=True),
    sa.Column("expired", sa.Boolean, nullable=False, server_default=sa.false()),
    # The job's place in the fair queue (its account's virtual clock at admission): workers
    # claim the lowest due key through ix_jobs_queued, O(log n) however deep the backlog.
    sa.Column("queue_key", sa.Float, nullable=False, server_default="0"),
    # The queue's two indexes are partial: they hold only the rows that are queued (claims,
    # by fair-queue key) or running (lease expiry, for takeovers). Whole-table indexes led by
    # ``status`` took an entry for every row version ever written, and each claim inserted
    # its PROCESSING entry on the very page of the queue's head: PostgreSQL then could not
    # mark the claimed jobs' stale entries dead (the page kept changing under the scan), so
    # every claim walked all the jobs claimed since the last vacuum (~1,000 entries per claim
    # in a 3,000-job benchmark drain). Queries must spell the status as a literal
    # (``status_is``) for the planner to use them.
    _index_of_jobs_in(states.QUEUED, "ix_jobs_queued", "queue_key"),
    _index_of_jobs_in(states.PROCESSING, "ix_jobs_running", "lease_expires_at"),
    # The same queue per model, for workers that serve only some models (``castframe worker
    # --models``): their claims read the head of each served model's queue. Workers that
    # serve every model never use it and claim through ix_jobs_queued as before.
    sa.Index(
        "ix_jobs_queued_model",
        "model",
        "queue_key",
        postgresql_where=sa.text(f"status = '{states.QUEUED}'"),
        sqlite_where=sa.text(f"status = '{states.QUEUED}'"),
    ),
    sa.Index("ix_jobs_account_created", "account_id", "mode", "created_at"),
    sa.Index("ix_jobs_account_status", "account_id", "status"),
    # Finished jobs by (expired, finish time), for the retention sweeper (jobs/retention.py):
    # its passes read the oldest unexpired ones (outputs due) and the oldest expired ones
    # (rows due) from the head of the index, however long history is kept. Partial: queued
    # and running jobs (no completed_at) never enter it.
    sa.Index(
        "ix_jobs_finished",
        "expired",
        "completed_at",
        postgresql_where=sa.text("completed_at IS NOT NULL"),
        sqlite_where=sa.text("completed_at IS NOT NULL"),
    ),
)


def status_is(column: sa.ColumnElement[str], status: str) -> sa.ColumnElement[bool]:
    """``column = '<status>'`` with the status in the SQL text rather than a parameter.

    A partial index (``ix_jobs_queued``, ``ix_jobs_running``) is usable only where the
    planner can prove its predicate: a literal can, a parameter cannot once PostgreSQL has
    switched a prepared statement to its generic plan (SQLite never can).
    """
    if status not in states.ALL:
        raise ValueError(f"unknown job status {status!r}")
    return column == sa.literal_column(f"'{status}'")


def guard(column: sa.ColumnElement[str], transition: states.Transition) -> sa.ColumnElement[bool]:
    """The WHERE clause of a write that makes ``transition``: the status is one of its
    sources (``status_is``, so the partial indexes still match)."""
    return sa.or_(*(status_is(column, status) for status in sorted(transition.sources)))


ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    # One hold, one capture and one release per job at most: the database itself refuses a
    # second capture, whatever a crashed-and-retried worker does.
    sa.UniqueConstraint("job_id", "kind", name="uq_ledger_job_kind"),
    sa.Index("ix_ledger_account", "account_id", "id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    # Scoped by mode too: a live key never replays a test submission's job (jobs/idempotency.py).
    sa.Column("mode", sa.String(8), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner_token", sa.String(64), nullable=True),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("response_body", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False, server_default="live"),
    sa.Column("storage_key", sa.Text, nullable=False),
    sa.Column("content_type", sa.String(32), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    # An account's stored bytes, summed for its storage quota (jobs/quota.py).
    sa.Index("ix_uploads_account", "account_id", "size"),
    # The sweeper's "anything expired?" probe and its oldest-first scan (jobs/retention.py).
    sa.Index(
        "ix_uploads_expires",
        "expires_at",
        postgresql_where=sa.text("expires_at IS NOT NULL"),
        sqlite_where=sa.text("expires_at IS NOT NULL"),
    ),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("account_id", sa.String(36), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_webhook_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_job", "job_id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(40), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
    sa.Column("attempted_at", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id"),
)

characters = sa.Table(
    "characters",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False, server_default="live"),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("upload_id", sa.String(40), sa.ForeignKey("uploads.id"), nullable=False),
    sa.Column("face_box", sa.JSON, nullable=True),
    sa.Column("descriptor", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
    sa.Index("ix_characters_account", "account_id", "created_at"),
)

file_deletions = sa.Table(
    "file_deletions",
    metadata,
    # Storage keys whose files must go, written in the transaction that decided it (a job
    # expired, an upload deleted) and removed once the file is deleted: the deletes happen
    # outside any transaction, and a crash between the two leaves the key here to retry.
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_file_deletions_due", "due_at"),
)

job_upstream = sa.Table(
    "job_upstream",
    metadata,
    # What an upstream engine recorded about a job's provider task (the ``bfl`` engine: BFL's
    # task id and polling URL, written before it polls), so that a later attempt of the job
    # resumes that task instead of paying for a second generation. One row per job.
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("engine", sa.String(64), nullable=False),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

workers = sa.Table(
    "workers",
    metadata,
    # The live workers and the models each serves (jobs/fleet.py): a worker inserts its row
    # when it starts, its heartbeat renews ``seen_at``, it deletes the row when it stops. A
    # row not seen for a lease period is a dead worker's. ``models`` NULL: every model.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("models", sa.JSON, nullable=True),
    sa.Column("lanes", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
)
