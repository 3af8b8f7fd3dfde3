"""Retention: what a busy server deletes so that its disk, bucket and tables stop growing.

Each worker runs a ``RetentionSweeper`` pass every ``CASTFRAME_RETENTION_SWEEP_SECONDS``. A pass
is a few short, bounded steps (at most ``CASTFRAME_RETENTION_BATCH`` items of each kind), each
its own transaction, with every storage delete outside any transaction:

1. **Outputs** (``CASTFRAME_OUTPUT_RETENTION_HOURS``, 24 as Apiframe): finished jobs older than
   that are marked ``expired``, their output keys queued for deletion (jobs/file_deletions.py)
   and their stored inline images given an expiry of now (step 2 deletes them), in one
   transaction. Failed and cancelled jobs are marked too (their inputs are purged).
2. **Uploads**: uploads past ``expires_at`` that no queued or running job names are deleted
   (rows now, files queued). Saved characters' images are never touched.
3. **Job rows** (``CASTFRAME_JOB_RETENTION_DAYS``, default keep): expired jobs older than that
   are deleted with their webhook deliveries and attempts; the ledger keeps their entries.
4. **Webhook deliveries** (``CASTFRAME_WEBHOOK_ATTEMPT_RETENTION_DAYS``, 30): finished
   deliveries and their attempt logs older than that.
5. **Files**: queued keys are taken with a lease, deleted from storage, then forgotten.

Why this order survives a crash anywhere: every decision is written (the job's flag, the
upload row's deletion) in the same transaction as the key it frees, and a key leaves the
queue only after its file is gone, so an interrupted pass leaves queued keys that a later
pass (after their lease) deletes again; storage deletes of a missing key succeed. Many
workers sweep at once safely: the rows each step takes are locked with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL (two sweepers take different rows and never wait for each other) and
SQLite's write transaction serialises them, so no file is deleted twice and no job counted
twice.

Planning (which keys, which uploads, which cut-offs) is pure and at the top of this module;
the SQL is the job store's (jobs/store.py), the uploads' (jobs/uploads.py) and the deletion
queue's.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from castframe.config import Settings
from castframe.jobs import file_deletions, uploads
from castframe.jobs import store as job_store
from castframe.jobs.record import Job
from castframe.media.sources import UPLOAD_SCHEME
from castframe.media.storage import Storage, StorageUnavailable
from castframe.store.db import Database

log = logging.getLogger("castframe.retention")

HOUR = 3600.0
DAY = 24 * HOUR
CATCH_UP_SECONDS = 1.0
"""Pause before the next pass when a step came back full (more is due)."""


# -- planning (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cutoffs:
    """Times before which things go, for one pass; None: that kind is kept forever."""

    outputs_before: float | None
    jobs_before: float | None
    deliveries_before: float | None
    uploads_before: float
    """Uploads whose ``expires_at`` is at or before this (the pass's now)."""


@dataclass(frozen=True)
class Policy:
    """The operator's retention settings, in seconds (0: keep forever)."""

    output_seconds: float
    job_seconds: float
    delivery_seconds: float
    batch: int
    delete_output_files: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            output_seconds=settings.output_retention_hours * HOUR,
            job_seconds=settings.job_retention_days * DAY,
            delivery_seconds=settings.webhook_attempt_retention_days * DAY,
            batch=settings.retention_batch,
            delete_output_files=settings.output_retention_delete_files,
        )

    def outputs_expired(self, job: Job, now: float) -> bool:
        """Whether a job's outputs are past retention at ``now``: as soon as the period has
        passed, whether or not a sweep has deleted them yet (``job.expired``)."""
        if job.expired:
            return True
        before = self.cutoffs(now).outputs_before
        return job.completed_at is not None and before is not None and job.completed_at < before

    def cutoffs(self, now: float) -> Cutoffs:
        """The pass's cut-offs. A job row is deleted only once expired, so with job retention
        set, outputs expire no later than their row goes (even with output retention 0):
        deleting the row must not orphan its files."""
        outputs = now - self.output_seconds if self.output_seconds > 0 else None
        jobs = now - self.job_seconds if self.job_seconds > 0 else None
        if jobs is not None:
            outputs = jobs if outputs is None else max(outputs, jobs)
        deliveries = now - self.delivery_seconds if self.delivery_seconds > 0 else None
        return Cutoffs(outputs, jobs, deliveries, now)


def output_keys(result: dict[str, Any] | None) -> list[str]:
    """The storage keys of a job's output images."""
    images = (result or {}).get("images") or []
    return [str(image["key"]) for image in images if isinstance(image, dict) and image.get("key")]


def upload_ids_in(values: Iterable[Any]) -> set[str]:
    """The upload ids named (``upload://<id>``) anywhere in these JSON values (job params)."""
    found: set[str] = set()
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if value.startswith(UPLOAD_SCHEME):
                found.add(value[len(UPLOAD_SCHEME) :])
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found


@dataclass(frozen=True)
class ExpiryPlan:
    """What expiring these jobs frees: the flags to set, the files to delete, and the uploads
    their params name, by owner (only the job's own account's and mode's uploads are let
    expire, whatever a hostile params value names)."""

    job_ids: list[str]
    output_keys: list[str]
    input_uploads: dict[uploads.Owner, set[str]]


def plan_expiry(due: Sequence[Job], delete_output_files: bool = True) -> ExpiryPlan:
    keys = [key for job in due for key in output_keys(job.result)] if delete_output_files else []
    inputs: dict[uploads.Owner, set[str]] = {}
    for job in due:
        named = upload_ids_in([job.params])
        if named:
            inputs.setdefault((job.account_id, job.mode), set()).update(named)
    return ExpiryPlan([job.id for job in due], keys, inputs)


def deletable_uploads(
    candidates: Sequence[uploads.ExpiredUpload], needed: set[str], limit: int
) -> list[uploads.ExpiredUpload]:
    """The expired uploads no unfinished job needs, at most ``limit``."""
    return [upload for upload in candidates if upload.id not in needed][:limit]


# -- the sweeper (thin I/O) -----------------------------------------------------------------


@dataclass
class SweepReport:
    """What one pass did. ``more``: a step came back full, so more is due now."""

    expired_jobs: int = 0
    deleted_uploads: int = 0
    deleted_jobs: int = 0
    deleted_deliveries: int = 0
    deleted_files: int = 0
    failed_files: int = 0
    failed_steps: list[str] = field(default_factory=list)
    more: bool = False

    @property
    def did_something(self) -> bool:
        return any(
            (
                self.expired_jobs,
                self.deleted_uploads,
                self.deleted_jobs,
                self.deleted_deliveries,
                self.deleted_files,
                self.failed_files,
                self.failed_steps,
            )
        )


class RetentionSweeper:
    """Runs retention passes: ``sweep(now)`` once (tests pass their own ``now``), or every
    ``interval`` seconds on a thread of its own (``start``/``stop``), never inside another
    transaction (its storage deletes may take seconds)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        policy: Policy | None = None,
    ) -> None:
        self.db = db
        self.storage = storage
        self.policy = policy or Policy.from_settings(settings)
        self.interval = settings.retention_sweep_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass --------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> SweepReport:
        """One bounded pass. A step that fails (database or storage down) is logged and
        left for the next pass; the other steps still run."""
        now = time.time() if now is None else now
        cut = self.policy.cutoffs(now)
        report = SweepReport()
        steps: list[tuple[str, Callable[[], None]]] = []
        if cut.outputs_before is not None:
            before = cut.outputs_before
            steps.append(("outputs", lambda: self._expire_outputs(before, now, report)))
        steps.append(("uploads", lambda: self._delete_uploads(cut.uploads_before, report)))
        if cut.jobs_before is not None:
            jobs_before = cut.jobs_before
            steps.append(("jobs", lambda: self._delete_jobs(jobs_before, report)))
        if cut.deliveries_before is not None:
            deliveries_before = cut.deliveries_before
            steps.append(("deliveries", lambda: self._delete_deliveries(deliveries_before, report)))
        steps.append(("files", lambda: self._delete_files(now, report)))
        for name, step in steps:
            if self._stopping.is_set():
                break
            try:
                step()
            except Exception:
                log.exception("retention: the %s step failed; the next pass retries it", name)
                report.failed_steps.append(name)
        if report.did_something:
            log.info(
                "retention: %d jobs expired, %d uploads, %d jobs and %d deliveries deleted, "
                "%d files deleted (%d failed)%s",
                report.expired_jobs,
                report.deleted_uploads,
                report.deleted_jobs,
                report.deleted_deliveries,
                report.deleted_files,
                report.failed_files,
                "; more is due" if report.more else "",
            )
        return report

    def _full(self, count: int, report: SweepReport) -> int:
        report.more = report.more or count >= self.policy.batch
        return count

    def _expire_outputs(self, before: float, now: float, report: SweepReport) -> None:
        with self.db.write() as conn:
            due = job_store.outputs_due_for_expiry(conn, before, self.policy.batch)
            plan = plan_expiry(due, self.policy.delete_output_files)
            report.expired_jobs += job_store.mark_expired(conn, plan.job_ids)
            for owner, named in sorted(plan.input_uploads.items()):
                uploads.expire_inputs(conn, owner, named, now)
            file_deletions.enqueue(conn, plan.output_keys, now)
        self._full(len(due), report)

    def _delete_uploads(self, now: float, report: SweepReport) -> None:
        limit = self.policy.batch
        with self.db.read() as conn:  # the usual case: nothing expired, and no scan of jobs
            if not uploads.any_expired(conn, now):
                return
        with self.db.write() as conn:
            needed = upload_ids_in(job_store.unfinished_params(conn))
            candidates = uploads.expired_uploads(conn, now, limit + len(needed))
            # Read again now that the candidates are locked: a submission that named one and
            # committed in between is seen here, and a later one waits for this commit and
            # then finds the upload gone (jobs/uploads.py: existing_uploads).
            needed |= upload_ids_in(job_store.unfinished_params(conn))
            doomed = deletable_uploads(candidates, needed, limit)
            report.deleted_uploads += uploads.delete_uploads(conn, {u.id for u in doomed})
            file_deletions.enqueue(conn, [u.storage_key for u in doomed], now)
        self._full(len(doomed), report)

    def _delete_jobs(self, before: float, report: SweepReport) -> None:
        with self.db.write() as conn:
            due = job_store.jobs_due_for_deletion(conn, before, self.policy.batch)
            report.deleted_jobs += job_store.delete_jobs(conn, due)
        self._full(len(due), report)

    def _delete_deliveries(self, before: float, report: SweepReport) -> None:
        with self.db.write() as conn:
            due = job_store.deliveries_due_for_deletion(conn, before, self.policy.batch)
            report.deleted_deliveries += job_store.delete_deliveries(conn, due)
        self._full(len(due), report)

    def _delete_files(self, now: float, report: SweepReport) -> None:
        with self.db.write() as conn:
            keys = file_deletions.claim(conn, now, self.policy.batch)
        done: list[str] = []
        for key in keys:
            try:
                self.storage.delete(key)
            except StorageUnavailable:
                # The backend is down: the rest would fail alike, each after its own timeouts.
                # Their leases run out and a later pass takes them again.
                report.failed_files += 1
                log.warning("retention: storage unavailable; file deletions resume later")
                break
            except Exception:
                report.failed_files += 1
                log.warning(
                    "retention: could not delete %s; retried in %.0fs",
                    key,
                    file_deletions.LEASE_SECONDS,
                    exc_info=True,
                )
                continue
            done.append(key)
        if done:
            with self.db.write() as conn:
                file_deletions.forget(conn, done)
        report.deleted_files += len(done)
        self._full(len(keys), report)

    # -- on a thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="castframe-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the step in flight (every step is safe to interrupt)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        # The first pass comes half to one interval after start: workers started together
        # spread their passes out, and nothing is so urgent that a start must sweep at once.
        wait = self.interval * random.uniform(0.5, 1.0)
        while not self._stopping.wait(wait):
            try:
                report = self.sweep()
            except Exception:  # never let retention kill its thread
                log.exception("retention pass failed")
                report = SweepReport()
            wait = CATCH_UP_SECONDS if report.more else self.interval
