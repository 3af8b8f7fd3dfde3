"""The worker's pipeline: the engine call is the critical path, everything else overlaps it.

A worker has lanes: one per device (``castframe worker --devices cuda:0,cuda:1``), or, with no
devices named, one per slot of ``CASTFRAME_WORKER_CONCURRENCY`` (remote engines such as
``ideogram`` need several calls in flight). Each lane's thread does only this:

    take the job prepared meanwhile ─▶ start preparing the next one (claim, fetch, decode,
    in the input pool) ─▶ run the engine ─▶ hand the outputs to the post-processing pool

and the post-processing pool (``PostPool``) scores, encodes and stores them and then
completes the job (the worker's group commit: charge and webhook only after storage). A lane
may have at most ``CASTFRAME_POSTPROCESS_QUEUE`` jobs handed over and not yet finished; the
next hand-over blocks the lane's engine until one finishes, so memory stays bounded (about
4.5 MiB per waiting 1024x1024 image: 3 MiB of pixels and its encoded file) rather than
growing with a slow disk or a slow database.

The worker (dispatch/worker.py) owns every database write, lease and outcome; this module
only moves jobs between threads, through the narrow ``Stages`` interface.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from castframe.dispatch.postprocess import Prepared
from castframe.engines.base import EngineResult
from castframe.engines.router import EngineRegistry
from castframe.jobs.record import Job

log = logging.getLogger("castframe.worker")

POST_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Failed:
    """A claimed job whose preparation failed: settled by the lane (nothing to run)."""

    job: Job
    error: Exception


class Stages(Protocol):
    """What a lane needs from the worker."""

    def prepare_next(self, engines: EngineRegistry | None = None) -> Prepared | Failed | None:
        """Claim a job and load its inputs (None: the queue had nothing for this worker).
        ``engines``: the asking lane's (its claims prefer the models they hold)."""

    def run_engine(self, prepared: Prepared, engines: EngineRegistry) -> EngineResult:
        """The engine call (raises as the engine does)."""

    def post_process(self, prepared: Prepared, result: EngineResult) -> None:
        """Score, encode, store, complete; settles every outcome itself."""

    def handed_over(self, prepared: Prepared) -> None:
        """The job was queued for post-processing: the lane holds it no longer."""

    def settle(self, job: Job, error: Exception) -> None:
        """Record a job's failure (or cancellation) and let it go."""

    def idle_wait(self) -> None:
        """Wait for work (a wake-up or the poll interval)."""

    @property
    def stopping(self) -> bool: ...


class PostPool:
    """Threads that post-process finished jobs, with a bound per lane (module doc).

    The queue itself is unbounded; each lane's semaphore bounds what it may have in it, so a
    slow lane never blocks another's hand-overs and the pool never holds more than
    ``lanes x per_lane`` jobs.
    """

    def __init__(self, threads: int, work: Callable[[Prepared, EngineResult], None]) -> None:
        self._work = work
        self._queue: queue.Queue[tuple[threading.Semaphore, Prepared, EngineResult]] = queue.Queue()
        self._closing = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"castframe-worker-post-{index}", daemon=True)
            for index in range(threads)
        ]
        self._busy = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def hand_over(
        self, bound: threading.Semaphore, prepared: Prepared, result: EngineResult
    ) -> None:
        """Queue a finished job; blocks while its lane has its limit waiting."""
        bound.acquire()
        with self._lock:
            self._busy += 1
        self._queue.put((bound, prepared, result))

    @property
    def busy(self) -> int:
        """Jobs handed over and not yet finished (for the group commit's linger)."""
        with self._lock:
            return self._busy

    def close(self) -> None:
        """Finish what was handed over, then let the threads end."""
        self._closing.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:  # started (a worker stopped unstarted has none)
                thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while True:
            try:
                bound, prepared, result = self._queue.get(timeout=POST_POLL_SECONDS)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            try:
                self._work(prepared, result)
            except Exception:  # the work settles its own outcomes; this is a bug's last net
                log.exception("job %s: post-processing crashed", prepared.job.id)
            finally:
                with self._lock:
                    self._busy -= 1
                bound.release()


class Lane:
    """One engine's thread: at most one engine call at a time (one device), the next job
    prepared in the input pool meanwhile, outputs handed to the post-processing pool."""

    def __init__(
        self,
        name: str,
        stages: Stages,
        engines: EngineRegistry,
        inputs: ThreadPoolExecutor,
        post: PostPool,
        post_limit: int,
    ) -> None:
        self.name = name
        self.stages = stages
        self.engines = engines
        self.inputs = inputs
        self.post = post
        self.bound = threading.BoundedSemaphore(post_limit)
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        stages = self.stages
        pending: Future[Prepared | Failed | None] | None = None
        while not stages.stopping:
            if pending is not None:
                item = pending.result()
                pending = None
            else:
                item = stages.prepare_next(self.engines)
            if item is None:
                stages.idle_wait()
                continue
            if isinstance(item, Failed):
                stages.settle(item.job, item.error)
                continue
            if not stages.stopping:
                # The next job's claim and inputs overlap this job's engine call.
                pending = self.inputs.submit(stages.prepare_next, self.engines)
            try:
                result = stages.run_engine(item, self.engines)
            except Exception as exc:
                stages.settle(item.job, exc)
                continue
            self.post.hand_over(self.bound, item, result)
            stages.handed_over(item)
        if pending is not None:
            # Stopping: a job prepared but never run stays leased to this worker, and
            # ``Worker.stop`` gives it back to the queue.
            pending.result()
