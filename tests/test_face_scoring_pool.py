"""Face scoring in worker processes (faces/pool.py): the same answers as in the worker's own
process, for real pictures; processes that die (SIGKILL) or hang are replaced and the image
scored, or the job retried and never completed or charged without its scores; closing never
hangs. Then through a real worker on SQLite and PostgreSQL.

Faults are injected inside the scoring process (tests/support/scoring_faults.py), at the
moment a marker file says, never by timing.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import threading
from collections.abc import Iterator
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data

from castframe.dispatch.worker import Worker
from castframe.errors import JobFailure
from castframe.faces import consistency
from castframe.faces.identity import Face, FaceModel
from castframe.faces.pool import FacePool, auto_processes
from tests.conftest import Api, body_for, open_api
from tests.support import scoring_faults
from tests.support.images import astronaut, astronaut_png, data_uri, no_face_image
from tests.support.jobs import entries, images_of
from tests.support.polling import eventually

WAIT = 60.0


@pytest.fixture
def pool() -> Iterator[FacePool]:
    made = FacePool(2)
    yield made
    made.close()


def pictures() -> dict[str, np.ndarray]:
    """Real pictures through each of the model's paths: a small one (upsampled detection), a
    1024x1024 one (resized to 800 first), a mirrored one, a grey one of another person, and
    one without a face."""
    big = cv2.resize(astronaut(), (1024, 1024), interpolation=cv2.INTER_LINEAR)
    gray = cv2.resize(data.camera(), None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    return {
        "astronaut": astronaut(),
        "astronaut 1024": big,
        "mirrored": np.ascontiguousarray(big[:, ::-1]),
        "cameraman": np.stack([gray] * 3, axis=-1),
        "no face": no_face_image(256),
    }


def same_faces(found: list[Face], expected: list[Face]) -> bool:
    return len(found) == len(expected) and all(
        a.box == b.box and a.score == b.score and np.array_equal(a.descriptor, b.descriptor)
        for a, b in zip(found, expected, strict=True)
    )


def test_the_pool_gives_the_in_process_faces_and_verdicts(model: FaceModel, pool: FacePool) -> None:
    images = pictures()
    expected = model.faces_many(list(images.values()))
    found = pool.faces_many(list(images.values()))  # spread over both processes
    assert [len(faces) for faces in found] == [len(faces) for faces in expected]
    assert len(found[0]) > 0 and found[-1] == []
    for name, got, want in zip(images, found, expected, strict=True):
        assert same_faces(got, want), name
    reference = model.main_face(astronaut())
    pooled_reference = pool.main_face(astronaut())
    assert reference is not None and pooled_reference is not None
    assert np.array_equal(reference.descriptor, pooled_reference.descriptor)
    verdicts = [consistency(reference.descriptor, faces) for faces in expected]
    assert [consistency(pooled_reference.descriptor, faces) for faces in found] == verdicts
    assert verdicts[1]["sameCharacter"] is True and verdicts[-1]["faceDetected"] is False
    # One model per process, reused: two processes for all of it.
    assert pool.started == 2 and pool.lost == 0


def test_the_model_s_own_errors_are_raised_as_in_process_and_the_process_kept(
    model: FaceModel,
) -> None:
    hostile = np.zeros((64, 64, 4), np.uint8)  # 4 channels: dlib refuses it
    with pytest.raises(RuntimeError) as in_process:
        model.faces(hostile)
    made = FacePool(1)
    try:
        with pytest.raises(RuntimeError) as pooled:
            made.faces_many([astronaut(), hostile])
        assert str(pooled.value) == str(in_process.value)
        [pid] = made.pids
        assert same_faces(made.faces(astronaut()), model.faces(astronaut()))
        assert made.pids == [pid] and made.lost == 0
    finally:
        made.close()


def test_an_idle_process_killed_is_replaced(model: FaceModel) -> None:
    made = FacePool(1)
    try:
        made.faces(no_face_image(64))
        [pid] = made.pids
        os.kill(pid, signal.SIGKILL)
        assert same_faces(made.faces(astronaut()), model.faces(astronaut()))
        assert made.pids and made.pids != [pid]
        assert made.started == 2
    finally:
        made.close()


def test_a_process_killed_mid_image_is_replaced_and_the_image_scored(
    model: FaceModel, tmp_path: Path
) -> None:
    marker = tmp_path / "die"
    marker.touch()
    made = FacePool(1, finder=functools.partial(scoring_faults.dies_once, str(marker)))
    try:
        images = [astronaut(), no_face_image(128)]
        found = made.faces_many(images)
        assert not marker.exists()  # it did die, mid-image
        for got, want in zip(found, model.faces_many(images), strict=True):
            assert same_faces(got, want)
        assert made.lost == 1 and made.started == 2
    finally:
        made.close()


def test_a_process_that_keeps_dying_fails_the_attempt_retryably(tmp_path: Path) -> None:
    made = FacePool(2, finder=functools.partial(scoring_faults.always_dies, str(tmp_path / "x")))
    try:
        with pytest.raises(JobFailure) as failure:
            made.faces_many([astronaut(), astronaut()])
        assert failure.value.code == "internal_error" and failure.value.retryable
        # Each image tried on a second, fresh process before giving up; the pool still works
        # for the next job (fresh processes again).
        assert made.lost == 4
        with pytest.raises(JobFailure):
            made.faces(astronaut())
    finally:
        made.close()


def test_a_hung_process_is_killed_and_replaced(model: FaceModel, tmp_path: Path) -> None:
    marker = tmp_path / "hang"
    marker.touch()
    made = FacePool(
        1, finder=functools.partial(scoring_faults.hangs_once, str(marker)), timeout=5.0
    )
    try:
        assert same_faces(made.faces(astronaut()), model.faces(astronaut()))
        assert not marker.exists() and made.lost == 1
    finally:
        made.close()


def test_close_kills_a_busy_process_and_its_caller_gets_a_retryable_failure(
    tmp_path: Path,
) -> None:
    started = tmp_path / "started"
    made = FacePool(1, finder=functools.partial(scoring_faults.hangs, str(started)))
    outcome: list[BaseException] = []

    def score() -> None:
        try:
            made.faces(astronaut())
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=score)
    caller.start()
    eventually(started.exists, "the scoring to start")
    [pid] = made.pids
    made.close(timeout=0.2)
    caller.join(WAIT)
    assert not caller.is_alive()
    [failure] = outcome
    assert isinstance(failure, JobFailure) and failure.retryable
    assert made.pids == [] or not any(
        slot.process and slot.process.is_alive() for slot in made.slots
    )
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    with pytest.raises(JobFailure):  # a closed pool takes nothing more
        made.faces(astronaut())


def test_a_process_that_cannot_be_started_is_tried_again(
    model: FaceModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = SpawnProcess.start
    refused: list[int] = []

    def start(process: SpawnProcess) -> None:
        if not refused:  # the first start: out of processes
            refused.append(1)
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        real_start(process)

    monkeypatch.setattr(SpawnProcess, "start", start)
    made = FacePool(1)
    try:
        assert same_faces(made.faces(astronaut()), model.faces(astronaut()))
        assert refused and made.lost == 1 and made.started == 1
    finally:
        made.close()


def test_closing_an_unused_pool_starts_nothing() -> None:
    made = FacePool(3)
    made.close()
    assert made.started == 0 and made.pids == []


def test_the_default_size_leaves_a_cpu_to_the_worker() -> None:
    assert [auto_processes(cpus) for cpus in (1, 2, 3, 4, 8, 64)] == [2, 2, 2, 3, 4, 4]
    assert FacePool.for_settings(0, True) is None
    assert FacePool.for_settings(2, False) is None
    made = FacePool.for_settings(2, True)
    assert made is not None and len(made.slots) == 2 and made.started == 0


# -- through a real worker ------------------------------------------------------------------


def worker_of(api: Api) -> Worker:
    worker = api.services.worker
    assert worker is not None
    return worker


def run_job(api: Api, key: str, seed: int = 5) -> dict[str, Any]:
    return api.submit_and_wait(key, body_for(data_uri(astronaut_png()), seed=seed))


def scores(job: dict[str, Any]) -> list[Any]:
    return [image["consistency"] for image in images_of(job)]


def test_a_worker_scores_in_its_pool_as_in_process_and_survives_a_killed_process(
    tmp_path: Path, database_url: str
) -> None:
    with open_api(tmp_path / "in", database_url) as api:
        assert worker_of(api).face_pool is None  # the tests' default: in-process
        key = api.key()
        in_process = run_job(api, key)
    with open_api(tmp_path / "pool", database_url, face_processes=1) as api:
        pool = worker_of(api).face_pool
        assert pool is not None
        key = api.key()
        pooled = run_job(api, key)
        assert pooled["status"] == "COMPLETED" and scores(pooled) == scores(in_process)
        assert scores(pooled)[0]["sameCharacter"] is True
        [pid] = pool.pids
        os.kill(pid, signal.SIGKILL)
        again = run_job(api, key)
        assert again["status"] == "COMPLETED" and scores(again) == scores(in_process)
        assert pool.pids and pool.pids != [pid]
        worker = worker_of(api)
    # The app's shutdown stopped the worker, and the worker its pool.
    assert worker.face_pool is not None and not any(
        slot.process is not None and slot.process.is_alive() for slot in worker.face_pool.slots
    )


def test_a_job_whose_scoring_process_dies_is_scored_by_another_and_charged_once(
    tmp_path: Path, database_url: str
) -> None:
    marker = tmp_path / "die"
    marker.touch()
    with open_api(tmp_path, database_url, face_processes=1) as api:
        pool = worker_of(api).face_pool
        assert pool is not None and pool.started == 0  # started on first use
        pool.finder = functools.partial(scoring_faults.dies_once, str(marker))
        key = api.key()
        done = run_job(api, key)
        assert done["status"] == "COMPLETED"
        assert not marker.exists() and pool.lost == 1
        assert scores(done)[0]["sameCharacter"] is True
        ledger = entries(api, done["id"])
        assert ledger["capture"] == ledger["hold"] > 0 and "release" not in ledger


def test_a_job_whose_scoring_keeps_dying_is_retried_then_failed_and_not_charged(
    tmp_path: Path, database_url: str
) -> None:
    with open_api(tmp_path, database_url, face_processes=1, max_attempts=2) as api:
        pool = worker_of(api).face_pool
        assert pool is not None
        pool.finder = functools.partial(scoring_faults.always_dies, str(tmp_path / "x"))
        key = api.key()
        done = run_job(api, key)
        assert done["status"] == "FAILED" and done["errorCode"] == "internal_error"
        assert pool.lost == 2 * 2  # two attempts, each image on two processes
        ledger = entries(api, done["id"])
        assert set(ledger) == {"hold", "release"} and ledger["release"] == ledger["hold"]
        stored = [path for path in (tmp_path / "data").rglob("*") if "outputs" in path.parts]
        assert not [path for path in stored if path.is_file()]  # nothing stored
