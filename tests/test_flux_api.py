"""The FLUX models through the API, on SQLite and PostgreSQL: Apiframe's answers for every
variant (the sandbox behind test keys: sizes honoured, outpaint grows the canvas, output
deterministic), and the ``bfl`` engine behind live keys against the fake BFL server (what
it refuses, moderation not charged, a job whose worker died mid-poll resumed by its recorded
task id with no second submission)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from castframe.dispatch.upstream import JobUpstream
from castframe.engines.base import EngineRequest
from castframe.engines.bfl import BflEngine
from castframe.jobs import store as job_store
from tests.conftest import Api, make_api, open_api
from tests.support.apiframe_schemas import JOB, JOB_ACCEPTED, MODEL_CATALOG, violations
from tests.support.fake_bfl import FakeBfl
from tests.support.images import astronaut_png, data_uri

GENERATE = ["flux-1.1-pro", "flux-1.1-pro-ultra", "flux-2-pro", "flux-2-flex", "flux-2-max"]


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def edit(api: Api, key: str, body: dict[str, Any]) -> Any:
    return api.client.post("/v2/images/edit", json=body, headers=auth(key))


def image_of(api: Api, job: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(api.file(job["result"]["images"][0])))


def small_png() -> bytes:
    image = Image.open(io.BytesIO(astronaut_png())).resize((256, 192))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(size: tuple[int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))  # white: the left half is repainted
    buffer = io.BytesIO()
    mask.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("model_id", GENERATE)
def test_each_flux_model_answers_apiframes_shapes_and_honours_sizes(
    api: Api, model_id: str
) -> None:
    key = api.key(mode="test")
    block: dict[str, Any] = {"output_format": "jpg"}
    if model_id == "flux-1.1-pro-ultra":
        block["aspect_ratio"] = "21:9"
    else:
        block.update(width=512, height=384)
    response = api.generate(
        key,
        {"model": model_id, "prompt": "a red boat on a lake", "fluxParams": {**block, "seed": 5}},
    )
    assert response.status_code == 202, response.text
    assert violations(JOB_ACCEPTED, response.json()) == []
    job = api.wait(key, response.json()["jobId"])
    assert violations(JOB, job) == [] and job["status"] == "COMPLETED", job
    picture = image_of(api, job)
    assert picture.format == "JPEG"
    if model_id == "flux-1.1-pro-ultra":
        assert abs(picture.size[0] / picture.size[1] - 21 / 9) < 0.02
    else:
        assert picture.size == (512, 384)


def test_the_same_seed_gives_the_same_image(api: Api) -> None:
    key = api.key(mode="test")
    body = {
        "model": "flux-2-pro",
        "prompt": "a red boat",
        "fluxParams": {"seed": 11, "width": 256, "height": 256, "output_format": "png"},
    }
    first = api.submit_and_wait(key, body)
    second = api.submit_and_wait(key, body)
    assert api.file(first["result"]["images"][0]) == api.file(second["result"]["images"][0])


def test_outpaint_really_extends_the_canvas_and_inpaint_keeps_the_size(api: Api) -> None:
    key = api.key(mode="test")
    source = small_png()
    response = edit(
        api,
        key,
        {
            "model": "flux-fill-pro",
            "fluxFillParams": {
                "mode": "outpaint",
                "outpaint": "Zoom out 2x",
                "prompt": "a wide field",
                "image": data_uri(source),
                "output_format": "png",
                "seed": 3,
            },
        },
    )
    assert response.status_code == 202, response.text
    assert violations(JOB_ACCEPTED, response.json()) == []
    job = api.wait(key, response.json()["jobId"])
    assert job["status"] == "COMPLETED" and violations(JOB, job) == []
    grown = image_of(api, job)
    assert grown.size == (512, 384)
    kept = np.asarray(grown.convert("RGB"))[96:288, 128:384]
    assert (
        np.abs(
            kept.astype(int) - np.asarray(Image.open(io.BytesIO(source)).convert("RGB")).astype(int)
        ).mean()
        < 2
    )
    response = edit(
        api,
        key,
        {
            "model": "flux-fill-pro",
            "fluxFillParams": {
                "mode": "inpaint",
                "prompt": "a night sky",
                "image": data_uri(source),
                "mask": data_uri(mask_png((256, 192))),
                "output_format": "png",
            },
        },
    )
    job = api.wait(key, response.json()["jobId"])
    painted = np.asarray(image_of(api, job).convert("RGB")).astype(int)
    original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB")).astype(int)
    assert painted.shape == original.shape
    assert (painted[:, 140:] == original[:, 140:]).all()  # black (kept) half untouched
    assert np.abs(painted[:, :100] - original[:, :100]).mean() > 10  # white half repainted


def test_edit_refuses_other_models_and_bad_fill_bodies(api_no_worker: Api) -> None:
    key = api_no_worker.key(mode="test")
    wrong = edit(api_no_worker, key, {"model": "flux-2-pro", "prompt": "x"})
    assert wrong.status_code == 400 and wrong.json()["code"] == "unknown_model"
    bad = edit(
        api_no_worker,
        key,
        {
            "model": "flux-fill-pro",
            "fluxFillParams": {
                "mode": "inpaint",
                "prompt": "x",
                "image": "https://example.com/a.png",
            },
        },
    )
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"
    sized = api_no_worker.generate(
        key, {"model": "flux-1.1-pro", "prompt": "x", "fluxParams": {"width": 1600, "height": 512}}
    )
    assert sized.status_code == 400 and sized.json()["code"] == "validation_error"
    assert "256 to 1440" in sized.text and "fluxParams" in sized.json()["details"]


def test_models_lists_the_flux_family_with_prices(api_no_worker: Api) -> None:
    response = api_no_worker.client.get("/v2/models", headers=auth(api_no_worker.key()))
    assert response.status_code == 200 and violations(MODEL_CATALOG, response.json()) == []
    models = {entry["id"]: entry for entry in response.json()["models"]}
    assert {*GENERATE, "flux-fill-pro"} <= set(models)
    assert models["flux-1.1-pro"]["costMin"] == 4 and models["flux-fill-pro"]["costMin"] == 5
    assert models["flux-2-pro"]["costMin"] == 3


# -- the bfl engine behind live keys ---------------------------------------------------------


@pytest.fixture
def fake_bfl() -> Iterator[FakeBfl]:
    server = FakeBfl(pending_polls=1)
    yield server
    server.close()


def bfl_settings(fake_bfl: FakeBfl) -> dict[str, Any]:
    return {
        "bfl_api_key": fake_bfl.api_key,
        "bfl_base_url": fake_bfl.base_url,
        "bfl_retry_base": 0.01,
        "bfl_poll_interval": 0.02,
    }


@pytest.fixture
def bfl_api(tmp_path: Path, database_url: str, fake_bfl: FakeBfl) -> Iterator[Api]:
    yield from make_api(tmp_path, database_url, **bfl_settings(fake_bfl))


def test_live_jobs_run_at_bfl_and_store_the_result(bfl_api: Api, fake_bfl: FakeBfl) -> None:
    key = bfl_api.key(credits=100)
    job = bfl_api.submit_and_wait(
        key,
        {
            "model": "flux-1.1-pro",
            "prompt": "a boat",
            "fluxParams": {"width": 512, "height": 512, "output_format": "jpg"},
        },
    )
    assert job["status"] == "COMPLETED" and violations(JOB, job) == []
    assert job["engine"] == "bfl"
    (submit,) = fake_bfl.submits("/v1/flux-pro-1.1")
    assert submit.body is not None and submit.body["width"] == 512
    url = job["result"]["images"][0]
    assert fake_bfl.base_url not in url  # a Castframe URL, never BFL's
    assert image_of(bfl_api, job).size == (512, 512)
    me = bfl_api.client.get("/v2/me", headers=auth(key)).json()
    assert me["team"]["credits"] == 96  # charged BFL's FLUX1.1 [pro] price: 4 credits


def test_what_a_route_lacks_is_a_400_naming_bfl(bfl_api: Api, fake_bfl: FakeBfl) -> None:
    key = bfl_api.key()
    response = bfl_api.generate(
        key, {"model": "flux-2-pro", "prompt": "x", "fluxParams": {"steps": 20}}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "unsupported_parameter"
    assert "bfl" in response.json()["error"] and "fluxParams.steps" in response.json()["details"]
    assert fake_bfl.submits() == []


def test_moderation_fails_the_job_uncharged(bfl_api: Api, fake_bfl: FakeBfl) -> None:
    fake_bfl.outcomes.append("content-moderated")
    key = bfl_api.key(credits=100)
    job = bfl_api.submit_and_wait(key, {"model": "flux-2-max", "prompt": "x"})
    assert job["status"] == "FAILED" and job.get("errorCode") == "content_filtered"
    with bfl_api.services.db.read() as conn:
        stored = job_store.find_job(conn, job["id"])
    assert stored is not None and stored.charged == 0


class Killed(BaseException):
    """A worker process dying: nothing after it runs."""


class DyingHooks:
    """The hooks of a worker that dies while it polls BFL."""

    def __init__(self, upstream: JobUpstream, fake_bfl: FakeBfl) -> None:
        self.upstream = upstream
        self.fake = fake_bfl

    def progress(self, percent: int) -> None:
        return None

    def check_cancelled(self) -> None:
        if self.fake.polls():
            raise Killed()


def test_a_worker_killed_mid_poll_is_resumed_without_a_second_submission(
    tmp_path: Path, database_url: str, fake_bfl: FakeBfl
) -> None:
    fake_bfl.outcomes.append("hold")
    body = {"model": "flux-2-pro", "prompt": "a boat", "fluxParams": {"width": 512, "height": 512}}
    with open_api(tmp_path, database_url, run_worker=False, **bfl_settings(fake_bfl)) as api:
        key = api.key(credits=100)
        job_id = api.generate(key, body).json()["jobId"]
        db = api.services.db
        with db.write() as conn:
            claimed = job_store.claim(conn, "doomed-worker", lease_seconds=0.5)
        assert claimed is not None and claimed.id == job_id
        params = claimed.params
        request = EngineRequest(
            model=claimed.model,
            prompt=params["prompt"],
            negative_prompt=None,
            seed=params["seed"],
            num_images=1,
            width=params["width"],
            height=params["height"],
            params=params,
        )
        engine = BflEngine(
            api_key=fake_bfl.api_key,
            base_url=fake_bfl.base_url,
            download=lambda url: b"",
            poll_interval=0.01,
        )
        upstream = JobUpstream(db, claimed, "doomed-worker", "bfl")
        with pytest.raises(Killed):
            engine.generate(request, DyingHooks(upstream, fake_bfl))
        with db.read() as conn:
            recorded = job_store.upstream_state(conn, job_id)
        assert recorded is not None and recorded["phase"] == "submitted"
    fake_bfl.release.set()
    time.sleep(0.6)  # the dead worker's lease runs out
    with open_api(tmp_path, database_url, **bfl_settings(fake_bfl)) as api:
        job = api.wait(key, job_id)
    assert job["status"] == "COMPLETED", job
    assert len(fake_bfl.submits()) == 1  # resumed by the recorded id, never submitted again


def test_cancelling_a_live_job_stops_polling_bfl(bfl_api: Api, fake_bfl: FakeBfl) -> None:
    fake_bfl.outcomes.append("hold")
    key = bfl_api.key(credits=100)
    job_id = bfl_api.generate(key, {"model": "flux-2-pro", "prompt": "x"}).json()["jobId"]
    deadline = time.monotonic() + 30
    while not fake_bfl.polls() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_bfl.polls(), "the job never reached BFL"
    response = bfl_api.client.post(f"/v2/jobs/{job_id}/cancel", headers=auth(key))
    assert response.status_code in (200, 202), response.text
    job = bfl_api.wait(key, job_id)
    assert job["status"] == "CANCELLED"
    polled = len(fake_bfl.polls())
    time.sleep(0.3)
    assert len(fake_bfl.polls()) == polled  # nothing polls any more
    assert len(fake_bfl.submits()) == 1


def test_input_images_and_match_input_image_through_the_api(api: Api) -> None:
    key = api.key(mode="test")
    body = {
        "model": "flux-2-flex",
        "prompt": "the same scene at night",
        "fluxParams": {
            "input_images": [data_uri(small_png()), data_uri(small_png())],
            "resolution": "match_input_image",
            "output_format": "png",
        },
    }
    job = api.submit_and_wait(key, body)
    assert job["status"] == "COMPLETED" and violations(JOB, job) == []
    assert image_of(api, job).size == (256, 192)


def test_without_a_bfl_key_live_flux_jobs_run_on_the_sandbox(api: Api) -> None:
    key = api.key(credits=100)
    job = api.submit_and_wait(
        key,
        {"model": "flux-1.1-pro", "prompt": "a boat", "fluxParams": {"width": 256, "height": 256}},
    )
    assert job["status"] == "COMPLETED" and job["engine"] == "sandbox"
    assert image_of(api, job).size == (256, 256)
