"""Face detection and descriptors in a small pool of worker processes.

Why processes: dlib holds the GIL while it works (about 0.22 s of CPU for one 1024x1024
output), so scoring in the worker's own threads caps a worker at ~4.5 images/s and stalls the
lanes' other threads (claims, input loading, encoding) whenever it runs. Each process here
has its own interpreter, so scoring runs beside the worker instead of inside its GIL.

How:

- Processes are started with the ``spawn`` context: the worker is threaded, and forking a
  threaded process can copy a lock another thread held. Each process is started on first use
  (a worker that never scores starts none) and loads the face model once, reused for every
  job after. Start-up measured on the 2-core development machine: ~0.8 s per process, almost
  all of it importing dlib and loading its models (docs/faces.md).
- A process takes one image at a time over a pipe (a 1024x1024 image pickles to 3 MiB, a few
  milliseconds) and answers with the ``Face`` list, so the verdict computed from it in the
  worker is exactly the in-process one (``consistency`` is pure and runs in the caller).
- One slot per process: a caller takes an idle slot, sends, waits, gives it back. The images
  of one job go to as many slots as are idle at once, never blocking for a second slot while
  one is held (no caller can wait for another's slot while holding its own).
- A process that dies mid-image (killed, out of memory, a crash in dlib) or does not answer
  within ``timeout`` is replaced and the image sent again, once; a second loss raises a
  retryable ``JobFailure`` (``internal_error``), so the job is queued again with backoff and
  never completed (nor charged) without its scores.
- ``close`` stops idle processes, waits a moment for busy ones, then kills what is left, so a
  worker's shutdown never hangs on a scoring.

Memory stays bounded: at most one image per process is in flight, and the post-processing
pool bounds how many jobs wait (``CASTFRAME_POSTPROCESS_QUEUE``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from castframe.errors import JobFailure
from castframe.faces.identity import Face, face_model, faces_available

log = logging.getLogger("castframe.faces")

MAX_AUTO_PROCESSES = 4
SCORE_TIMEOUT_SECONDS = 120.0
"""How long one image may take before its process is taken for hung (dlib needs ~0.2 s)."""
START_TIMEOUT_SECONDS = 120.0
"""How long a new process may take to load its model (~0.8 s) before it is given up."""
ATTEMPTS_PER_IMAGE = 2
"""An image is sent to a fresh process once after its process died."""
CLOSE_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.2

Finder = Callable[[np.ndarray], list[Face]]


MIN_AUTO_PROCESSES = 2
"""One scoring process is a queue of its own: an image costs it ~0.28 s of CPU, so alone it
cannot keep up with an engine at 250 ms per image even with a core to spare (measured on 2
cores: 68-74% duty with one process, 100% with two; docs/performance.md)."""


def auto_processes(cpus: int | None = None) -> int:
    """The default pool size: one CPU left to the worker itself, at least 2 (see
    ``MIN_AUTO_PROCESSES``) and at most 4 processes."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(MIN_AUTO_PROCESSES, min(MAX_AUTO_PROCESSES, (cpus or 1) - 1))


def find_faces(rgb: np.ndarray) -> list[Face]:
    """What a scoring process runs: the process's own model (loaded when it started)."""
    model = face_model()
    if model is None:  # the parent checked ``faces_available``; an install changed under it
        raise RuntimeError("the faces extra is not installed in the scoring process")
    return model.faces(rgb)


def _load_model() -> None:
    """A scoring process's start-up: its own face model, loaded once."""
    if face_model() is None:
        raise RuntimeError("the faces extra is not installed in the scoring process")


def _serve(conn: Connection, finder: Finder) -> None:
    """A scoring process's loop: the model loaded and "ready" said, then an image in, its
    faces (or the exception) out, until told to stop or the worker's end of the pipe closes
    (the worker exited)."""
    # Ctrl-C reaches the whole process group: the worker decides when its pool stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _load_model()
        conn.send(("ready", None))
    except Exception as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", finder(task))
        except Exception as exc:  # the caller raises it, as the in-process call would
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # an exception that does not pickle
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


class ProcessLost(Exception):
    """The slot's process died or hung while working on an image."""


class _Slot:
    """One scoring process and its end of the pipe; used by one caller at a time."""

    def __init__(self, pool: FacePool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def ensure_started(self) -> Connection:
        if self.pool.closing:
            raise ProcessLost("the pool is closed")
        if self.process is not None and self.process.is_alive() and self.conn is not None:
            return self.conn
        self.discard()
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve,
            args=(theirs, self.pool.finder),
            name=f"castframe-faces-{self.index}",
            daemon=True,
        )
        try:
            process.start()
        except OSError as exc:  # out of processes or memory: like a death, retried
            mine.close()
            theirs.close()
            raise ProcessLost(f"could not start a scoring process: {exc}") from exc
        theirs.close()  # the child's end lives in the child only: its death is our EOF
        self.process, self.conn = process, mine
        self.pool.count("started")
        # Start-up (~0.8 s, longer on a loaded machine) is not counted as an image's time.
        status, value = self._answer(START_TIMEOUT_SECONDS, "start")
        if status != "ready":
            self.discard()
            raise ProcessLost(f"the scoring process could not start: {value}")
        return mine

    def send(self, pixels: np.ndarray) -> None:
        conn = self.ensure_started()
        try:
            conn.send(np.ascontiguousarray(pixels))
        except (EOFError, OSError) as exc:
            raise ProcessLost(str(exc)) from exc

    def receive(self, timeout: float) -> list[Face]:
        status, value = self._answer(timeout, "answer")
        if status == "error":
            raise value
        faces: list[Face] = value
        return faces

    def _answer(self, timeout: float, what: str) -> tuple[str, Any]:
        """The process's next message, or ProcessLost if it dies or is silent too long."""
        conn = self.conn
        assert conn is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if conn.poll(POLL_SECONDS):
                    message: tuple[str, Any] = conn.recv()
                    return message
            except (EOFError, OSError) as exc:
                raise ProcessLost("the scoring process died") from exc
            if self.process is None or not self.process.is_alive():
                raise ProcessLost("the scoring process died")
            if time.monotonic() > deadline:
                raise ProcessLost(f"the scoring process did not {what} within {timeout:.0f} s")

    def discard(self) -> None:
        """Kill the process (if any) and forget it: the next use starts a fresh one."""
        process, conn = self.process, self.conn
        self.process = self.conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(1.0)

    def stop(self, timeout: float) -> None:
        """Ask the process to exit, then kill it if it has not within ``timeout``."""
        if self.conn is not None:
            with contextlib.suppress(EOFError, OSError):
                self.conn.send(None)
        if self.process is not None:
            self.process.join(timeout)
        self.discard()


class FacePool:
    """``FaceModel``'s ``faces``/``main_face``, computed in worker processes (module doc).

    Thread-safe: the worker's post-processing threads share one pool.
    """

    def __init__(
        self,
        processes: int,
        finder: Finder = find_faces,
        timeout: float = SCORE_TIMEOUT_SECONDS,
    ) -> None:
        if processes < 1:
            raise ValueError("a face pool needs at least one process")
        self.finder = finder
        self.timeout = timeout
        self.slots = [_Slot(self, index) for index in range(processes)]
        self._idle: queue.Queue[_Slot] = queue.Queue()
        for slot in self.slots:
            self._idle.put(slot)
        self._closing = threading.Event()
        self._counts = threading.Lock()
        self.started = 0
        """Processes started so far (replacements included)."""
        self.lost = 0
        """Processes that died or hung while working."""

    def count(self, what: str) -> None:
        """One more process ``started`` or ``lost`` (callers are threads)."""
        with self._counts:
            setattr(self, what, getattr(self, what) + 1)

    @classmethod
    def for_settings(cls, processes: int | None, faces_enabled: bool) -> FacePool | None:
        """The worker's pool, or None to score in the worker's own process: faces off, the
        extra not installed, or ``CASTFRAME_FACE_PROCESSES=0``."""
        if not faces_enabled or not faces_available():
            return None
        count = auto_processes() if processes is None else processes
        return cls(count) if count > 0 else None

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    @property
    def pids(self) -> list[int]:
        """The live processes' ids (for operators and tests)."""
        return [pid for slot in self.slots if (pid := slot.pid) is not None]

    def faces(self, rgb: np.ndarray) -> list[Face]:
        return self.faces_many([rgb])[0]

    def main_face(self, rgb: np.ndarray) -> Face | None:
        found = self.faces(rgb)
        return found[0] if found else None

    def faces_many(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Every image's faces, in order, spread over the idle processes. An image whose
        process was lost is sent again on a fresh one (once); an error raised for one image
        is raised once the others' answers are read, so no process is left mid-answer."""
        results: list[list[Face]] = [[] for _ in images]
        pending = deque(range(len(images)))
        attempts = [0] * len(images)
        in_flight: deque[tuple[_Slot, int]] = deque()
        error: BaseException | None = None
        try:
            while in_flight or (pending and error is None):
                while pending and error is None:
                    slot = self._take(block=not in_flight)
                    if slot is None:
                        break
                    index = pending.popleft()
                    try:
                        slot.send(images[index])
                    except ProcessLost as exc:
                        error = self._lost(slot, index, attempts, exc)
                        self._give_back(slot)
                        if error is None:
                            pending.appendleft(index)
                        continue
                    in_flight.append((slot, index))
                if not in_flight:
                    continue
                slot, index = in_flight.popleft()
                try:
                    results[index] = slot.receive(self.timeout)
                except ProcessLost as exc:
                    failure = self._lost(slot, index, attempts, exc)
                    if failure is None:
                        pending.appendleft(index)
                    error = error or failure
                except Exception as exc:  # the model's own error, as in-process
                    error = error or exc
                finally:
                    self._give_back(slot)
        except BaseException:
            for slot, _ in in_flight:  # their answers would be read by the next caller
                slot.discard()
                self._give_back(slot)
            raise
        if error is not None:
            raise error
        return results

    def close(self, timeout: float = CLOSE_GRACE_SECONDS) -> None:
        """Stop every process: idle ones at once; busy ones get ``timeout`` to finish their
        image, then are killed (their caller's job is then retried, never completed)."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        stopped = 0
        while stopped < len(self.slots):
            try:
                slot = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            slot.stop(max(0.1, deadline - time.monotonic()))
            stopped += 1
        for slot in self.slots:  # still busy after the grace: killed; its caller, seeing
            process = slot.process  # the death, discards the slot and retries the job
            if process is not None and process.is_alive():
                process.kill()

    # -- internals ---------------------------------------------------------------------
    def _take(self, block: bool) -> _Slot | None:
        """An idle slot; waits for one only when ``block`` (the caller holds none)."""
        while True:
            self._check_open()
            try:
                return self._idle.get(timeout=POLL_SECONDS) if block else self._idle.get_nowait()
            except queue.Empty:
                if not block:
                    return None

    def _give_back(self, slot: _Slot) -> None:
        self._idle.put(slot)

    def _lost(
        self, slot: _Slot, index: int, attempts: list[int], exc: ProcessLost
    ) -> JobFailure | None:
        """The slot's process is gone: it is replaced on next use. None: send the image
        again; a failure: the job is given up for now (retried later with backoff)."""
        self.count("lost")
        slot.discard()
        attempts[index] += 1
        if self._closing.is_set():
            return self._shutting_down()
        log.warning("face scoring process %d lost (%s); starting another", slot.index, exc)
        if attempts[index] >= ATTEMPTS_PER_IMAGE:
            failure = JobFailure(
                "internal_error",
                "the face-scoring process died while scoring this job's images; "
                "the job will be retried",
                retryable=True,
            )
            failure.__cause__ = exc
            return failure
        return None

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise self._shutting_down()

    @staticmethod
    def _shutting_down() -> JobFailure:
        return JobFailure(
            "internal_error",
            "the worker shut down while scoring this job's images; the job will be retried",
            retryable=True,
        )
