"""The worker: claims jobs, runs their engine, stores outputs and finishes them.

It owns everything an engine must not: the database, storage, billing and webhooks. One
``Worker`` runs inside ``castframe serve`` (embedded) or alone under ``castframe worker``.
Jobs move through a pipeline (dispatch/pipeline.py) so the engine never waits for the CPU:
the next job's inputs load while the engine runs, and outputs are scored, encoded and stored
(dispatch/postprocess.py) in a bounded pool while the engine is on the next job. A job is
completed, charged and its webhook queued only after its outputs are stored.
A heartbeat thread extends the leases of every job the worker holds (prepared, running or
post-processing); a job whose worker dies is claimed again once its lease expires
(``jobs.store.requeue_expired``).

The database may blink (a restart, a failover, terminated backends): the worker's own writes
(completions, failures, leases) are retried across reconnects (``Database.retry_write``), its
reads of a job's inputs likewise, and progress and cancel checks are skipped until it is back.
A job therefore never fails because the database did, and its error message never carries
SQL or a lease id.

A worker may serve only some models (``castframe worker --models``): it claims only their
jobs and registers them in the ``workers`` table (jobs/fleet.py), renewed by its heartbeat.
A lane whose engine holds several models (engines/residency.py) prefers jobs of the models
it has loaded, within the starvation bound of dispatch/affinity.py, and loads a model
before its job runs (timed: ``castframe_model_load_seconds``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa

from castframe import logs
from castframe.catalog import MODELS
from castframe.config import Settings
from castframe.dispatch.affinity import Affinity
from castframe.dispatch.character_faces import CharacterDescriptors
from castframe.dispatch.inputs import InputLoader, Loaded
from castframe.dispatch.pipeline import Failed, Lane, PostPool
from castframe.dispatch.postprocess import PostProcessor, Prepared, output_key, stored_keys
from castframe.dispatch.upstream import JobUpstream
from castframe.engines.base import EngineInputs, EngineRequest, EngineResult, JobCancelled
from castframe.engines.residency import host_of
from castframe.engines.router import EngineRegistry
from castframe.errors import JobFailure
from castframe.faces.pool import FacePool
from castframe.jobs import fleet
from castframe.jobs import store as job_store
from castframe.jobs.record import Job
from castframe.jobs.retention import RetentionSweeper
from castframe.media.storage import Storage, StorageError, discard
from castframe.metrics import (
    END_TO_END_SECONDS,
    ENGINE_SECONDS,
    JOBS_FAILED,
    JOBS_FINISHED,
    MODEL_LOAD_SECONDS,
    MODEL_SWITCH_SECONDS,
    MODEL_SWITCHES,
)
from castframe.store import states
from castframe.store.db import Database, is_transient
from castframe.store.group_commit import GroupCommit
from castframe.store.notify import JOBS_CHANNEL, Notifier

log = logging.getLogger("castframe.worker")

T = TypeVar("T")

PROGRESS_WRITE_INTERVAL = 0.25
CANCEL_CHECK_INTERVAL = 0.5
ENGINE_ERROR_MAX_CHARS = 300
STOP_RETRY_SECONDS = 5.0
"""How long ``stop`` keeps retrying to give jobs back to an unreachable database."""
FACE_POOL_CLOSE_SECONDS = 5.0
"""At most this long for the scoring processes to finish an image at shutdown."""
PREPARED_PER_LANE = 2
"""Jobs a lane may hold before post-processing: the one on its engine and the next one,
prepared meanwhile. Claims are sized by it, so a worker never hoards the queue."""

__all__ = ["Finished", "JobHooks", "Worker", "failure_of", "output_key"]


def failure_of(exc: Exception) -> JobFailure:
    """The job error for an unexpected exception: what the job's owner may read.

    An engine's exception is reported by type and first line, capped in length (a tensor's
    repr or a traceback is not a message). A database error that was not transient (those are
    retried) is a Castframe fault whose text would show SQL and lease ids: it is reported
    without them, and logged in full with the job id.
    """
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return JobFailure(
            "internal_error",
            "Castframe failed while finishing this job; the operator's log has details",
        )
    first = (str(exc).strip().splitlines() or [""])[0]
    message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if len(message) > ENGINE_ERROR_MAX_CHARS:
        message = message[: ENGINE_ERROR_MAX_CHARS - 1] + "…"
    return JobFailure("engine_error", message)


class NotCompleted(Enum):
    """Why a finished job's completion did not stand (the guard refused it)."""

    CANCELLED = "cancelled"
    """Its owner asked to cancel it meanwhile: nothing written, no charge."""
    LEASE_LOST = "lease lost"
    """Its lease expired and another attempt holds it: that attempt finishes it."""


Completion = Job | NotCompleted
"""A completion's outcome: the job as the database now holds it, or why it did not stand."""


@dataclass(frozen=True)
class Finished:
    """A job whose engine is done and whose outputs are stored, waiting to be completed."""

    job: Job
    result: dict[str, Any]
    delivered: int


@dataclass
class JobHooks:
    """Progress and cancellation for one running job, with throttled database access."""

    worker: Worker
    job: Job
    _last_write: float = 0.0
    _last_check: float = 0.0
    _cancelled: bool = False
    _last_percent: int = field(default=-1)
    upstream: JobUpstream | None = None
    """Where an upstream engine records the job's provider task (dispatch/upstream.py)."""

    def progress(self, percent: int) -> None:
        percent = max(0, min(100, int(percent)))
        now = time.monotonic()
        if percent == self._last_percent or now - self._last_write < PROGRESS_WRITE_INTERVAL:
            return
        self._last_write = self._last_check = now
        try:
            with self.worker.db.write() as conn:
                self._cancelled = job_store.report_progress(
                    conn, self.job, self.worker.worker_id, percent
                )
        except Exception as exc:
            # Progress is advisory: while the database is away the engine keeps going, and
            # the next report (or the completion) brings the row up to date.
            if not is_transient(exc):
                raise
            log.debug("job %s: progress not stored (database unavailable)", self.job.id)
            return
        self._last_percent = percent

    def check_cancelled(self) -> None:
        now = time.monotonic()
        if not self._cancelled and now - self._last_check >= CANCEL_CHECK_INTERVAL:
            self._last_check = now
            try:
                with self.worker.db.read() as conn:
                    self._cancelled = job_store.cancel_requested(conn, self.job.id)
            except Exception as exc:
                if not is_transient(exc):  # unknown for now: asked again next interval
                    raise
        if self._cancelled:
            raise JobCancelled()


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        engines: EngineRegistry,
        notifier: Notifier,
        concurrency: int | None = None,
        devices: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        """``devices``: one lane per device, each with its own engine instances
        (``EngineRegistry.for_device``); without, ``concurrency`` lanes share ``engines``.
        ``models``: the only models whose jobs it claims (default ``CASTFRAME_WORKER_MODELS``;
        None or empty: every model); a model not in the catalog is a ValueError."""
        self.settings = settings
        self.db = db
        self.storage = storage
        self.engines = engines
        self.notifier = notifier
        # This process's committed writes that queue work wake its idle slots (others'
        # arrive through the PostgreSQL listener: services.py).
        db.wakeups.subscribe(JOBS_CHANNEL, notifier.notify)
        self.devices = list(devices or settings.worker_device_list)
        self.concurrency = len(self.devices) or concurrency or settings.worker_concurrency
        self.post_limit = settings.postprocess_queue
        self.capacity = PREPARED_PER_LANE * self.concurrency
        self.worker_id = f"w-{uuid.uuid4().hex[:12]}"
        self.models = served_models(models if models else settings.worker_model_list)
        self._affinities: dict[int, Affinity] = {}
        self._lanes_seen: set[int] = set()
        """Lanes (by their engine registry's id) that have claimed since the start."""
        """Per lane (keyed by its engine registry's id): dispatch/affinity.py."""
        self.inputs = InputLoader(db, storage, settings)
        self.characters = CharacterDescriptors(db, storage)
        # Started on first use (none when nothing is scored); closed by ``stop``.
        self.face_pool = FacePool.for_settings(settings.face_processes, settings.faces_enabled)
        self.post = PostProcessor(storage, self.characters, settings.faces_enabled, self.face_pool)
        self._pool = PostPool(self.concurrency * self.post_limit, self.post_process)
        self._input_pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="castframe-worker-inputs"
        )
        self._lanes: list[Lane] = []
        self._prepared: set[str] = set()
        """Jobs held and not yet handed to post-processing (what claims are sized by)."""
        self._outage = False
        self._stopping = threading.Event()
        self._give_up = threading.Event()
        """Set once ``stop`` stops waiting for the database: retried writes then give up."""
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Job] = {}
        """Every job this worker holds a lease on: claimed, prepared, on an engine or being
        post-processed (the heartbeat extends them all; ``stop`` gives back what is left)."""
        self._ready: deque[Job] = deque()
        self._lock = threading.Lock()
        self._claim_lock = threading.Lock()
        self._last_reap = 0.0
        # Retention passes on a thread of their own, never in the claim transaction: they
        # delete files (jobs/retention.py).
        self.retention = RetentionSweeper(settings, db, storage)
        self.completions: GroupCommit[Finished, Completion] = GroupCommit(
            self._complete_batch,
            self._complete_one,
            max_batch=self.concurrency * self.post_limit,
            siblings=self._slots_running,
            linger=settings.completion_linger_ms / 1000,
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        try:
            with self.db.write() as conn:
                fleet.register(
                    conn, self.worker_id, self.models, self.concurrency, self.settings.lease_seconds
                )
        except Exception as exc:  # the heartbeat registers it once the database answers
            if not is_transient(exc):
                raise
            log.warning("worker %s: not registered yet (database unavailable)", self.worker_id)
        self._pool.start()
        for index in range(self.concurrency):
            device = self.devices[index] if self.devices else None
            lane = Lane(
                f"castframe-worker-{device or index}",
                self,
                self.engines.for_device(device),
                self._input_pool,
                self._pool,
                self.post_limit,
            )
            lane.start()
            self._lanes.append(lane)
            self._threads.append(lane.thread)
        heartbeat = threading.Thread(
            target=self._heartbeat, name="castframe-heartbeat", daemon=True
        )
        heartbeat.start()
        self._threads.append(heartbeat)
        self.retention.start()
        log.info(
            "worker %s started with %d lanes (%s), %d post-processing threads, serving %s",
            self.worker_id,
            self.concurrency,
            ", ".join(self.devices) or "no devices named",
            self.concurrency * self.post_limit,
            ", ".join(self.models) if self.models is not None else "every model",
        )

    def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let running jobs finish within ``grace``, then give them back."""
        self._stopping.set()
        self.notifier.notify_all()
        self.retention.stop()
        deadline = time.monotonic() + grace
        for lane in self._lanes:  # engines finish their current job
            lane.thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.close()  # what they handed over is stored and completed
        self._pool.join(max(0.0, deadline - time.monotonic()))
        if self.face_pool is not None:  # a scoring still running after the grace is killed
            self.face_pool.close(
                min(FACE_POOL_CLOSE_SECONDS, max(0.0, deadline - time.monotonic()))
            )
        self._input_pool.shutdown(wait=False)
        with self._lock:
            leftover = list(self._running.values())
        timer = threading.Timer(STOP_RETRY_SECONDS, self._give_up.set)
        timer.start()
        given_back = 0
        for job in leftover:
            try:
                self.db.retry_write(
                    functools.partial(
                        job_store.requeue,
                        job=job,
                        worker_id=self.worker_id,
                        delay=0.0,
                        reason="worker shut down; job given back",
                    ),
                    f"giving job {job.id} back",
                    self._give_up,
                )
                given_back += 1
                with self._lock:
                    self._running.pop(job.id, None)
            except Exception:
                # Still leased to this worker: taken over once the lease expires.
                log.warning("job %s: not given back (database unavailable)", job.id)
        try:
            with self.db.write() as conn:
                fleet.forget(conn, self.worker_id)
        except Exception:  # its row ages out after a lease
            log.warning("worker %s: not unregistered (database unavailable)", self.worker_id)
        self._give_up.set()
        timer.cancel()
        # The heartbeat ends once this worker holds nothing (jobs prepared but never run,
        # given back above): a drain does not wait out the grace for it.
        for thread in self._threads:
            thread.join(max(1.0, deadline - time.monotonic()))
        log.info("worker %s stopped (%d jobs given back)", self.worker_id, given_back)

    def _slots_running(self) -> int:
        """Jobs being post-processed: those that may finish soon after a finished one (the
        group commit's linger waits for them)."""
        return self._pool.busy

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    # -- pipeline stages (dispatch/pipeline.py's ``Stages``) -------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def idle_wait(self) -> None:
        self.notifier.wait(self.settings.poll_interval)

    def prepare_next(self, engines: EngineRegistry | None = None) -> Prepared | Failed | None:
        """Claim a job (or take one claimed earlier) and load its inputs. A failed claim is
        logged (once per database outage) and answered with None: the lane waits and asks
        again. A failed preparation is the job's (``Failed``), settled by the lane.
        ``engines``: the asking lane's, whose loaded models its claims prefer."""
        if self._stopping.is_set():  # draining: no new claims
            return None
        try:
            job = self._next_job(engines)
            if self._outage:
                log.info("claiming jobs again: the database is back")
            self._outage = False
        except Exception as exc:
            if not is_transient(exc):
                log.exception("claiming a job failed; retrying shortly")
            elif not self._outage:  # one line per outage, not one per poll
                log.warning("cannot claim jobs: the database is unavailable; retrying")
            self._outage = is_transient(exc)
            if self._outage:
                self.db.note_outage()
            return None
        if job is None:
            return None
        if engines is not None:
            self._took(engines, job)
        token = logs.job_id.set(job.id)
        try:
            # The claim has just read cancel_requested: the first database check can wait.
            hooks = JobHooks(
                self,
                job,
                _last_check=time.monotonic(),
                _cancelled=job.cancel_requested,
                upstream=JobUpstream(self.db, job, self.worker_id, job.engine),
            )
            hooks.check_cancelled()
            request, reference = self._retrying(
                lambda: self._engine_request(job), "reading job inputs"
            )
            return Prepared(job, request, reference, hooks)
        except Exception as exc:
            return Failed(job, exc)
        finally:
            logs.job_id.reset(token)

    def run_engine(self, prepared: Prepared, engines: EngineRegistry) -> EngineResult:
        job = prepared.job
        token = logs.job_id.set(job.id)
        try:
            prepared.hooks.check_cancelled()  # asks the database if the job waited a while
            engine = engines.get(job.engine)
            self._load(engine, job)
            with ENGINE_SECONDS.labels(job.engine).time():
                return engine.generate(prepared.request, prepared.hooks)
        finally:
            logs.job_id.reset(token)

    def handed_over(self, prepared: Prepared) -> None:
        """The job is in post-processing's hands: it no longer holds a place of its lane's
        claim capacity. Called by the lane before it prepares its next job, so that
        preparation may claim in its stead (a post-processing thread may start it later)."""
        with self._lock:
            self._prepared.discard(prepared.job.id)

    def post_process(self, prepared: Prepared, result: EngineResult) -> None:
        """Score, encode and store the outputs, then complete the job (in the pool)."""
        job = prepared.job
        token = logs.job_id.set(job.id)
        final: Job | None = None
        try:
            final = self._finish(prepared, result)
        except Exception as exc:
            final = self._settle_error(job, exc)
        finally:
            self._end(job, final)
            logs.job_id.reset(token)

    def settle(self, job: Job, error: Exception) -> None:
        """A job's preparation or engine call failed (or it was cancelled): record that."""
        token = logs.job_id.set(job.id)
        final: Job | None = None
        try:
            final = self._settle_error(job, error)
        except Exception:  # never let a job kill the lane
            log.exception("job %s: unexpected error while finishing", job.id)
        finally:
            self._end(job, final)
            logs.job_id.reset(token)

    def _next_job(self, engines: EngineRegistry | None = None) -> Job | None:
        """A job claimed earlier for an idle slot, or a fresh batch for all the idle slots.

        After a claim, idle slots are woken for the rest of the batch, plus one more only if
        the batch came back full (the queue may hold more): a slot woken for nothing would
        spend a claim transaction finding that out, for every job, under a steady trickle.
        A lane that prefers some models (dispatch/affinity.py) takes their jobs first, from
        what was claimed and in its claim.
        """
        prefer = self._preferred(engines)
        with self._lock:
            if self._ready:
                return self._pop_ready(prefer)
        # One claimer at a time, so a batch is sized by the slots that are really free.
        with self._claim_lock:
            with self._lock:
                if self._ready:
                    return self._pop_ready(prefer)
                free = self.capacity - len(self._prepared)
            if free <= 0:
                return None
            if engines is not None and id(engines) not in self._lanes_seen:
                # A lane's first claim takes one job: a batch in plain queue order would hand
                # a lane that holds models a second model before it has loaded the first.
                self._lanes_seen.add(id(engines))
                free = 1
            claimed = self._claim(free, prefer)
            self._take_in(claimed, free, takers=1)
            with self._lock:
                return self._pop_ready(prefer) if self._ready else None

    def _pop_ready(self, prefer: Sequence[str]) -> Job:
        """The first claimed job of a preferred model, else the first claimed (lock held)."""
        if prefer:
            for job in self._ready:
                if job.model in prefer:
                    self._ready.remove(job)
                    return job
        return self._ready.popleft()

    # -- models: which a lane prefers, and loading them ------------------------------------
    def _affinity(self, engines: EngineRegistry) -> Affinity:
        with self._lock:
            affinity = self._affinities.get(id(engines))
            if affinity is None:
                affinity = Affinity(self.settings.worker_affinity_seconds)
                self._affinities[id(engines)] = affinity
            return affinity

    def _preferred(self, engines: EngineRegistry | None) -> list[str]:
        """The models whose jobs the lane of ``engines`` takes first: those its engines hold
        (only engines that hold models: engines/residency.py), within the bound."""
        if engines is None:
            return []
        resident: set[str] = set()
        hosts = False
        for engine in engines.built():
            host = host_of(engine)
            if host is not None:
                hosts = True
                resident.update(host.resident_models())
        if not hosts:
            return []
        return self._affinity(engines).preferred(resident)

    def _all_preferred(self) -> list[str]:
        """Every lane's preference: what a batch claim for all free slots takes first."""
        models: set[str] = set()
        for lane in self._lanes:
            models.update(self._preferred(lane.engines))
        return sorted(models)

    def _took(self, engines: EngineRegistry, job: Job) -> None:
        """The lane of ``engines`` will run ``job``: its model is the lane's preference now,
        if the job's engine holds models (others have nothing to prefer)."""
        try:
            engine = engines.get(job.engine)
        except Exception:  # misconfigured: the engine call reports it as the job's failure
            return
        if host_of(engine) is not None:
            self._affinity(engines).took(job.model)

    def _load(self, engine: object, job: Job) -> None:
        """Make the job's model resident on an engine that holds models, timing the load."""
        host = host_of(engine)
        if host is None or job.model in host.resident_models():
            return
        started = time.perf_counter()
        host.load(job.model)
        seconds = time.perf_counter() - started
        MODEL_LOAD_SECONDS.labels(job.engine, job.model).observe(seconds)
        MODEL_SWITCHES.labels(job.engine, job.model).inc()
        MODEL_SWITCH_SECONDS.labels(job.engine).inc(seconds)
        log.info("job %s: loaded %s in %.2fs", job.id, job.model, seconds)

    def _take_in(self, claimed: list[Job], free: int, takers: int) -> None:
        """Hold freshly claimed jobs for the slots: ``takers`` threads are about to look, so
        idle slots are woken for the rest, plus one more if the batch came back full (the
        queue may hold more). Called with the claim lock held."""
        with self._lock:
            for job in claimed:
                self._running[job.id] = job
                self._prepared.add(job.id)
            self._ready.extend(claimed)
        for _ in range(max(0, len(claimed) - takers) + (0 < free == len(claimed))):
            self.notifier.notify()

    def _claim(self, limit: int, prefer: Sequence[str] = ()) -> list[Job]:
        held = self._held_per_account()
        with self.db.write() as conn:
            self._maintain_if_due(conn)
            return job_store.claim_many(
                conn,
                self.worker_id,
                self.settings.lease_seconds,
                limit,
                models=self.models,
                prefer=prefer,
                held=held,
            )

    def _held_per_account(self, leaving: Sequence[Job] = ()) -> Counter[str]:
        """The jobs this worker holds per account, less ``leaving`` (being completed): what
        a claim's fair share counts turns from (jobs/fair_share.py)."""
        gone = {job.id for job in leaving}
        with self._lock:
            return Counter(job.account_id for job in self._running.values() if job.id not in gone)

    def _maintain_if_due(self, conn: sa.Connection) -> None:
        """At most once per poll interval, before a claim (both claims: a busy worker claims
        only while completing): dead workers' jobs go back to the queue, or fail once they
        have used up their attempts. Called with the claim lock held.

        Not within a lease period of a database outage: while the database was away no
        worker could renew its leases, so right after it every running job's lease looks
        expired. Requeueing them then would throw away live work (and an attempt) across the
        fleet; a lease later, the live workers' heartbeats have renewed theirs, and only dead
        workers' jobs are still expired.
        """
        now = time.monotonic()
        if now - self._last_reap <= self.settings.poll_interval:
            return
        if self.db.seconds_since_outage() < self.settings.lease_seconds:
            return
        self._last_reap = now
        job_store.requeue_expired(conn, self.settings.max_attempts)
        job_store.reap_abandoned(conn, self.settings.max_attempts)

    def _heartbeat(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            if self._stopping.is_set():
                time.sleep(min(interval, 1.0))
            else:
                self._stopping.wait(interval)
            with self._lock:
                ids = list(self._running)
            if ids:
                try:
                    self.db.retry_write(
                        functools.partial(
                            job_store.extend_leases,
                            worker_id=self.worker_id,
                            job_ids=ids,
                            lease_seconds=self.settings.lease_seconds,
                        ),
                        "extending leases",
                        self._give_up,
                    )
                except Exception:
                    log.exception("heartbeat failed")
            elif self._stopping.is_set():
                return
            if not self._stopping.is_set():  # after the leases: they are what jobs wait on
                self._beat()

    def _beat(self) -> None:
        """Renew this worker's row of live workers (jobs/fleet.py); a missed beat is renewed
        at the next one, and the row outlives a lease."""
        try:
            with self.db.write() as conn:
                fleet.beat(conn, self.worker_id, self.models, self.concurrency)
        except Exception as exc:
            if not is_transient(exc):
                log.exception("renewing the worker's registration failed")

    # -- one job ---------------------------------------------------------------------------
    def _end(self, job: Job, final: Job | None) -> None:
        """The job has left this worker (finished, given back or lost): metrics and log."""
        with self._lock:
            self._running.pop(job.id, None)
            self._prepared.discard(job.id)
        status = final.status if final is not None else job.status
        if status in states.TERMINAL:
            JOBS_FINISHED.labels(job.model, job.engine, status).inc()
        if final is not None and final.status == states.FAILED:
            JOBS_FAILED.labels(job.engine, final.error_code or "unknown").inc()
        if status == states.COMPLETED:
            END_TO_END_SECONDS.labels(job.model, job.engine).observe(
                max(0.0, time.time() - job.created_at)
            )
        started = job.started_at or job.created_at
        log.info("job %s: %s after %.2fs", job.id, status, max(0.0, time.time() - started))

    def _finish(self, prepared: Prepared, result: EngineResult) -> Job | None:
        """Post-process and complete; returns the job as the database now holds it (None:
        this worker lost it, and whoever holds it now finishes it)."""
        job = prepared.job
        # Cancelled while its outputs waited: no scoring, no storing (and, asked later, the
        # completion's guard refuses it: no charge either way).
        prepared.hooks.check_cancelled()
        scores = self._retrying(
            lambda: self.post.consistency(prepared, result), "scoring consistency"
        )
        stored = self.post.store_outputs(job, result, scores)
        # Completed (charged, its webhook queued) only now that every output is stored.
        outcome = self.completions.submit(Finished(job, stored, len(result.images)))
        mine = stored_keys(stored)
        if not (isinstance(outcome, Job) and stored_keys(outcome.result) == mine):
            # Not completed with these files (cancelled meanwhile, or another attempt's
            # completion stands): they are this attempt's own keys, referenced by nothing.
            discard(self.storage, mine)
        if outcome is NotCompleted.CANCELLED:
            raise JobCancelled()
        if outcome is NotCompleted.LEASE_LOST:
            log.warning("job %s: lease lost before completion; result dropped", job.id)
            return None
        return outcome if isinstance(outcome, Job) else None

    def _settle_error(self, job: Job, exc: Exception) -> Job | None:
        """The job's outcome for a failure at any stage: cancelled, retried or failed."""
        if isinstance(exc, JobCancelled):
            return self.db.retry_write(
                lambda conn: job_store.fail(
                    conn,
                    job,
                    self.worker_id,
                    "cancelled",
                    "cancelled by the owner",
                    states.STOP_CANCELLED,
                ),
                f"cancelling job {job.id}",
                self._give_up,
            )
        if isinstance(exc, JobFailure):
            return self._handle_failure(job, exc)
        if isinstance(exc, StorageError):  # outputs not stored (none left) or inputs unread
            log.error("job %s: storage failed: %s (%s)", job.id, exc, exc.__cause__)
            return self._handle_failure(job, JobFailure("storage_failed", str(exc), True))
        if isinstance(exc, MemoryError):
            return self._handle_failure(
                job, JobFailure("out_of_memory", "the engine ran out of memory")
            )
        if isinstance(exc, LookupError):
            return self._handle_failure(job, JobFailure("engine_misconfigured", str(exc)))
        log.error("job %s: engine error", job.id, exc_info=exc)
        return self._handle_failure(job, failure_of(exc))

    def _complete_batch(self, batch: Sequence[Finished]) -> list[Completion]:
        """Complete the jobs that finished at the same moment in one transaction (group commit,
        store/group_commit.py); each comes back completed, or as why not (``NotCompleted``).

        The same transaction claims the next jobs for the slots it frees (and any idle ones),
        so under load a job costs one transaction in the worker, not two; their threads
        find them ready when they look for work.
        """
        with self._claim_lock:
            with self._lock:
                # Jobs being completed were handed to post-processing: not in _prepared.
                free = self.capacity - len(self._prepared)
            prefer = self._all_preferred() if free > 0 else []
            held = self._held_per_account([item.job for item in batch]) if free > 0 else None

            def complete(conn: sa.Connection) -> tuple[list[Completion], list[Job]]:
                completed = job_store.complete_many(
                    conn,
                    self.worker_id,
                    [(item.job, item.result, item.delivered) for item in batch],
                )
                outcomes = [
                    done if done is not None else self._not_completed(conn, item.job)
                    for item, done in zip(batch, completed, strict=True)
                ]
                claimed: list[Job] = []
                if free > 0 and not self._stopping.is_set():
                    self._maintain_if_due(conn)
                    claimed = job_store.claim_many(
                        conn,
                        self.worker_id,
                        self.settings.lease_seconds,
                        free,
                        models=self.models,
                        prefer=prefer,
                        held=held,
                    )
                return outcomes, claimed

            # Retried as a whole: a run that failed was rolled back, claims included.
            outcomes, claimed = self.db.retry_write(complete, "completing jobs", self._give_up)
            self._take_in(claimed, free, takers=len(batch))
        return outcomes

    def _not_completed(self, conn: sa.Connection, job: Job) -> Completion:
        """Why the guard refused to complete ``job`` (cancelled meanwhile, or its lease went
        to another worker), or the job itself if it is COMPLETED
        already: a retry after a commit whose acknowledgement was lost finds its own work
        done (or the next lease holder's, which is as good)."""
        current = job_store.find_job(conn, job.id)
        if current is not None and current.status == states.COMPLETED:
            return current
        if current is not None and current.cancel_requested:
            return NotCompleted.CANCELLED
        return NotCompleted.LEASE_LOST

    def _complete_one(self, item: Finished) -> Completion:
        return self._complete_batch([item])[0]

    def _handle_failure(self, job: Job, failure: JobFailure) -> Job | None:
        if failure.retryable and job.attempts < self.settings.max_attempts:
            delay = failure.retry_after
            if delay is None:
                delay = self.settings.retry_base_seconds * 2 ** (job.attempts - 1)
            log.info("job %s: retry in %.1fs (%s)", job.id, delay, failure.message)
            return self.db.retry_write(
                lambda conn: job_store.requeue(conn, job, self.worker_id, delay, failure.message),
                f"requeueing job {job.id}",
                self._give_up,
            )
        return self.db.retry_write(
            lambda conn: job_store.fail(conn, job, self.worker_id, failure.code, failure.message),
            f"failing job {job.id}",
            self._give_up,
        )

    def _retrying(self, work: Callable[[], T], what: str) -> T:
        """``work()`` again after transient database failures (it reads, never writes)."""
        return self.db.retry(work, what, self._give_up)

    def _engine_request(self, job: Job) -> tuple[EngineRequest, Loaded | None]:
        """The engine's request, and the character reference as read (for face scoring)."""
        spec = MODELS[job.model]
        inputs = self.inputs.for_job(job, spec, self.settings.reference_max_side)
        return build_request(job.model, job.params, inputs.engine), inputs.character


def served_models(models: Sequence[str] | None) -> list[str] | None:
    """The models a worker serves, checked against the catalog (None: every model)."""
    if not models:
        return None
    names = sorted({name.strip() for name in models if name.strip()})
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise ValueError(
            f"the worker cannot serve {', '.join(unknown)}: not in the catalog "
            "(see GET /v2/models for the model ids)"
        )
    return names or None


def build_request(model: str, params: dict[str, Any], inputs: EngineInputs) -> EngineRequest:
    """Pure: a job's params (catalog/base.py's common keys and the model's own) and its
    loaded inputs -> the model-neutral engine request. A mask edit keeps its image's size."""
    width, height = int(params["width"]), int(params["height"])
    if inputs.editing and inputs.image is not None:
        width, height = inputs.image.size
    return EngineRequest(
        model=model,
        prompt=params["prompt"],
        negative_prompt=params.get("negative_prompt"),
        seed=int(params["seed"]),
        num_images=int(params.get("num_images") or 1),
        width=width,
        height=height,
        inputs=inputs,
        params=MappingProxyType(params),
    )
