"""The ``bfl`` engine against a fake of Black Forest Labs' API (a real loopback server).

Per model: the route, the ``x-key`` header and the exact JSON sent; polling to Ready; a result
link that expires; moderation; BFL's errors, 429s and timeouts; a job whose worker died
mid-poll resumed by its recorded task id with no second submission; cancellation.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from castframe.catalog.flux_fill import FLUX_FILL_PRO
from castframe.catalog.flux_models import FLUX_MODELS
from castframe.engines.base import EngineInputs, EngineRequest, InputImage, JobCancelled
from castframe.engines.bfl import BflEngine, check_params, request_body
from castframe.errors import JobFailure
from tests.support.fake_bfl import FakeBfl
from tests.support.images import astronaut

SPECS = {spec.id: spec for spec in (*FLUX_MODELS, FLUX_FILL_PRO)}


class WorkerKilled(BaseException):
    """What a killed worker looks like to the engine: it never returns."""


class Journal:
    """An in-memory stand-in for the worker's upstream journal (the database in production)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.fail = False

    def recorded(self) -> Mapping[str, Any] | None:
        return self.state

    def record(self, state: Mapping[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("database away")
        self.state = dict(state)
        self.history.append(dict(state))


class Hooks:
    def __init__(self, journal: Journal | None = None) -> None:
        self.upstream = journal or Journal()
        self.values: list[int] = []
        self.cancel = threading.Event()
        self.kill_on_poll = False
        self.polled = 0

    def progress(self, percent: int) -> None:
        self.values.append(percent)

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled()
        if self.kill_on_poll and self.upstream.state and self.upstream.state.get("id"):
            raise WorkerKilled()


@pytest.fixture
def bfl() -> Iterator[FakeBfl]:
    server = FakeBfl(pending_polls=2)
    yield server
    server.close()


def download(url: str) -> bytes:
    response = httpx.get(url, timeout=10)
    if response.status_code != 200:
        raise JobFailure("upstream_unavailable", f"HTTP {response.status_code}")
    return response.content


def engine_for(bfl: FakeBfl, **overrides: Any) -> BflEngine:
    options: dict[str, Any] = {
        "api_key": bfl.api_key,
        "base_url": bfl.base_url,
        "download": download,
        "retry_base": 0.01,
        "poll_interval": 0.01,
        "max_retries": 2,
    }
    options.update(overrides)
    return BflEngine(**options)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


PHOTO = InputImage(astronaut()[::4, ::4].copy(), png(astronaut()[::4, ::4].copy()))


def job(
    model: str, block: dict[str, Any], inputs: EngineInputs | None = None, seed: int = 7
) -> EngineRequest:
    """The engine request the worker builds for ``model`` with this params block."""
    spec = SPECS[model]
    if model == "flux-fill-pro":
        body = {"model": model, "fluxFillParams": block}
    else:
        body = {"model": model, "prompt": "a lighthouse at dawn", "fluxParams": block}
    params = spec.normalise(spec.request_model.model_validate(body))
    params["seed"] = seed
    return EngineRequest(
        model=model,
        prompt=params["prompt"],
        negative_prompt=None,
        seed=seed,
        num_images=1,
        width=params["width"],
        height=params["height"],
        inputs=inputs or EngineInputs(),
        params=params,
    )


# -- the exact JSON per route ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "block", "route", "expected"),
    [
        (
            "flux-1.1-pro",
            {"width": 512, "height": 512, "output_format": "jpg"},
            "/v1/flux-pro-1.1",
            {
                "prompt": "a lighthouse at dawn",
                "seed": 7,
                "output_format": "jpeg",
                "width": 512,
                "height": 512,
            },
        ),
        (
            "flux-1.1-pro",
            {"aspect_ratio": "16:9", "prompt_upsampling": True, "output_format": "png"},
            "/v1/flux-pro-1.1",
            {
                "prompt": "a lighthouse at dawn",
                "seed": 7,
                "output_format": "png",
                "width": 1376,
                "height": 768,
                "prompt_upsampling": True,
            },
        ),
        (
            "flux-1.1-pro-ultra",
            {"aspect_ratio": "21:9", "raw": True, "prompt_upsampling": False},
            "/v1/flux-pro-1.1-ultra",
            {
                "prompt": "a lighthouse at dawn",
                "seed": 7,
                "output_format": "jpeg",
                "aspect_ratio": "21:9",
                "raw": True,
                "prompt_upsampling": False,
            },
        ),
        (
            "flux-2-pro",
            {"aspect_ratio": "3:2", "resolution": "1MP", "prompt_upsampling": False},
            "/v1/flux-2-pro",
            {
                "prompt": "a lighthouse at dawn",
                "seed": 7,
                "output_format": "jpeg",
                "width": 1248,
                "height": 832,
                "disable_pup": True,
            },
        ),
        (
            "flux-2-flex",
            {"width": 768, "height": 1024, "steps": 30, "guidance": 4.5, "output_format": "webp"},
            "/v1/flux-2-flex",
            {
                "prompt": "a lighthouse at dawn",
                "seed": 7,
                "output_format": "webp",
                "width": 768,
                "height": 1024,
                "steps": 30,
                "guidance": 4.5,
            },
        ),
        (
            "flux-2-max",
            {},
            "/v1/flux-2-max",
            {
                "prompt": "a lighthouse at dawn",
                "seed": 7,
                "output_format": "jpeg",
                "width": 1024,
                "height": 1024,
            },
        ),
    ],
)
def test_each_route_gets_its_exact_json_and_the_key(
    bfl: FakeBfl, model: str, block: dict[str, Any], route: str, expected: dict[str, Any]
) -> None:
    engine = engine_for(bfl)
    request = job(model, block)
    result = engine.generate(request, Hooks())
    (submit,) = bfl.submits()
    assert submit.path == route
    assert submit.headers["x-key"] == bfl.api_key
    assert submit.body == expected
    assert all(call.headers["x-key"] == bfl.api_key for call in bfl.polls())
    assert len(bfl.polls()) == bfl.pending_polls + 1  # Pending, Pending, Ready
    (image,) = result.images
    assert image.pixels.shape[:2] == (request.height, request.width) or model.endswith("ultra")
    assert image.seed == 7
    assert result.metadata["engine"] == "bfl" and result.metadata["resumed"] is False


def test_ultra_output_is_its_four_megapixel_ratio(bfl: FakeBfl) -> None:
    request = job("flux-1.1-pro-ultra", {"aspect_ratio": "16:9"})
    image = engine_for(bfl).generate(request, Hooks()).images[0]
    height, width = image.pixels.shape[:2]
    assert (width, height) == (request.width, request.height)
    assert 3.8e6 < width * height < 4.4e6


def test_input_images_are_numbered_references_and_an_image_prompt_is_sent(bfl: FakeBfl) -> None:
    engine = engine_for(bfl)
    refs = EngineInputs(references=(PHOTO, PHOTO, PHOTO))
    request = job("flux-2-pro", {"input_images": ["upload://a", "upload://b", "upload://c"]}, refs)
    engine.generate(request, Hooks())
    body = bfl.submits()[0].body
    assert body is not None
    assert [key for key in body if key.startswith("input_image")] == [
        "input_image",
        "input_image_2",
        "input_image_3",
    ]
    assert base64.b64decode(body["input_image"]) == PHOTO.raw
    styled = EngineInputs(style_references=(PHOTO,))
    request = job(
        "flux-1.1-pro-ultra",
        {"image_prompt": "upload://a", "image_prompt_strength": 0.4},
        styled,
    )
    engine.generate(request, Hooks())
    body = bfl.submits()[1].body
    assert body is not None and base64.b64decode(body["image_prompt"]) == PHOTO.raw
    assert body["image_prompt_strength"] == 0.4


def test_match_input_image_sends_no_size_and_keeps_the_input_size(bfl: FakeBfl) -> None:
    refs = EngineInputs(references=(PHOTO,))
    request = job(
        "flux-2-flex", {"input_images": ["upload://a"], "resolution": "match_input_image"}, refs
    )
    result = engine_for(bfl).generate(request, Hooks())
    body = bfl.submits()[0].body
    assert body is not None and "width" not in body and "height" not in body
    assert result.images[0].pixels.shape == PHOTO.pixels.shape


# -- flux-fill-pro ---------------------------------------------------------------------------


def test_inpaint_sends_the_image_and_a_white_is_paint_mask(bfl: FakeBfl) -> None:
    pixels = PHOTO.pixels
    black_is_paint = np.zeros(pixels.shape[:2], bool)  # the worker's reading of a mask image
    black_is_paint[: pixels.shape[0] // 2] = True  # top half drawn black by the client
    inputs = EngineInputs(image=PHOTO, mask=black_is_paint)
    request = job(
        "flux-fill-pro",
        {
            "mode": "inpaint",
            "prompt": "a red sky",
            "image": "upload://a",
            "mask": "upload://b",
            "steps": 30,
            "guidance": 3,
            "safety_tolerance": 4,
        },
        inputs,
    )
    result = engine_for(bfl).generate(request, Hooks())
    body = bfl.submits("/v1/flux-pro-1.0-fill")[0].body
    assert body is not None
    assert set(body) == {
        "prompt",
        "seed",
        "image",
        "mask",
        "steps",
        "guidance",
        "safety_tolerance",
        "output_format",
    }
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L"))
    # fluxFillParams masks are white = paint: the client's white half (the bottom) is painted.
    assert (mask[pixels.shape[0] // 2 :] == 255).all() and (mask[: pixels.shape[0] // 2] == 0).all()
    assert result.images[0].pixels.shape == pixels.shape


@pytest.mark.parametrize(
    ("choice", "grows"),
    [("Zoom out 2x", (2.0, 2.0)), ("Left outpaint", (1.5, 1.0)), ("Make square", None)],
)
def test_outpaint_sends_a_larger_canvas_and_its_mask(
    bfl: FakeBfl, choice: str, grows: tuple[float, float] | None
) -> None:
    request = job(
        "flux-fill-pro",
        {"mode": "outpaint", "outpaint": choice, "prompt": "more sea", "image": "upload://a"},
        EngineInputs(image=PHOTO),
    )
    result = engine_for(bfl).generate(request, Hooks())
    body = bfl.submits()[0].body
    assert body is not None
    sent = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L"))
    height, width = PHOTO.pixels.shape[:2]
    if grows is None:
        assert sent.size[0] == sent.size[1] >= max(width, height)
    else:
        assert sent.size[0] >= width * grows[0] and sent.size[1] >= height * grows[1]
    assert mask.shape == (sent.size[1], sent.size[0])
    assert (mask == 0).sum() == width * height  # the image is kept, everything else painted
    assert result.images[0].pixels.shape[:2] == (sent.size[1], sent.size[0])


# -- refusals at submission --------------------------------------------------------------------


def test_fields_a_route_lacks_are_refused_naming_the_engine() -> None:
    request = job(
        "flux-1.1-pro",
        {"steps": 20, "raw": True, "output_quality": 80, "width": 512, "height": 512},
    )
    refused = dict(check_params("flux-1.1-pro", request.params))
    assert set(refused) == {"steps", "raw", "output_quality"}
    assert all(
        "bfl engine" in message and "/v1/flux-pro-1.1" in message for message in refused.values()
    )
    ultra = job("flux-1.1-pro-ultra", {"width": 1024, "height": 1024})
    assert {name for name, _ in check_params("flux-1.1-pro-ultra", ultra.params)} == {
        "width",
        "height",
    }
    pro2 = job(
        "flux-2-pro", {"steps": 20, "guidance": 3, "go_fast": True, "image_prompt": "upload://a"}
    )
    assert {name for name, _ in check_params("flux-2-pro", pro2.params)} == {
        "steps",
        "guidance",
        "go_fast",
        "image_prompt",
    }
    flex = job("flux-2-flex", {"steps": 20, "guidance": 3, "input_images": ["upload://x"] * 9})
    assert [name for name, _ in check_params("flux-2-flex", flex.params)] == ["input_images"]
    assert check_params("flux-2-max", job("flux-2-max", {"aspect_ratio": "4:3"}).params) == []
    fill = job(
        "flux-fill-pro", {"mode": "inpaint", "prompt": "x", "image": "u", "mask": "m", "steps": 5}
    )
    assert [name for name, _ in check_params("flux-fill-pro", fill.params)] == ["steps"]


def test_request_body_is_pure_and_deterministic() -> None:
    request = job("flux-2-pro", {"width": 1024, "height": 768})
    assert request_body(request) == request_body(request)


# -- statuses, errors and retries ----------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["request-moderated", "content-moderated"])
def test_moderation_is_content_filtered(bfl: FakeBfl, outcome: str) -> None:
    bfl.outcomes.append(outcome)
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl).generate(job("flux-1.1-pro", {}), Hooks())
    assert caught.value.code == "content_filtered" and not caught.value.retryable
    assert "Derivative Works Filter" in caught.value.message


def test_the_error_status_is_upstream_rejected(bfl: FakeBfl) -> None:
    bfl.outcomes.append("error")
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl).generate(job("flux-2-max", {}), Hooks())
    assert caught.value.code == "upstream_rejected" and not caught.value.retryable


def test_a_lost_task_is_not_submitted_again(bfl: FakeBfl) -> None:
    bfl.outcomes.append("lost")
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl).generate(job("flux-2-max", {}), Hooks())
    assert caught.value.code == "upstream_unavailable" and not caught.value.retryable
    assert len(bfl.submits()) == 1


def test_an_expired_result_link_is_polled_again(bfl: FakeBfl) -> None:
    bfl.outcomes.append("expired-url")
    result = engine_for(bfl).generate(job("flux-1.1-pro", {"width": 512, "height": 512}), Hooks())
    assert result.images[0].pixels.shape == (512, 512, 3)
    assert bfl.tasks[next(iter(bfl.tasks))].urls_issued == 2
    assert len(bfl.submits()) == 1


def test_a_result_link_that_stays_expired_fails_clearly(bfl: FakeBfl) -> None:
    bfl.outcomes.append("always-expired")
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl).generate(job("flux-1.1-pro", {}), Hooks())
    assert caught.value.code == "upstream_unavailable"
    assert "could not be downloaded" in caught.value.message and "403" in caught.value.message


def test_429_and_5xx_on_submit_are_retried_with_retry_after(bfl: FakeBfl) -> None:
    bfl.submit_script.extend(["429:0", "503"])
    result = engine_for(bfl).generate(job("flux-2-pro", {}), Hooks())
    assert len(bfl.submits()) == 3 and result.images


def test_submit_gives_up_after_the_retry_budget_and_may_be_retried(bfl: FakeBfl) -> None:
    bfl.submit_script.extend(["500", "500", "500"])
    hooks = Hooks()
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl, max_retries=2).generate(job("flux-2-pro", {}), hooks)
    assert caught.value.code == "upstream_unavailable" and caught.value.retryable
    assert hooks.upstream.state is not None and hooks.upstream.state["phase"] == "refused"
    # Nothing runs at BFL: the next attempt submits afresh.
    result = engine_for(bfl).generate(job("flux-2-pro", {}), hooks)
    assert result.images and len(bfl.submits()) == 4


def test_polling_errors_are_retried(bfl: FakeBfl) -> None:
    bfl.poll_script.extend(["500", "429:0"])
    result = engine_for(bfl).generate(job("flux-2-pro", {}), Hooks())
    assert result.images and len(bfl.submits()) == 1


def test_polling_that_keeps_failing_is_retryable_and_resumes(bfl: FakeBfl) -> None:
    bfl.poll_script.extend(["500", "500", "500"])
    hooks = Hooks()
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl, max_retries=2).generate(job("flux-2-pro", {}), hooks)
    assert caught.value.retryable
    result = engine_for(bfl).generate(job("flux-2-pro", {}), hooks)
    assert result.metadata["resumed"] is True and len(bfl.submits()) == 1


@pytest.mark.parametrize(
    ("script", "code"), [("402", "engine_misconfigured"), ("422", "upstream_rejected")]
)
def test_final_submit_answers(bfl: FakeBfl, script: str, code: str) -> None:
    bfl.submit_script.append(script)
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl).generate(job("flux-2-pro", {}), Hooks())
    assert caught.value.code == code and not caught.value.retryable
    assert len(bfl.submits()) == 1


def test_a_wrong_key_is_engine_misconfigured(bfl: FakeBfl) -> None:
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl, api_key="wrong").generate(job("flux-2-pro", {}), Hooks())
    assert caught.value.code == "engine_misconfigured"
    assert "wrong" not in caught.value.message


def test_a_submit_timeout_is_never_submitted_twice(bfl: FakeBfl) -> None:
    bfl.submit_script.append("slow:1.0")
    hooks = Hooks()
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl, timeout=0.2).generate(job("flux-2-pro", {}), hooks)
    assert caught.value.code == "upstream_unavailable" and not caught.value.retryable
    assert len(bfl.submits()) == 1
    # A later attempt of the same job finds the unresolved mark and does not submit again.
    with pytest.raises(JobFailure) as again:
        engine_for(bfl).generate(job("flux-2-pro", {}), hooks)
    assert "not submitted again" in again.value.message
    assert len(bfl.submits()) == 1


def test_a_worker_killed_mid_poll_is_resumed_by_the_recorded_id(bfl: FakeBfl) -> None:
    journal = Journal()
    dying = Hooks(journal)
    dying.kill_on_poll = True
    with pytest.raises(WorkerKilled):
        engine_for(bfl).generate(job("flux-1.1-pro", {"width": 512, "height": 512}), dying)
    assert journal.state is not None and journal.state["phase"] == "submitted"
    task_id = journal.state["id"]
    # A new worker (a new engine) takes the job over with the same journal.
    result = engine_for(bfl).generate(
        job("flux-1.1-pro", {"width": 512, "height": 512}), Hooks(journal)
    )
    assert len(bfl.submits()) == 1
    assert result.metadata["resumed"] is True
    assert result.images[0].metadata["upstreamTask"] == task_id
    assert [state["phase"] for state in journal.history] == ["submitting", "submitted"]


def test_a_journal_that_cannot_record_stops_before_submitting(bfl: FakeBfl) -> None:
    journal = Journal()
    journal.fail = True
    with pytest.raises(JobFailure) as caught:
        engine_for(bfl).generate(job("flux-2-pro", {}), Hooks(journal))
    assert caught.value.retryable and bfl.submits() == []


def test_cancellation_stops_polling(bfl: FakeBfl) -> None:
    bfl.outcomes.append("hold")
    hooks = Hooks()
    engine = engine_for(bfl)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.generate(job("flux-2-pro", {}), hooks)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while len(bfl.polls()) < 3:
        threading.Event().wait(0.01)
    hooks.cancel.set()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome[0], JobCancelled)
    polled = len(bfl.polls())
    threading.Event().wait(0.1)
    assert len(bfl.polls()) == polled  # nothing polls any more


def test_the_key_is_not_sent_to_a_polling_host_outside_bfl(bfl: FakeBfl) -> None:
    bfl.polling_host = "evil.example:80"
    result = engine_for(bfl).generate(job("flux-2-pro", {}), Hooks())
    assert result.images  # polled at the base URL's get_result instead
    assert all(call.path == "/v1/get_result" for call in bfl.polls())


def test_many_jobs_run_at_once(bfl: FakeBfl) -> None:
    bfl.outcomes.extend(["hold"] * 4)
    engine = engine_for(bfl, concurrency=4)
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(engine.generate(job("flux-2-pro", {}), Hooks()))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    while (
        len({call.body["seed"] if call.body else 0 for call in bfl.submits()}) < 1
        or len(bfl.submits()) < 4
    ):
        threading.Event().wait(0.01)
    assert len(bfl.submits()) == 4  # all four submitted before any finished
    bfl.release.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 4


def test_the_fake_rejects_what_bfl_rejects(bfl: FakeBfl) -> None:
    def post(route: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return httpx.post(
            bfl.base_url + route, json=body, headers={"x-key": key or bfl.api_key}, timeout=10
        )

    assert post("/v1/flux-2-pro", {"prompt": "x"}, key="nope").status_code == 403
    assert post("/v1/flux-2-pro", {"prompt": "x", "steps": 20}).status_code == 422
    assert (
        post("/v1/flux-pro-1.1", {"prompt": "x", "width": 1000, "height": 512}).status_code == 422
    )
    assert post("/v1/flux-2-pro", {"prompt": "x", "input_image": "not base64"}).status_code == 422
    assert post("/v1/flux-pro-1.0-fill", {"prompt": "x"}).status_code == 422
    assert post("/v1/flux-pro-1.1-ultra", {"prompt": "x", "aspect_ratio": "4:1"}).status_code == 422
    accepted = post("/v1/flux-2-pro", {"prompt": "x", "width": 1024, "height": 768})
    assert accepted.status_code == 200 and set(accepted.json()) == {"id", "polling_url"}
    lost = httpx.get(
        f"{bfl.base_url}/v1/get_result?id=unknown", headers={"x-key": bfl.api_key}, timeout=10
    )
    assert lost.json()["status"] == "Task not found"
