"""Live job status: one shared reader per process for every listener of every job.

Event streams (``GET /v2/jobs/{id}/events``) and ``Prefer: wait`` submissions used to read
their job every 0.25 s (0.1 s) each, in the thread pool: 300 streams on one queued job were
1,200 reads a second that said nothing new, and the pool they filled was the one every other
request waits for. Now a listener registers interest in a job id (``JobWatcher.watch``) and
waits on an asyncio event; one reader thread per process reads jobs only when told they
changed, all the changed watched jobs in one query, and hands the same job view to all of
their listeners:

- *told* by the wake-ups the job store already publishes at commit (store/notify.py:
  ``JOB_CHANGES_CHANNEL`` with the job ids; this process's writes directly, other processes'
  through PostgreSQL NOTIFY, services.py);
- and, because a notice can be missed (SQLite with a separate ``castframe worker`` has no
  NOTIFY; a listener connection that dropped), every ``reread_seconds`` the reader reads all
  watched jobs in one query anyway. A job with no listeners is never read.

A listener is handed a view only when its job's row changed (or once, when it is new: the
view it started from may be older than what the reader knows). Views are shared: read-only.
Bounds per API key and per process (``too_many_listeners`` 429, ``listeners_exhausted`` 503)
keep a client from holding the process's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from castframe.errors import ApiError
from castframe.jobs import store as job_store
from castframe.jobs.record import Job
from castframe.store.db import Database
from castframe.store.notify import ANY

log = logging.getLogger("castframe.watch")

RETRY_AFTER_SECONDS = 5
"""Retry-After of the bounds' refusals: a listener is freed when its job ends or its client
leaves, which is seconds for most jobs."""
READ_FAILURE_PAUSE = 0.5
"""Pause after a failed read before the reader tries again (the database is down)."""
MAX_PAYLOAD_IDS = 4096
"""Most ids taken from one NOTIFY payload (ours carry ~210); beyond: treated as ``ANY``."""

View = dict[str, Any]


class Watch:
    """One listener's interest in one job: ``next`` waits for the job's newer views.

    Created by ``JobWatcher.watch`` on the listener's event loop; ``close`` (idempotent)
    frees its slot. Only the newest undelivered view is kept: a slow listener skips
    intermediate progress, never the final state, and never holds more than one view.
    """

    def __init__(self, watcher: JobWatcher, job_id: str, key_id: str) -> None:
        self.job_id = job_id
        self.key_id = key_id
        self.gone = False
        """The job no longer exists (deleted while watched)."""
        self.fresh = True
        """Not yet handed a view by the reader (set and cleared under the watcher's lock)."""
        self._watcher = watcher
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._latest: View | None = None
        self._closed = False
        self.draining = False
        """The server is shutting down (``JobWatcher.drain``): stop waiting and answer now."""

    async def next(self, timeout: float) -> View | None:
        """The job's newest view since the last call, or None after ``timeout`` seconds
        without one (or once the job is ``gone``, or the server is ``draining``)."""
        if self._latest is None and not self.gone and not self.draining:
            try:
                await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
            except TimeoutError:
                return None
        self._event.clear()
        view, self._latest = self._latest, None
        return view

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._watcher._unwatch(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _drain(self) -> None:
        """On the listener's loop: the server is shutting down; wake the waiter."""
        self.draining = True
        self._event.set()

    def _deliver(self, view: View | None) -> None:
        """On the listener's loop: keep the newest view (None: the job is gone)."""
        if view is None:
            self.gone = True
        else:
            self._latest = view
        self._event.set()


class JobWatcher:
    """The process's one reader of watched jobs (see the module's notes).

    ``watch`` registers a listener (on an event loop); ``notice`` (any thread) says which
    jobs changed; a daemon thread, started with the first listener, does the reading.
    """

    def __init__(
        self,
        db: Database,
        view: Callable[[Job], dict[str, Any]],
        per_key: int,
        total: int,
        reread_seconds: float,
    ) -> None:
        self.db = db
        self.view = view
        self.per_key = per_key
        self.total = total
        self.reread_seconds = reread_seconds
        self._lock = threading.Lock()
        self._watches: dict[str, set[Watch]] = {}
        self._known: dict[str, Job] = {}
        """The last row read of each watched job: a listener is handed only changes."""
        self._per_key: dict[str, int] = {}
        self._count = 0
        self._dirty: set[str] = set()
        self._all_dirty = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.draining = False
        """Set by ``drain``: no new listeners; the current ones have been woken."""
        self.reads = 0
        """Read transactions made (for tests and benchmarks)."""
        self.rereads = 0
        """Of them, the slow re-reads of every watched job that fell due."""

    # -- listeners ---------------------------------------------------------------------------
    @property
    def listeners(self) -> int:
        return self._count

    def listeners_of(self, key_id: str) -> int:
        return self._per_key.get(key_id, 0)

    def watch(self, job_id: str, key_id: str) -> Watch:
        """Register a listener of ``job_id`` for the API key ``key_id``; call on the event loop
        that will wait, after checking that the key may see the job (nothing here does).

        Raises 429 ``too_many_listeners`` past the key's bound, 503 ``listeners_exhausted``
        past the process's.
        """
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        with self._lock:
            if self.draining:
                raise ApiError(
                    "listeners_exhausted",
                    "this server is shutting down; poll GET /v2/jobs/{id} or retry in "
                    f"{RETRY_AFTER_SECONDS}s",
                    headers=retry,
                )
            if self._per_key.get(key_id, 0) >= self.per_key:
                raise ApiError(
                    "too_many_listeners",
                    f"this API key already holds {self.per_key} live-status listeners here; "
                    f"close one or retry in {RETRY_AFTER_SECONDS}s",
                    headers=retry,
                )
            if self._count >= self.total:
                raise ApiError(
                    "listeners_exhausted",
                    f"this server holds its {self.total} live-status listeners; retry in "
                    f"{RETRY_AFTER_SECONDS}s or poll GET /v2/jobs/{{id}}",
                    headers=retry,
                )
            watch = Watch(self, job_id, key_id)
            self._watches.setdefault(job_id, set()).add(watch)
            self._per_key[key_id] = self._per_key.get(key_id, 0) + 1
            self._count += 1
            # Read it once for the newcomer: it may have changed since the caller read it.
            self._dirty.add(job_id)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="castframe-watch", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return watch

    def _unwatch(self, watch: Watch) -> None:
        with self._lock:
            watches = self._watches.get(watch.job_id)
            if watches is None or watch not in watches:
                return
            watches.discard(watch)
            if not watches:
                del self._watches[watch.job_id]
                self._known.pop(watch.job_id, None)
            left = self._per_key[watch.key_id] - 1
            if left:
                self._per_key[watch.key_id] = left
            else:
                del self._per_key[watch.key_id]
            self._count -= 1

    def drain(self) -> None:
        """The server is shutting down (SIGTERM): every listener stops waiting at once, so a
        ``Prefer: wait`` submission is answered 202 with its job, and an event stream ends,
        before the server's graceful-shutdown timeout cuts their connections; new listeners
        are refused. From any thread."""
        with self._lock:
            self.draining = True
            watches = [watch for group in self._watches.values() for watch in group]
        by_loop: dict[asyncio.AbstractEventLoop, list[Watch]] = {}
        for watch in watches:
            by_loop.setdefault(watch._loop, []).append(watch)
        for loop, group in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its listeners are gone
                loop.call_soon_threadsafe(_drain_all, group)

    # -- wake-ups ----------------------------------------------------------------------------
    def notice(self, job_ids: Iterable[str]) -> None:
        """These jobs changed (``ANY``: some jobs did); from any thread, after their commit.
        Nothing is done for jobs nobody watches."""
        if not self._watches:  # the common case on a busy worker: one dict check
            return
        with self._lock:
            for job_id in job_ids:
                if job_id == ANY:
                    self._all_dirty = True
                elif job_id in self._watches:
                    self._dirty.add(job_id)
            woken = self._all_dirty or bool(self._dirty)
        if woken:
            self._wake.set()

    def notice_payload(self, payload: str) -> None:
        """A NOTIFY payload from another process: comma-joined ids, or ``ANY``."""
        if not self._watches:
            return
        ids = payload.split(",", MAX_PAYLOAD_IDS)
        if len(ids) > MAX_PAYLOAD_IDS:
            ids = [ANY]
        self.notice(ids)

    # -- the reader --------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(3)

    def _run(self) -> None:
        next_full = time.monotonic() + self.reread_seconds
        while not self._stopping.is_set():
            self._wake.wait(max(0.0, next_full - time.monotonic()))
            self._wake.clear()  # before taking the dirty set: a later notice wakes us again
            if self._stopping.is_set():
                return
            now = time.monotonic()
            with self._lock:
                due = now >= next_full
                self.rereads += due
                full = self._all_dirty or due
                if full:
                    ids = list(self._watches)
                    next_full = now + self.reread_seconds
                else:
                    ids = [job_id for job_id in self._dirty if job_id in self._watches]
                self._dirty.clear()
                self._all_dirty = False
            if ids and not self._refresh(ids):
                with self._lock:
                    self._dirty.update(ids)
                self._stopping.wait(READ_FAILURE_PAUSE)
                self._wake.set()

    def _refresh(self, job_ids: list[str]) -> bool:
        """Read ``job_ids`` in one transaction and hand their listeners what changed; False
        if the read failed (listeners keep waiting: their streams send keep-alives)."""
        try:
            with self.db.read() as conn:
                found = {job.id: job for job in job_store.find_jobs(conn, job_ids)}
        except Exception as exc:
            if not self._failing:  # once per outage, not every READ_FAILURE_PAUSE
                log.warning("live status: reading %d watched jobs failed (%s)", len(job_ids), exc)
            self._failing = True
            return False
        finally:
            self.reads += 1
        if self._failing:
            self._failing = False
            log.info("live status: reading watched jobs works again")
        handed: list[tuple[Job | None, list[Watch]]] = []
        with self._lock:
            for job_id in job_ids:
                watches = self._watches.get(job_id)
                if not watches:
                    continue
                job = found.get(job_id)
                # A heartbeat moves only the lease: not a change a listener can see.
                seen = None if job is None else job.replace(lease_expires_at=None)
                if seen is not None and self._known.get(job_id) == seen:
                    targets = [watch for watch in watches if watch.fresh]
                else:
                    targets = list(watches)
                if seen is not None:
                    self._known[job_id] = seen
                for watch in targets:
                    watch.fresh = False
                if targets:
                    handed.append((job, targets))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Watch, View | None]]] = {}
        for job, targets in handed:
            view = None if job is None else self.view(job)
            for watch in targets:
                by_loop.setdefault(watch._loop, []).append((watch, view))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its listeners are gone
                loop.call_soon_threadsafe(_deliver_all, items)
        return True


def _deliver_all(items: list[tuple[Watch, View | None]]) -> None:
    for watch, view in items:
        watch._deliver(view)


def _drain_all(watches: list[Watch]) -> None:
    for watch in watches:
        watch._drain()
