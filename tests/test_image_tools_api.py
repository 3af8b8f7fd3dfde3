"""``POST /v2/images/background-remove`` and ``POST /v2/images/upscale`` end to end: the
sandbox for test keys, the real CPU models (tools engine) for live keys, Apiframe's answers,
billing on success, and bad input refused before anything is queued or held."""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from tests.conftest import Api
from tests.support.apiframe_schemas import (
    FORMAT_CHECKER,
    JOB,
    JOB_ACCEPTED,
    VALIDATION_ERROR,
    WEBHOOK_PAYLOAD,
)
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut, data_uri, png_bytes
from tests.support.jobs import images_of


def small_astronaut(side: int = 96) -> np.ndarray:
    return cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA)


def conforms(schema: dict[str, Any], document: Any) -> None:
    Draft202012Validator(schema, format_checker=FORMAT_CHECKER).validate(document)


def post(api: Api, operation: str, key: str, body: dict[str, Any], **headers: str) -> Any:
    return api.client.post(
        f"/v2/images/{operation}", json=body, headers={"X-API-Key": key, **headers}
    )


def bg_body(image: str, **params: Any) -> dict[str, Any]:
    return {"model": "851-bg-remove", "lab851BgRemoveParams": {"image": image, **params}}


def topaz_body(image: str, **params: Any) -> dict[str, Any]:
    return {"model": "topaz-image-upscale", "topazUpscaleParams": {"image": image, **params}}


def run(api: Api, operation: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = post(api, operation, key, body)
    assert response.status_code == 202, response.text
    conforms(JOB_ACCEPTED, response.json())
    job = api.wait(key, response.json()["jobId"], timeout=120)
    conforms(JOB, job)
    return job


def output_of(api: Api, job: dict[str, Any]) -> Image.Image:
    assert job["status"] == "COMPLETED", job
    (image,) = images_of(job)
    return Image.open(io.BytesIO(api.file(image["url"])))


def test_a_test_key_gets_the_sandboxs_cut_out_and_lanczos(api: Api) -> None:
    key = api.key(mode="test")
    source = data_uri(png_bytes(small_astronaut()))
    job = run(api, "background-remove", key, bg_body(source))
    cut = output_of(api, job)
    assert cut.mode == "RGBA" and cut.size == (96, 96)
    assert job["result"]["metadata"]["model"].startswith("GrabCut")
    again = run(api, "background-remove", key, bg_body(source))
    assert np.array_equal(np.asarray(output_of(api, again)), np.asarray(cut))  # deterministic
    upscaled = output_of(api, run(api, "upscale", key, topaz_body(source, upscale_factor=6)))
    assert upscaled.size == (576, 576)


def test_a_live_key_runs_the_real_models_and_is_charged_on_success(api_sqlite: Api) -> None:
    api = api_sqlite
    key = api.key(credits=100)
    source = data_uri(png_bytes(small_astronaut()))
    job = run(api, "background-remove", key, bg_body(source, background_type="rgba"))
    assert job["result"]["metadata"]["engine"] == "tools"
    assert job["result"]["metadata"]["model"].startswith("U2-Net-P")
    alpha = np.asarray(output_of(api, job))[..., 3]
    assert alpha[:4, :4].max() == 0 and alpha[12:22, 36:46].min() == 255  # wall; face
    assert job["creditCost"] == 1
    small = data_uri(png_bytes(cv2.resize(astronaut(), (24, 16))))
    job = run(api, "upscale", key, topaz_body(small, upscale_factor=2, output_format="jpg"))
    metadata = job["result"]["metadata"]
    assert metadata["model"].startswith("Real-ESRGAN x4plus") and "not by Topaz" in metadata["note"]
    image = output_of(api, job)
    assert image.format == "JPEG" and image.size == (48, 32)
    assert job["creditCost"] == 4
    account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["balance"], account["held"]) == (95, 0)


def test_a_url_input_is_read_at_submission_and_sizes_the_job(
    api_sqlite: Api, http_server: LoopbackServer
) -> None:
    key = api_sqlite.key(mode="test")
    url = http_server.serve_bytes("/cat.png", png_bytes(small_astronaut(40)))
    job = run(api_sqlite, "upscale", key, topaz_body(url, upscale_factor=4))
    assert output_of(api_sqlite, job).size == (160, 160)
    clarity = {
        "model": "clarity-upscale",
        "clarityUpscaleParams": {"image": url, "scale_factor": 8},
    }
    assert output_of(api_sqlite, run(api_sqlite, "upscale", key, clarity)).size == (320, 320)


def test_an_upload_input_is_sized_from_its_row(api_sqlite: Api) -> None:
    key = api_sqlite.key(mode="test")
    response = api_sqlite.client.post(
        "/v2/uploads",
        headers={"X-API-Key": key},
        files={"file": ("a.png", png_bytes(small_astronaut(32)), "image/png")},
    )
    assert response.status_code == 201, response.text
    job = run(api_sqlite, "upscale", key, topaz_body(response.json()["url"], upscale_factor=1))
    assert output_of(api_sqlite, job).size == (32, 32)


def animated_png() -> bytes:
    frames = [Image.fromarray(small_astronaut(32)), Image.fromarray(small_astronaut(32)[::-1])]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def rgba_png() -> bytes:
    pixels = np.dstack([small_astronaut(32), np.full((32, 32), 128, np.uint8)])
    return png_bytes(pixels)


def huge_png() -> bytes:
    """2,100 x 2,100: fine as an input, 70.6 MP once upscaled by 4."""
    buffer = io.BytesIO()
    Image.new("RGB", (2100, 2100), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_INPUTS = {
    "1x1": (data_uri(png_bytes(np.zeros((1, 1, 3), np.uint8))), "invalid_image", "16x16"),
    "huge": (data_uri(huge_png()), "image_too_large", "64,000,000 pixels"),
    "not an image": (
        data_uri(b"hello, not a picture", "image/png"),
        "invalid_image",
        "PNG, JPEG or WebP",
    ),
    "animated": (data_uri(animated_png()), "invalid_image", "animated"),
    "alpha": (data_uri(rgba_png()), "invalid_image", "alpha channel"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=str)
def test_bad_input_is_a_clear_400_and_nothing_is_queued_or_held(
    api_no_worker: Api, case: str
) -> None:
    api = api_no_worker
    key = api.key(credits=100)
    source, code, words = BAD_INPUTS[case]
    for operation, body in (
        ("upscale", topaz_body(source, upscale_factor=4)),
        ("background-remove", bg_body(source)),
    ):
        if case == "huge" and operation == "background-remove":
            continue  # the same size out as in: within the limit
        response = post(api, operation, key, body)
        assert response.status_code == 400, response.text
        payload = response.json()
        conforms(VALIDATION_ERROR, payload)
        assert payload["code"] == code and words in payload["error"], payload
    listed = api.client.get("/v2/jobs", headers={"X-API-Key": key}).json()
    assert listed["jobs"] == []
    account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["balance"], account["held"]) == (100, 0)


def test_a_huge_url_input_is_refused_before_it_is_queued(
    api_no_worker: Api, http_server: LoopbackServer
) -> None:
    key = api_no_worker.key(credits=100)
    url = http_server.serve_bytes("/huge.png", huge_png())
    response = post(api_no_worker, "upscale", key, topaz_body(url, upscale_factor=4))
    assert response.status_code == 400 and "64,000,000" in response.json()["error"]
    assert "topazUpscaleParams.image" in response.json()["details"]


REFUSED = [
    ("upscale", topaz_body("https://example.com/a.png", face_enhance=True), "face_enhance"),
    ("upscale", topaz_body("https://example.com/a.png", model_type="redefine"), "model_type"),
    (
        "upscale",
        {"model": "clarity-upscale", "clarityUpscaleParams": {"image": "x", "creativity": 0.4}},
        "creativity",
    ),
    (
        "background-remove",
        {
            "model": "bria-bg-remove",
            "briaBgRemoveParams": {"image": "x", "content_moderation": True},
        },
        "content_moderation",
    ),
]


@pytest.mark.parametrize(("operation", "body", "field"), REFUSED, ids=lambda v: str(v)[:30])
def test_what_real_esrgan_and_the_local_removers_cannot_honour_is_a_400_naming_the_engine(
    api_no_worker: Api,
    http_server: LoopbackServer,
    operation: str,
    body: dict[str, Any],
    field: str,
) -> None:
    key = api_no_worker.key(credits=100)
    url = http_server.serve_bytes("/a.png", png_bytes(small_astronaut(32)))
    block = next(name for name in body if name.endswith("Params"))
    body = {**body, block: {**body[block], "image": url}}
    response = post(api_no_worker, operation, key, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["code"] == "unsupported_parameter"
    assert "tools engine" in payload["error"]
    assert any(path.endswith(field) for path in payload["details"]), payload


def test_bria_runs_only_where_the_operator_turned_it_on(
    api_no_worker: Api, http_server: LoopbackServer
) -> None:
    key = api_no_worker.key(credits=100)
    url = http_server.serve_bytes("/a.png", png_bytes(small_astronaut(32)))
    body = {"model": "bria-bg-remove", "briaBgRemoveParams": {"image": url}}
    response = post(api_no_worker, "background-remove", key, body)
    assert (
        response.status_code == 400
        and "CASTFRAME_BG_REMOVE_BRIA_ENABLED" in response.json()["error"]
    )
    test_key = api_no_worker.key(account="sandbox", mode="test")
    assert post(api_no_worker, "background-remove", test_key, body).status_code == 202


def test_models_are_on_their_own_endpoint_and_idempotent(api_no_worker: Api) -> None:
    key = api_no_worker.key(credits=100)
    source = data_uri(png_bytes(small_astronaut(32)))
    response = post(api_no_worker, "upscale", key, bg_body(source))
    assert response.status_code == 400 and response.json()["code"] == "unknown_model"
    assert "/v2/images/background-remove" in response.json()["error"]
    first = post(api_no_worker, "upscale", key, topaz_body(source), **{"Idempotency-Key": "k-1"})
    again = post(api_no_worker, "upscale", key, topaz_body(source), **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["jobId"] == again.json()["jobId"]
    models = api_no_worker.client.get("/v2/models", headers={"X-API-Key": key}).json()
    listed = {entry["id"]: entry for entry in models["models"]}
    assert listed["topaz-image-upscale"]["operation"] == "/v2/images/upscale"
    assert listed["851-bg-remove"]["operation"] == "/v2/images/background-remove"


def test_a_tool_job_sends_apiframes_webhook(api_sqlite: Api, http_server: LoopbackServer) -> None:
    http_server.routes["/hook"] = lambda _request: Reply(200, b"ok")
    key = api_sqlite.key(mode="test")
    source = data_uri(png_bytes(small_astronaut(32)))
    body = {**topaz_body(source, upscale_factor=4), "webhookUrl": http_server.url("/hook")}
    response = post(api_sqlite, "upscale", key, body)
    assert response.status_code == 202, response.text
    [delivery] = http_server.wait_for("/hook", 1)
    payload = delivery.json()
    conforms(WEBHOOK_PAYLOAD, payload)
    assert payload["jobId"] == response.json()["jobId"] and payload["status"] == "COMPLETED"
    assert payload["model"] == "topaz-image-upscale"
    assert images_of(payload)[0]["width"] == 128
