"""A running job's upstream journal: what an upstream engine records about its provider task
(engines/bfl.py's ``UpstreamJournal``), kept in the database by the worker holding the job.

An engine reaches it as ``hooks.upstream``; engines that do not look for it never touch the
database. ``record`` writes before it returns (the engine submits only once a *submitting*
mark is stored, and polls only once the task id is), and fails loudly when the write cannot
be made or the worker no longer holds the job: the engine then stops instead of paying for
work nobody can resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from castframe.errors import JobFailure
from castframe.jobs import store as job_store
from castframe.jobs.record import Job
from castframe.store.db import Database


class JobUpstream:
    """The journal of one job, for the worker ``worker_id`` that holds its lease."""

    def __init__(self, db: Database, job: Job, worker_id: str, engine: str) -> None:
        self.db = db
        self.job = job
        self.worker_id = worker_id
        self.engine = engine
        self._recorded: Mapping[str, Any] | None = None
        self._read = False

    def recorded(self) -> Mapping[str, Any] | None:
        if not self._read:
            with self.db.read() as conn:
                self._recorded = job_store.upstream_state(conn, self.job.id)
            self._read = True
        return self._recorded

    def record(self, state: Mapping[str, Any]) -> None:
        with self.db.write() as conn:
            held = job_store.record_upstream(conn, self.job, self.worker_id, self.engine, state)
        if not held:
            raise JobFailure(
                "worker_lost", "this worker lost the job's lease; another attempt takes it over"
            )
        self._recorded, self._read = dict(state), True
