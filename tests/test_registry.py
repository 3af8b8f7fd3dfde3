"""The model registry: every catalog model's request schema against Apiframe's variant, every
model completing on the sandbox on both databases, prices from the registry, and the two
corrections of issue 23 (signed upload URLs are public URLs; ``expired`` is on time)."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from castframe.catalog import MODELS, ModelSpec
from tests.conftest import Api, body_for, open_api
from tests.support.images import astronaut_png

IDEOGRAM_IDS = [
    model_id for model_id, spec in MODELS.items() if spec.params_key == "ideogramParams"
]

# Apiframe's `ideogramParams` block, as its published spec (GenerateImageRequest) writes it for
# every ideogram-* variant: the field names, and the enums it fixes.
APIFRAME_IDEOGRAM_FIELDS = {
    "aspect_ratio",
    "character_reference_image",
    "image",
    "magic_prompt_option",
    "mask",
    "negative_prompt",
    "rendering_speed",
    "resolution",
    "seed",
    "style_preset",
    "style_reference_images",
    "style_type",
}
APIFRAME_ENUMS = {
    "magic_prompt_option": ["Auto", "On", "Off"],
    "rendering_speed": ["default", "turbo", "quality"],
}
CASTFRAME_EXTENSIONS = {"character_id", "num_images", "output_format"}


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` (or an ``anyOf`` with null) followed."""
    if "anyOf" in node:
        node = next(item for item in node["anyOf"] if item.get("type") != "null")
    if "$ref" in node:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


@pytest.mark.parametrize("model_id", IDEOGRAM_IDS)
def test_ideogram_schemas_are_apiframes_variant(model_id: str) -> None:
    spec = MODELS[model_id]
    schema = spec.request_model.model_json_schema(by_alias=True)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["model"]["const"] == model_id
    prompt = schema["properties"]["prompt"]
    assert (prompt["minLength"], prompt["maxLength"]) == (1, 2000)
    events = resolve(schema, schema["properties"]["webhookEvents"])
    assert events["items"]["enum"] == ["progress", "completed", "failed"]
    required = {"prompt", "model"} | (
        {"ideogramParams"} if model_id == "ideogram-character" else set()
    )
    assert set(schema["required"]) == required
    block = resolve(schema, schema["properties"]["ideogramParams"])
    assert block["additionalProperties"] is False
    fields = set(block["properties"])
    assert fields == APIFRAME_IDEOGRAM_FIELDS | CASTFRAME_EXTENSIONS
    for name in CASTFRAME_EXTENSIONS:
        assert "Castframe extension" in block["properties"][name]["description"]
    for name, values in APIFRAME_ENUMS.items():
        assert sorted(resolve(schema, block["properties"][name])["enum"]) == sorted(values)
    styles = resolve(schema, block["properties"]["style_reference_images"])
    assert styles["maxItems"] == 3


def test_registry_lists_every_ideogram_model() -> None:
    assert set(IDEOGRAM_IDS) == {
        "ideogram-character",
        *(f"ideogram-v3-{speed}" for speed in ("turbo", "balanced", "quality")),
        *(f"ideogram-v4-{speed}" for speed in ("turbo", "balanced", "quality")),
        "ideogram-v2",
        "ideogram-v2-turbo",
        "ideogram-v2a",
        "ideogram-v2a-turbo",
    }


def minimal_body(spec: ModelSpec, ref: str) -> dict[str, Any]:
    """The smallest body a client would send: the prompt and the model (and the character
    where the model needs one), at the model's smallest ratio to keep the sandbox quick."""
    body: dict[str, Any] = {"prompt": "a lighthouse on a cliff at dusk", "model": spec.id}
    if spec.id == "ideogram-character":
        body["ideogramParams"] = {"character_reference_image": ref}
    return body


GENERATE_IDS = [model_id for model_id, spec in MODELS.items() if spec.operation == "generate"]


@pytest.mark.parametrize("model_id", GENERATE_IDS)
def test_every_model_completes_on_the_sandbox(api: Api, ref: str, model_id: str) -> None:
    spec = MODELS[model_id]
    key = api.key(credits=1000)
    job = api.submit_and_wait(key, minimal_body(spec, ref))
    assert job["status"] == "COMPLETED", job
    params = spec.normalise(spec.request_model.model_validate(minimal_body(spec, ref)))
    assert job["creditCost"] == spec.price(params, None)
    details = job["result"]["imageDetails"]
    assert [(d["width"], d["height"]) for d in details] == [(params["width"], params["height"])]
    # Only a job with a character is scored for consistency.
    assert ("consistency" in details[0]) == (spec.id == "ideogram-character")
    image = Image.open(io.BytesIO(api.file(job["result"]["images"][0])))
    assert image.size == (params["width"], params["height"])


def test_sandbox_is_deterministic_and_honours_sizes_and_styles(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    body = {
        "prompt": "a red barn in a wheat field",
        "model": "ideogram-v3-turbo",
        "ideogramParams": {"seed": 42, "resolution": "1216x704", "style_reference_images": [ref]},
    }
    first = api_sqlite.submit_and_wait(key, body)
    second = api_sqlite.submit_and_wait(key, body)
    pixels = [api_sqlite.file(job["result"]["images"][0]) for job in (first, second)]
    assert pixels[0] == pixels[1]
    assert first["result"]["imageDetails"][0]["metadata"]["styleReferences"] == 1
    assert Image.open(io.BytesIO(pixels[0])).size == (1216, 704)


def test_a_mask_edit_without_a_character_keeps_the_unmasked_pixels(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    scene = np.asarray(Image.open(io.BytesIO(astronaut_png())).convert("RGB"))
    mask = np.full(scene.shape, 255, np.uint8)
    mask[100:300, 150:400] = 0  # black = repaint
    body = {
        "prompt": "a window onto a starry night",
        "model": "ideogram-v2",
        "ideogramParams": {"image": data_uri(scene), "mask": data_uri(mask)},
    }
    job = api_sqlite.submit_and_wait(key, body)
    assert job["status"] == "COMPLETED", job
    out = np.asarray(Image.open(io.BytesIO(api_sqlite.file(job["result"]["images"][0]))))
    keep = mask[..., 0] == 255
    assert np.array_equal(out[keep], scene[keep])
    assert np.abs(out[~keep].astype(int) - scene[~keep].astype(int)).mean() > 10


def data_uri(pixels: np.ndarray) -> str:
    import base64

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "ideogram-v3-turbo", "ideogramParams": {"rendering_speed": "quality"}}, "body"),
        ({"model": "ideogram-v4-turbo", "ideogramParams": {"aspect_ratio": "3:1"}}, "ideogramParams.aspect_ratio"),
        ({"model": "ideogram-v2a", "ideogramParams": {"image": "https://example.com/a.png", "mask": "https://example.com/m.png"}}, "ideogramParams"),
        ({"model": "ideogram-v2", "ideogramParams": {"aspect_ratio": "4:5"}}, "ideogramParams.aspect_ratio"),
        ({"model": "ideogram-v3-quality", "ideogramParams": {"style_type": "ANIME"}}, "ideogramParams.style_type"),
        ({"model": "ideogram-character"}, "ideogramParams"),
    ],
)  # fmt: skip
def test_model_rules_are_400s(api_no_worker: Api, body: dict[str, Any], field: str) -> None:
    key = api_no_worker.key()
    response = api_no_worker.generate(key, {"prompt": "a cat", **body})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["details"], response.json()


def test_matching_speed_and_legacy_spellings_are_accepted(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    for body in (
        {"model": "ideogram-v3-turbo", "ideogramParams": {"rendering_speed": "TURBO"}},
        {
            "model": "ideogram-v2",
            "ideogramParams": {"style_type": "Render_3d", "resolution": "None"},
        },
        {"model": "ideogram-v4-quality", "aspect_ratio": "16:9"},
    ):
        response = api_no_worker.generate(key, {"prompt": "a cat", **body})
        assert response.status_code == 202, response.text


def test_blank_prompts_and_repeated_events(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    blank = api_no_worker.generate(
        key, {"prompt": "\u200b\u200b \ufeff", "model": "ideogram-v3-turbo"}
    )
    assert (blank.status_code, blank.json()["code"]) == (400, "validation_error")
    many = api_no_worker.generate(
        key, {"prompt": "a cat", "model": "ideogram-v3-turbo", "webhookEvents": ["completed"] * 4}
    )
    assert many.status_code == 400, many.text
    job = api_no_worker.generate(
        key,
        {"prompt": "a cat", "model": "ideogram-v3-turbo", "webhookEvents": ["failed", "failed"]},
    ).json()
    view = api_no_worker.get_job(key, job["jobId"])
    assert view["id"] == job["jobId"]


def test_unknown_model_names_the_served_ones(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    response = api_no_worker.generate(key, {"prompt": "a cat", "model": "flux-9"})
    assert (response.status_code, response.json()["code"]) == (400, "unknown_model")
    assert "ideogram-v3-turbo" in response.json()["error"]


def test_another_accounts_upload_url_is_a_public_url(api_sqlite: Api) -> None:
    api = api_sqlite
    owner = api.key(account="owner")
    uploaded = api.client.post(
        "/v2/uploads",
        headers={"X-API-Key": owner},
        files={"file": ("me.png", astronaut_png(), "image/png")},
    ).json()
    poor = api.key(account="poor", credits=1)
    response = api.generate(poor, body_for(uploaded["url"]))
    # As on Apiframe: the URL is accepted, and the job is refused for its price.
    assert (response.status_code, response.json()["code"]) == (402, "insufficient_credits")


def test_expired_turns_true_when_retention_passes(tmp_path: Any, ref: str) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with open_api(tmp_path, url, retention_sweep_seconds=3600) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(ref))
        assert job["expired"] is False
        api.services.settings.output_retention_hours = 0.5 / 3600  # half a second
        time.sleep(0.6)
        later = api.get_job(key, job["id"])
        assert later["expired"] is True  # no sweep has run: the period alone decides
        gone = api.client.get(later["result"]["images"][0])
        assert (gone.status_code, gone.json()["code"]) == (410, "output_expired")


def test_null_is_refused_where_the_field_is(api_no_worker: Api) -> None:
    """Apiframe's request schemas have no nullable field: a null is a 400 naming its path."""
    key = api_no_worker.key()
    body = {"prompt": "a cat", "model": "ideogram-v3-turbo", "ideogramParams": {"seed": None}}
    response = api_no_worker.generate(key, body)
    assert response.status_code == 400, response.text
    assert list(response.json()["details"]) == ["ideogramParams.seed"]
