"""Getting accepted submissions into the database: one transaction for those that overlap.

``POST /v2/images/generate`` validates on its own (``validation.prepare``); what is left is a
few tiny statements per job, and under load the transaction around them costs as much as they
do. The submitter writes concurrent submissions of this process through one group commit
(store/group_commit.py): each caller still gets its own job, its own 402/404/429, and its own
idempotency record, written in the same transaction as its job.

Inline images are stored before the transaction, one submission at a time: a submission whose
images cannot be stored (storage full or unavailable) fails alone with the StorageError (a 507
or 503, api/errors.py), after its images already stored are removed, and its neighbours in
the batch go on. Nothing of it reaches the database, so it holds and charges nothing, and
generate forgets its Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from castframe.config import Settings
from castframe.errors import ApiError
from castframe.jobs import idempotency
from castframe.jobs.accounts import Principal
from castframe.jobs.record import Job
from castframe.jobs.submission import (
    discard_inline_images,
    insert_many,
    store_inline_images,
)
from castframe.jobs.validation import Submission
from castframe.media.storage import Storage, StorageError
from castframe.store.db import Database
from castframe.store.group_commit import GroupCommit


def accepted_body(job: Job) -> str:
    """The 202 body of an accepted submission (also what an idempotent replay returns)."""
    return json.dumps({"jobId": job.id, "status": job.status})


@dataclass(frozen=True)
class _Pending:
    principal: Principal
    submission: Submission
    idempotency_key: idempotency.Claim | None


class Submitter:
    def __init__(self, db: Database, storage: Storage, settings: Settings) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings
        self.group: GroupCommit[_Pending, Job] = GroupCommit(
            self._write_batch, self._write_one, max_batch=settings.submit_batch_max
        )
        self._waiting: list[tuple[_Pending, asyncio.Future[Job]]] = []
        """Submissions of the event loop waiting for the next batch."""
        self._writer: asyncio.Task[None] | None = None

    async def submit_async(
        self,
        principal: Principal,
        submission: Submission,
        idempotency_key: idempotency.Claim | None,
    ) -> Job:
        """Write the job, with the submissions that wait at the same moment; raises its
        ApiError. The coroutines that overlap share one batch, written by one thread, so a
        submission costs the API no thread of its own."""
        pending = _Pending(principal, submission, idempotency_key)
        if self.settings.submit_batch_max == 1:
            return await run_in_threadpool(self._write_one, pending)
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiting.append((pending, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
        return await future

    async def _write_waiting(self) -> None:
        """Write whatever is waiting, batch after batch, until nothing is."""
        try:
            while self._waiting:
                batch = self._waiting[: self.settings.submit_batch_max]
                del self._waiting[: self.settings.submit_batch_max]
                outcomes: list[Job | BaseException]
                try:
                    outcomes = await run_in_threadpool(
                        self.group.write, [pending for pending, _future in batch]
                    )
                except BaseException as exc:  # cancelled at shutdown: nobody is left hanging
                    outcomes = [exc] * len(batch)
                for (_pending, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._writer = None

    def _write_batch(self, batch: Sequence[_Pending]) -> list[Job | BaseException]:
        outcomes: list[Job | BaseException | None] = [None] * len(batch)
        stored: list[int] = []
        for index, item in enumerate(batch):
            try:
                self._store_inline([item])
            except StorageError as exc:  # this submission's own failure
                outcomes[index] = exc
            else:
                stored.append(index)
        written = [batch[index] for index in stored]
        if written:
            with self._discard_if_failed(written) as refused:
                with self.db.write() as conn:
                    # A key taken over meanwhile (jobs/idempotency.py) writes no job.
                    held = idempotency.hold(
                        conn, [item.idempotency_key for item in written if item.idempotency_key]
                    )
                    owned = [
                        item.idempotency_key is None or item.idempotency_key.token in held
                        for item in written
                    ]
                    inserted = iter(
                        insert_many(
                            conn,
                            [
                                (item.principal, item.submission)
                                for item, mine in zip(written, owned, strict=True)
                                if mine
                            ],
                            self.settings,
                        )
                    )
                    results: list[Job | ApiError] = [
                        next(inserted) if mine else idempotency.lost() for mine in owned
                    ]
                    idempotency.complete(
                        conn,
                        [
                            (item.idempotency_key, 202, accepted_body(result))
                            for item, result in zip(written, results, strict=True)
                            if item.idempotency_key and isinstance(result, Job)
                        ],
                    )
                refused.extend(
                    item
                    for item, result in zip(written, results, strict=True)
                    if isinstance(result, ApiError)
                )
            for index, result in zip(stored, results, strict=True):
                outcomes[index] = result
        return [outcome for outcome in outcomes if outcome is not None]

    def _write_one(self, item: _Pending) -> Job:
        """One submission: a batch of one (the group commit writes each item of a batch
        whose transaction failed this way, so one poisoned item cannot fail the others)."""
        [outcome] = self._write_batch([item])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _store_inline(self, items: Sequence[_Pending]) -> None:
        """Store the items' inline images before their transaction (no lock is held during
        storage I/O); if one cannot be stored, remove those that were and raise."""
        submissions = [item.submission for item in items]
        try:
            store_inline_images(self.storage, submissions)
        except BaseException:
            discard_inline_images(self.storage, submissions)
            raise

    @contextlib.contextmanager
    def _discard_if_failed(self, batch: Sequence[_Pending]) -> Iterator[list[_Pending]]:
        """Around the transaction of submissions whose inline images are stored: afterwards
        remove those of the submissions it refused (the caller lists them), or all of them
        if it failed."""
        refused: list[_Pending] = []
        try:
            yield refused
        except BaseException:
            discard_inline_images(self.storage, [item.submission for item in batch])
            raise
        discard_inline_images(self.storage, [item.submission for item in refused])
