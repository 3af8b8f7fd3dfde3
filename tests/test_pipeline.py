"""The pipelined worker's guarantees, on the real database (SQLite and PostgreSQL) with real
workers: completion only after storage; a job cancelled while its outputs are post-processed
is not charged; a worker that dies with outputs waiting is taken over and the job charged
once; the post-processing queue blocks the engine instead of growing; one engine instance
and one call at a time per device; the same seed gives the same bytes in every format; the
reference's descriptor is computed once for many jobs.

Storage is wrapped so a test can hold output writes at a gate: that is where post-processing
is, and where faults are injected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from castframe.dispatch.character_faces import sidecar_key
from castframe.dispatch.worker import Worker
from castframe.media.images import decode_image
from castframe.media.storage import Storage
from castframe.store.tables import jobs, uploads
from tests.conftest import Api, body_for, open_api
from tests.support.device_engines import CountingEngine, DeviceEngine
from tests.support.images import astronaut_png
from tests.support.jobs import entries
from tests.support.polling import eventually

COUNTING = "tests.support.device_engines:CountingEngine"
DEVICES = "tests.support.device_engines:DeviceEngine"
WAIT = 30.0


def output_files(api: Api, job_id: str) -> list[str]:
    """The names of the job's files under the local storage's outputs folder."""
    root = api.services.storage.root / "outputs"  # type: ignore[attr-defined]
    return sorted(path.name for path in root.rglob(f"{job_id}-*"))


class GatedStorage:
    """Real storage whose output writes wait at a gate while it is closed (``entered`` says
    one arrived), or fail while ``failing`` is set."""

    def __init__(self, real: Storage) -> None:
        self.real = real
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.failing = False
        self.waiting = 0
        self._lock = threading.Lock()

    def close_gate(self) -> None:
        self.open.clear()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.startswith("outputs/"):
            if self.failing:
                raise OSError("the disk is full")
            with self._lock:
                self.waiting += 1
            self.entered.set()
            self.open.wait()
            with self._lock:
                self.waiting -= 1
        self.real.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        return self.real.get(key)

    def exists(self, key: str) -> bool:
        return self.real.exists(key)

    def delete(self, key: str) -> None:
        self.real.delete(key)

    def url(self, key: str, ttl: int) -> str:
        return self.real.url(key, ttl)


@contextmanager
def running_worker(
    api: Api,
    storage: Storage,
    concurrency: int = 1,
    silent: bool = False,
    **overrides: Any,
) -> Iterator[Worker]:
    """A real worker (its own threads, the app's database and engines) over ``storage``;
    ``silent``: without a heartbeat, as a killed worker's leases are never extended."""
    services = api.services
    settings = services.settings.model_copy(update=overrides)
    worker = Worker(
        settings,
        services.db,
        storage,
        services.engines,
        services.job_notifier,
        concurrency,
        settings.worker_device_list,
    )
    if silent:
        worker._heartbeat = lambda: None  # type: ignore[method-assign]
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(grace=10)


def upload(api: Api, key: str) -> str:
    response = api.client.post(
        "/v2/uploads",
        headers={"X-API-Key": key},
        files={"file": ("astronaut.png", astronaut_png(), "image/png")},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["reference"])


def submit(api: Api, key: str, reference: str, count: int, **params: Any) -> list[str]:
    ids = []
    for index in range(count):
        response = api.generate(key, body_for(reference, seed=index, **params))
        assert response.status_code == 202, response.text
        ids.append(response.json()["jobId"])
    return ids


def status(api: Api, job_id: str) -> str:
    with api.services.db.read() as conn:
        return str(conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar())


@pytest.fixture
def counting_api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    CountingEngine.calls = 0
    with open_api(
        tmp_path, database_url, run_worker=False, routes="ideogram-character=" + COUNTING
    ) as api:
        yield api


def test_a_job_completes_and_is_charged_only_after_its_outputs_are_stored(
    counting_api: Api,
) -> None:
    api = counting_api
    key = api.key()
    gated = GatedStorage(api.services.storage)
    gated.close_gate()
    with running_worker(api, gated):
        [job_id] = submit(api, key, upload(api, key), 1, num_images=2)
        assert gated.entered.wait(WAIT)
        # Its outputs are being stored: not completed, nothing captured, no webhook row.
        assert status(api, job_id) == "PROCESSING"
        assert set(entries(api, job_id)) == {"hold"}
        gated.open.set()
        done = api.wait(key, job_id)
    assert done["status"] == "COMPLETED"
    assert entries(api, job_id)["capture"] == entries(api, job_id)["hold"] > 0
    for url in done["result"]["images"]:
        assert decode_image(api.file(url), max_bytes=1 << 24, max_pixels=1 << 24).width == 32


def test_a_job_whose_outputs_cannot_be_stored_is_not_completed_or_charged(
    counting_api: Api,
) -> None:
    api = counting_api
    key = api.key()
    gated = GatedStorage(api.services.storage)
    gated.failing = True
    with running_worker(api, gated):
        [job_id] = submit(api, key, upload(api, key), 1)
        done = api.wait(key, job_id)
    assert done["status"] == "FAILED"
    assert "disk is full" in done["error"]
    assert set(entries(api, job_id)) == {"hold", "release"}


def test_a_job_cancelled_while_its_outputs_are_post_processed_is_not_charged(
    counting_api: Api,
) -> None:
    api = counting_api
    key = api.key()
    gated = GatedStorage(api.services.storage)
    gated.close_gate()
    with running_worker(api, gated):
        [job_id] = submit(api, key, upload(api, key), 1)
        assert gated.entered.wait(WAIT)
        answer = api.client.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "PROCESSING"  # running: stopped at its next check
        gated.open.set()
        done = api.wait(key, job_id)
    assert (done["status"], done["errorCode"]) == ("CANCELLED", "cancelled")
    assert set(entries(api, job_id)) == {"hold", "release"}
    eventually(lambda: output_files(api, job_id) == [], "its stored outputs to be deleted")


def test_a_worker_that_dies_with_outputs_waiting_is_taken_over_and_charged_once(
    counting_api: Api,
) -> None:
    """Worker A runs the engine and then goes silent with the outputs in post-processing (no
    heartbeat, as after SIGKILL). Its lease expires, worker B takes the job over and completes
    it. When A's stored outputs finally reach its completion, the lease guard refuses it: the
    job is charged once, by B."""
    api = counting_api
    key = api.key()
    stuck = GatedStorage(api.services.storage)
    stuck.close_gate()
    settings = {"lease_seconds": 1.0, "poll_interval": 0.1}
    with running_worker(api, stuck, silent=True, **settings) as dead:
        [job_id] = submit(api, key, upload(api, key), 1)
        assert stuck.entered.wait(WAIT)
        dead._stopping.set()  # and claims nothing more: only its stuck outputs live on
        with running_worker(api, api.services.storage, **settings) as alive:
            done = api.wait(key, job_id)
            assert done["status"] == "COMPLETED"
            with api.services.db.read() as conn:
                owner, attempts = conn.execute(
                    sa.select(jobs.c.lease_owner, jobs.c.attempts).where(jobs.c.id == job_id)
                ).one()
            assert attempts == 2
            assert owner in (None, alive.worker_id)
        stuck.open.set()  # the dead worker's outputs are stored; its completion is refused
        eventually(lambda: stuck.waiting == 0 and dead.busy == 0, "the dead worker to let go")
    charges = entries(api, job_id)
    assert charges == {"hold": charges["hold"], "capture": charges["hold"]}
    assert api.get_job(key, job_id)["status"] == "COMPLETED"
    # A's outputs went under its own attempt's keys, and it deleted them: B's files stand.
    with api.services.db.read() as conn:
        result = conn.execute(sa.select(jobs.c.result).where(jobs.c.id == job_id)).scalar_one()
    kept = sorted(image["key"].rsplit("/", 1)[1] for image in result["images"])
    assert kept and all(f"{job_id}-a2-" in name for name in kept)
    eventually(lambda: output_files(api, job_id) == kept, "A's own outputs to be deleted")


def test_the_post_processing_queue_blocks_the_engine_instead_of_growing(
    counting_api: Api,
) -> None:
    """One lane, at most one job waiting for post-processing: with storage stuck, the engine
    runs the job being stored and the one waiting to be handed over, and no third."""
    api = counting_api
    key = api.key()
    gated = GatedStorage(api.services.storage)
    gated.close_gate()
    with running_worker(api, gated, postprocess_queue=1) as worker:
        ids = submit(api, key, upload(api, key), 5)
        eventually(lambda: CountingEngine.calls == 2, "two engine calls")
        lane = worker._lanes[0]
        eventually(lambda: lane.bound._value == 0, "the lane's bound to be used up")  # type: ignore[attr-defined]
        time.sleep(0.5)  # room for a third engine call, were the queue unbounded
        assert CountingEngine.calls == 2
        assert worker._pool.busy == 1
        queued = [job_id for job_id in ids if status(api, job_id) == "QUEUED"]
        assert len(queued) >= 2  # not hoarded by the stuck worker either
        gated.open.set()
        finished = [api.wait(key, job_id) for job_id in ids]
    assert [job["status"] for job in finished] == ["COMPLETED"] * 5
    assert CountingEngine.calls == 5


def test_a_worker_with_two_devices_runs_one_engine_per_device_in_parallel(
    tmp_path: Path, database_url: str
) -> None:
    DeviceEngine.reset()
    with open_api(
        tmp_path, database_url, run_worker=False, routes="ideogram-character=" + DEVICES
    ) as api:
        key = api.key()
        with running_worker(api, api.services.storage, worker_devices="dev:0,dev:1") as worker:
            assert worker.concurrency == 2
            ids = submit(api, key, upload(api, key), 8)
            finished = [api.wait(key, job_id) for job_id in ids]
    assert [job["status"] for job in finished] == ["COMPLETED"] * 8, [
        job["error"] for job in finished
    ]
    # One instance per device; both devices ran jobs, and met at the barrier (so they ran
    # at the same time); never two calls on one device at once.
    assert sorted(DeviceEngine.instances, key=str) == ["dev:0", "dev:1"]
    assert set(DeviceEngine.calls) == {"dev:0", "dev:1"}
    assert sum(DeviceEngine.calls.values()) == 8
    assert DeviceEngine.most_at_once == {"dev:0": 1, "dev:1": 1}
    devices = {job["result"]["metadata"]["device"] for job in finished}
    assert devices == {"dev:0", "dev:1"}


def test_devices_setting_and_its_parsing(counting_api: Api) -> None:
    settings = counting_api.services.settings.model_copy(update={"worker_devices": " a, ,b "})
    assert settings.worker_device_list == ["a", "b"]


def test_the_same_seed_gives_byte_identical_files_in_every_format(api_sqlite: Api) -> None:
    """Through the whole path (sandbox engine, the worker's encoding, storage, file URLs)."""
    api = api_sqlite
    key = api.key()
    reference = upload(api, key)
    files: dict[str, list[bytes]] = {}
    for output_format, content_type in (
        ("png", "image/png"),
        ("webp", "image/webp"),
        ("jpeg", "image/jpeg"),
    ):
        for _ in range(2):
            body = body_for(reference, seed=77, top={"output_format": output_format})
            job = api.submit_and_wait(key, body)
            assert job["status"] == "COMPLETED", job["error"]
            [url] = job["result"]["images"]
            [details] = job["result"]["imageDetails"]
            assert details["contentType"] == content_type
            extension = "jpg" if output_format == "jpeg" else output_format
            assert url.split("?")[0].endswith(f".{extension}")
            data = api.file(url)
            assert decode_image(data, max_bytes=1 << 25, max_pixels=1 << 25).content_type == (
                content_type
            )
            files.setdefault(output_format, []).append(data)
    for output_format, (first, again) in files.items():
        assert first == again, output_format
    other = api.submit_and_wait(key, body_for(reference, seed=78))
    assert api.file(other["result"]["images"][0]) != files["png"][0]


@pytest.mark.parametrize(
    ("body_params", "field"),
    [
        ({"top": {"output_format": "gif"}}, "output_format"),
        ({"output_format": "tiff"}, "ideogramParams.output_format"),
        ({"output_format": "png", "top": {"output_format": "webp"}}, ""),
    ],
)
def test_output_format_is_validated(
    api_sqlite: Api, body_params: dict[str, Any], field: str
) -> None:
    key = api_sqlite.key()
    response = api_sqlite.generate(key, body_for("https://example.com/a.png", **body_params))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request" or body["code"]
    if field:
        assert field in body["details"], body


def test_many_jobs_of_one_upload_compute_its_descriptor_once(api_sqlite: Api) -> None:
    api = api_sqlite
    worker = api.services.worker
    assert worker is not None and api.services.settings.faces_enabled
    key = api.key()
    reference = upload(api, key)
    finished = [api.wait(key, job_id) for job_id in submit(api, key, reference, 3)]
    assert [job["status"] for job in finished] == ["COMPLETED"] * 3
    verdicts = [job["result"]["imageDetails"][0]["consistency"] for job in finished]
    assert all(verdict["sameCharacter"] for verdict in verdicts), verdicts
    assert worker.characters.computed == 1
    with api.services.db.read() as conn:
        storage_key = conn.execute(sa.select(uploads.c.storage_key)).scalar()
    assert api.services.storage.exists(sidecar_key(str(storage_key)))


def test_a_drain_finishes_what_the_engine_produced_and_gives_back_the_rest(
    counting_api: Api,
) -> None:
    """SIGTERM's path (``Worker.stop``) with the pipeline full: the outputs being stored and
    the finished job waiting for them are stored and completed; the job prepared for the
    engine, never run, goes back to the queue uncharged, as do the ones never claimed."""
    api = counting_api
    key = api.key()
    gated = GatedStorage(api.services.storage)
    gated.close_gate()
    services = api.services
    settings = services.settings.model_copy(update={"postprocess_queue": 1})
    worker = Worker(settings, services.db, gated, services.engines, services.job_notifier, 1)
    # Queued before the worker starts: a lane whose prefetch found the queue empty does not
    # claim again until its blocked hand-over lets it loop, and the test would race that.
    ids = submit(api, key, upload(api, key), 4)
    worker.start()
    eventually(lambda: CountingEngine.calls == 2, "two engine calls")
    eventually(lambda: worker.busy == 3, "a third job prepared")
    stopper = threading.Thread(target=worker.stop, kwargs={"grace": 20})
    stopper.start()
    gated.open.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert CountingEngine.calls == 2
    assert [status(api, job_id) for job_id in ids] == ["COMPLETED", "COMPLETED", "QUEUED", "QUEUED"]
    for job_id in ids[:2]:
        assert set(entries(api, job_id)) == {"hold", "capture"}
    for job_id in ids[2:]:
        assert set(entries(api, job_id)) == {"hold"}
    assert worker.busy == 0
