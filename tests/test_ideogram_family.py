"""Ideogram's whole family through the real API and worker, against a fake of Ideogram's API
written from its published reference (tests/support/fake_ideogram.py).

Per model id: the route, the ``Api-Key`` header and the exact fields and file parts sent for a
generation and, where the model has one, a mask edit; what a route cannot take is a 400 at
submission naming the ideogram engine; retries after 429 and 5xx; safety refusals are
``content_filtered`` and not charged.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from castframe.catalog import MODELS
from tests.conftest import Api, make_api
from tests.support.fake_ideogram import Call, FakeIdeogram
from tests.support.http import LoopbackServer
from tests.support.images import astronaut_png, edit_pair, jpeg_bytes, png_bytes
from tests.support.jobs import images_of

PROMPT = "a lighthouse on a cliff at dusk"
MAGIC = ", rewritten by magic prompt with cinematic light"
SCENE, MASK = edit_pair(96, 64)
STYLE_PNG = png_bytes(np.full((40, 48, 3), (200, 40, 90), np.uint8))
STYLE_JPG = jpeg_bytes(np.full((48, 40, 3), (20, 160, 220), np.uint8))
FAMILY = (
    "ideogram-character",
    "ideogram-v3-turbo",
    "ideogram-v3-balanced",
    "ideogram-v3-quality",
    "ideogram-v4-turbo",
    "ideogram-v4-balanced",
    "ideogram-v4-quality",
    "ideogram-v2",
    "ideogram-v2-turbo",
    "ideogram-v2a",
    "ideogram-v2a-turbo",
)


@pytest.fixture(scope="module")
def submissions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An API with an Ideogram key and no worker: for what is decided at submission."""
    tmp = tmp_path_factory.mktemp("ideogram-submissions")
    yield from make_api(
        tmp,
        f"sqlite:///{tmp / 'castframe.db'}",
        run_worker=False,
        ideogram_api_key="ideo-test-key",
        ideogram_base_url="http://127.0.0.1:9",  # never called: nothing runs here
    )


@pytest.fixture
def sources(http_server: LoopbackServer) -> dict[str, str]:
    """URLs of the inputs, by the placeholder the tables below use for them."""
    return {
        "REF": http_server.serve_bytes("/astronaut.png", astronaut_png()),
        "STYLE_PNG": http_server.serve_bytes("/style.png", STYLE_PNG),
        "STYLE_JPG": http_server.serve_bytes("/style.jpg", STYLE_JPG, "image/jpeg"),
        "IMAGE": http_server.serve_bytes("/scene.png", png_bytes(SCENE)),
        "MASK": http_server.serve_bytes("/mask.png", png_bytes(MASK)),
    }


BYTES = {"REF": astronaut_png(), "STYLE_PNG": STYLE_PNG, "STYLE_JPG": STYLE_JPG}


def _filled(value: Any, urls: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_filled(item, urls) for item in value]
    return urls.get(value, value) if isinstance(value, str) else value


def request(model: str, params: dict[str, Any], urls: dict[str, str] | None = None) -> Any:
    """A request body for ``model``: ``params`` as its ideogramParams (placeholders such as
    ``"REF"`` replaced by their URLs), top-level keys under ``params["top"]``."""
    params = dict(params)
    top = params.pop("top", {})
    block = {name: _filled(value, urls or {}) for name, value in params.items()}
    return {"prompt": PROMPT, "model": model, "ideogramParams": block, **top}


@dataclass
class Case:
    """One job of one model and what Ideogram must receive for it."""

    model: str
    params: dict[str, Any]
    path: str
    sent: dict[str, Any]
    """The multipart text fields, or the legacy JSON ``image_request``."""
    files: dict[str, list[str]] = field(default_factory=dict)
    """File parts other than an edit's image and mask, as placeholders of their bytes."""
    sizes: list[tuple[int, int]] = field(default_factory=list)
    credits: int = 0
    calls: int = 1

    @property
    def id(self) -> str:
        return self.model


GENERATE = [
    Case(
        "ideogram-character",
        {
            "character_reference_image": "REF",
            "rendering_speed": "quality",
            "style_type": "fiction",
            "magic_prompt_option": "Off",
            "seed": 11,
            "negative_prompt": "blurry",
            "aspect_ratio": "16:9",
        },
        "/v1/ideogram-v3/generate",
        {
            "prompt": PROMPT,
            "rendering_speed": "QUALITY",
            "magic_prompt": "OFF",
            "style_type": "FICTION",
            "seed": "11",
            "num_images": "1",
            "aspect_ratio": "16x9",
            "negative_prompt": "blurry",
        },
        {"character_reference_images": ["REF"]},
        [(1312, 736)],
        credits=20,
    ),
    Case(
        "ideogram-v3-turbo",
        {
            "style_preset": "Pop_Art",
            "style_reference_images": ["STYLE_PNG", "STYLE_JPG"],
            "negative_prompt": "text",
            "seed": 21,
            "num_images": 2,
            "top": {"aspect_ratio": "4:5"},
        },
        "/v1/ideogram-v3/generate",
        {
            "prompt": PROMPT,
            "rendering_speed": "TURBO",
            "seed": "21",
            "num_images": "2",
            "style_preset": "POP_ART",
            "aspect_ratio": "4x5",
            "negative_prompt": "text",
        },
        {"style_reference_images": ["STYLE_PNG", "STYLE_JPG"]},
        [(896, 1120), (896, 1120)],
        credits=6,
    ),
    Case(
        "ideogram-v3-balanced",
        {
            "rendering_speed": "default",  # the speed the id fixes: accepted
            "resolution": "1280x800",
            "style_type": "DESIGN",
            "magic_prompt_option": "on",
            "seed": 31,
        },
        "/v1/ideogram-v3/generate",
        {
            "prompt": PROMPT,
            "rendering_speed": "DEFAULT",
            "magic_prompt": "ON",
            "style_type": "DESIGN",
            "seed": "31",
            "num_images": "1",
            "resolution": "1280x800",
        },
        sizes=[(1280, 800)],
        credits=6,
    ),
    Case(
        "ideogram-v3-quality",
        {"character_reference_image": "REF", "style_type": "Realistic", "seed": 41},
        "/v1/ideogram-v3/generate",
        {
            "prompt": PROMPT,
            "rendering_speed": "QUALITY",
            "style_type": "REALISTIC",
            "seed": "41",
            "num_images": "1",
        },
        {"character_reference_images": ["REF"]},
        [(1024, 1024)],
        credits=20,  # Ideogram's character price at quality
    ),
    Case(
        "ideogram-v4-turbo",
        {"top": {"aspect_ratio": "16:9"}},
        "/v1/ideogram-v4/generate",
        {"text_prompt": PROMPT, "rendering_speed": "TURBO", "resolution": "2560x1440"},
        sizes=[(2560, 1440)],
        credits=3,
    ),
    Case(
        "ideogram-v4-balanced",
        {"magic_prompt_option": "Auto", "rendering_speed": "default", "num_images": 2},
        "/v1/ideogram-v4/generate",
        {"text_prompt": PROMPT, "rendering_speed": "DEFAULT"},
        sizes=[(2048, 2048), (2048, 2048)],
        credits=12,
        calls=2,  # one image per 4.0 request
    ),
    Case(
        "ideogram-v4-quality",
        {"resolution": "1296x3168"},
        "/v1/ideogram-v4/generate",
        {"text_prompt": PROMPT, "rendering_speed": "QUALITY", "resolution": "1296x3168"},
        sizes=[(1296, 3168)],
        credits=10,
    ),
    Case(
        "ideogram-v2",
        {
            "aspect_ratio": "16:9",
            "magic_prompt_option": "On",
            "style_type": "Render_3d",
            "negative_prompt": "fog",
            "seed": 51,
        },
        "/generate",
        {
            "prompt": PROMPT,
            "model": "V_2",
            "seed": 51,
            "num_images": 1,
            "aspect_ratio": "ASPECT_16_9",
            "magic_prompt_option": "ON",
            "style_type": "RENDER_3D",
            "negative_prompt": "fog",
        },
        sizes=[(1312, 736)],
        credits=8,
    ),
    Case(
        "ideogram-v2-turbo",
        {"resolution": "1280x800", "style_type": "anime", "seed": 61},
        "/generate",
        {
            "prompt": PROMPT,
            "model": "V_2_TURBO",
            "seed": 61,
            "num_images": 1,
            "resolution": "RESOLUTION_1280_800",
            "style_type": "ANIME",
        },
        sizes=[(1280, 800)],
        credits=5,
    ),
    Case(
        "ideogram-v2a",
        {"aspect_ratio": "10x16", "magic_prompt_option": "Off", "seed": 71},
        "/generate",
        {
            "prompt": PROMPT,
            "model": "V_2A",
            "seed": 71,
            "num_images": 1,
            "aspect_ratio": "ASPECT_10_16",
            "magic_prompt_option": "OFF",
        },
        sizes=[(800, 1280)],
        credits=4,
    ),
    Case(
        "ideogram-v2a-turbo",
        {"style_type": "GENERAL", "seed": 81, "top": {"num_images": 2}},
        "/generate",
        {
            "prompt": PROMPT,
            "model": "V_2A_TURBO",
            "seed": 81,
            "num_images": 2,
            "style_type": "GENERAL",
        },
        sizes=[(1024, 1024), (1024, 1024)],
        credits=6,
    ),
]

EDIT = {"image": "IMAGE", "mask": "MASK"}
EDITS = [
    Case(
        "ideogram-character",
        {**EDIT, "character_reference_image": "REF", "rendering_speed": "default", "seed": 3},
        "/v1/ideogram-v3/inpaint",
        {
            "prompt": PROMPT,
            "rendering_speed": "DEFAULT",
            "style_type": "AUTO",  # Ideogram's default, GENERAL, is refused with a character
            "seed": "3",
            "num_images": "1",
        },
        {"character_reference_images": ["REF"]},
        credits=15,
    ),
    Case(
        "ideogram-v3-turbo",
        {
            **EDIT,
            "style_preset": "WATERCOLOR",
            "style_reference_images": ["STYLE_JPG"],
            "magic_prompt_option": "On",
            "seed": 4,
        },
        "/v1/ideogram-v3/inpaint",
        {
            "prompt": PROMPT,
            "rendering_speed": "TURBO",
            "magic_prompt": "ON",
            "seed": "4",
            "num_images": "1",
            "style_preset": "WATERCOLOR",
        },
        {"style_reference_images": ["STYLE_JPG"]},
        credits=3,
    ),
    Case(
        "ideogram-v3-balanced",
        {**EDIT, "style_type": "design", "magic_prompt_option": "Off", "seed": 5, "num_images": 2},
        "/v1/ideogram-v3/inpaint",
        {
            "prompt": PROMPT,
            "rendering_speed": "DEFAULT",
            "magic_prompt": "OFF",
            "style_type": "DESIGN",
            "seed": "5",
            "num_images": "2",
        },
        credits=12,
    ),
    Case(
        "ideogram-v3-quality",
        {**EDIT, "character_reference_image": "REF", "style_type": "FICTION", "seed": 6},
        "/v1/ideogram-v3/inpaint",
        {
            "prompt": PROMPT,
            "rendering_speed": "QUALITY",
            "style_type": "FICTION",
            "seed": "6",
            "num_images": "1",
        },
        {"character_reference_images": ["REF"]},
        credits=20,
    ),
    Case(
        "ideogram-v2",
        {**EDIT, "style_type": "Render_3d", "magic_prompt_option": "Auto", "seed": 7},
        "/edit",
        {
            "prompt": PROMPT,
            "model": "V_2",
            "seed": "7",
            "num_images": "1",
            "magic_prompt_option": "AUTO",
            "style_type": "RENDER_3D",
        },
        credits=8,
    ),
    Case(
        "ideogram-v2-turbo",
        {**EDIT, "seed": 8},
        "/edit",
        {"prompt": PROMPT, "model": "V_2_TURBO", "seed": "8", "num_images": "1"},
        credits=5,
    ),
]


def _check_transport(fake_ideogram: FakeIdeogram, case: Case) -> None:
    """Every call: the model's route, the operator's key in ``Api-Key`` (never as a bearer
    token), the route's body type, and nothing the fake had to refuse."""
    assert len(fake_ideogram.calls) == case.calls, [c.path for c in fake_ideogram.calls]
    for call in fake_ideogram.calls:
        assert call.path == case.path
        assert call.rejected is None, call.rejected
        assert call.headers["api-key"] == fake_ideogram.api_key
        assert "authorization" not in call.headers
        json_route = case.path == "/generate"
        assert call.content_type == ("application/json" if json_route else "multipart/form-data")
        if json_route:
            assert call.json == {"image_request": case.sent}
        assert call.fields == case.sent


def _check_files(call: Call, case: Case, edit_image: str | None) -> None:
    expected = {name: [BYTES[key] for key in keys] for name, keys in case.files.items()}
    names = set(expected) | ({edit_image, "mask"} if edit_image else set())
    assert set(call.files) == names
    for name, parts in expected.items():
        assert call.files[name] == parts, name
    types = {"REF": "image/png", "STYLE_PNG": "image/png", "STYLE_JPG": "image/jpeg"}
    for name, keys in case.files.items():
        assert call.file_types[name] == [types[key] for key in keys]
    if edit_image:
        sent = np.asarray(Image.open(io.BytesIO(call.files[edit_image][0])).convert("RGB"))
        assert np.array_equal(sent, SCENE)
        mask = np.asarray(Image.open(io.BytesIO(call.files["mask"][0])).convert("L"))
        assert np.array_equal(mask < 128, MASK[..., 0] < 128)  # black = repaint, as given
        assert set(np.unique(mask)) <= {0, 255}


@pytest.mark.parametrize("case", GENERATE, ids=lambda case: case.id)
def test_generation_maps_exactly_onto_the_models_route(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, sources: dict[str, str], case: Case
) -> None:
    key = ideogram_api.key(credits=1000)
    job = ideogram_api.submit_and_wait(key, request(case.model, case.params, sources))
    assert job["status"] == "COMPLETED", job
    _check_transport(fake_ideogram, case)
    for call in fake_ideogram.calls:
        _check_files(call, case, None)
    assert job["engine"] == "ideogram"
    assert job["result"]["metadata"]["model"] == case.model
    images = images_of(job)
    assert [(image["width"], image["height"]) for image in images] == case.sizes
    seed = case.params.get("seed")
    if seed is not None:  # Ideogram's seeds come back (4.0 takes none and picks its own)
        assert [image["seed"] for image in images] == [seed + i for i in range(len(images))]
    off = case.params.get("magic_prompt_option") == "Off"
    assert all(image["prompt"].endswith(MAGIC) != off for image in images)
    assert job["creditCost"] == case.credits
    assert "/v1/ideogram-v3/edit" not in {call.path for call in fake_ideogram.calls}


@pytest.mark.parametrize("case", EDITS, ids=lambda case: case.id)
def test_mask_edit_maps_exactly_onto_the_models_edit_route(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, sources: dict[str, str], case: Case
) -> None:
    key = ideogram_api.key(credits=1000)
    job = ideogram_api.submit_and_wait(key, request(case.model, case.params, sources))
    assert job["status"] == "COMPLETED", job
    _check_transport(fake_ideogram, case)
    _check_files(
        fake_ideogram.calls[0], case, "image" if case.path.startswith("/v1/") else "image_file"
    )
    images = images_of(job)
    count = case.params.get("num_images", 1)
    assert [(image["width"], image["height"]) for image in images] == [(96, 64)] * count
    assert job["creditCost"] == case.credits


def test_every_model_of_the_family_is_mapped() -> None:
    """The tables above cover all eleven ids (every Ideogram model of the catalog), and every
    id with a mask edit."""
    assert {model for model, spec in MODELS.items() if spec.family == "ideogram"} == set(FAMILY)
    assert sorted(case.model for case in GENERATE) == sorted(FAMILY)
    edits = {case.model for case in EDITS}
    assert edits == set(FAMILY) - {
        "ideogram-v4-turbo",
        "ideogram-v4-balanced",
        "ideogram-v4-quality",
        "ideogram-v2a",
        "ideogram-v2a-turbo",
    }


REFUSALS = [
    # Ideogram 4.0 takes a prompt, a size and the speed only.
    ("ideogram-v4-turbo", {"negative_prompt": "blur"}, "negative_prompt"),
    ("ideogram-v4-balanced", {"seed": 5}, "seed"),
    ("ideogram-v4-quality", {"style_type": "REALISTIC"}, "style_type"),
    ("ideogram-v4-turbo", {"style_preset": "POP_ART"}, "style_preset"),
    ("ideogram-v4-turbo", {"character_reference_image": "REF"}, "character_reference_image"),
    ("ideogram-v4-balanced", {"style_reference_images": ["STYLE_PNG"]}, "style_reference_images"),
    ("ideogram-v4-quality", {"magic_prompt_option": "Off"}, "magic_prompt_option"),
    # The legacy API has no presets, style references or character.
    ("ideogram-v2", {"style_preset": "POP_ART"}, "style_preset"),
    ("ideogram-v2-turbo", {"character_reference_image": "REF"}, "character_reference_image"),
    ("ideogram-v2a", {"style_reference_images": ["STYLE_PNG"]}, "style_reference_images"),
    ("ideogram-v2a-turbo", {"style_preset": "WATERCOLOR"}, "style_preset"),
    # Ideogram 3.0 refuses a character with presets, style references or other styles.
    (
        "ideogram-v3-turbo",
        {"character_reference_image": "REF", "style_preset": "POP_ART"},
        "style_preset",
    ),
    (
        "ideogram-v3-balanced",
        {"character_reference_image": "REF", "style_reference_images": ["STYLE_PNG"]},
        "style_reference_images",
    ),
    (
        "ideogram-v3-quality",
        {"character_reference_image": "REF", "style_type": "DESIGN"},
        "style_type",
    ),
    # Edit routes have no negative prompt and keep the image's size.
    ("ideogram-v3-turbo", {**EDIT, "negative_prompt": "blur"}, "negative_prompt"),
    ("ideogram-v2", {**EDIT, "negative_prompt": "blur"}, "negative_prompt"),
    ("ideogram-v2-turbo", {**EDIT, "aspect_ratio": "16:9"}, "aspect_ratio"),
    # Ideogram 2a has no negative prompt.
    ("ideogram-v2a", {"negative_prompt": "x"}, "negative_prompt"),
    ("ideogram-v2a-turbo", {"negative_prompt": "x"}, "negative_prompt"),
]
OUTSIDE = {
    "REF": "https://example.com/me.png",
    "STYLE_PNG": "https://example.com/look.png",
    "IMAGE": "https://example.com/scene.png",
    "MASK": "https://example.com/mask.png",
}


@pytest.mark.parametrize(
    ("model", "params", "name"), REFUSALS, ids=[f"{m}-{n}" for m, _, n in REFUSALS]
)
def test_what_the_route_lacks_is_a_400_naming_the_ideogram_engine(
    submissions: Api, model: str, params: dict[str, Any], name: str
) -> None:
    body = request(model, params, OUTSIDE)
    response = submissions.generate(submissions.key(), body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["code"] == "unsupported_parameter"
    assert "ideogram engine" in payload["error"]
    assert list(payload["details"]) == [f"ideogramParams.{name}"]
    # The sandbox (every test key) honours it.
    assert submissions.generate(submissions.key(mode="test"), body).status_code == 202


INVALID = [
    # The model id fixes the rendering speed: another one is a validation error.
    ("ideogram-v3-turbo", {"rendering_speed": "quality"}, "rendering_speed"),
    ("ideogram-v3-quality", {"rendering_speed": "default"}, "rendering_speed"),
    ("ideogram-v4-quality", {"rendering_speed": "turbo"}, "rendering_speed"),
    ("ideogram-v2-turbo", {"rendering_speed": "default"}, "rendering_speed"),
    ("ideogram-v2a", {"rendering_speed": "quality"}, "rendering_speed"),
    # No mask edit on Ideogram 4.0 or 2a, for any engine.
    ("ideogram-v4-turbo", EDIT, "image"),
    ("ideogram-v2a", EDIT, "image"),
    ("ideogram-v2a-turbo", EDIT, "image"),
    # Each version's sizes.
    ("ideogram-v4-balanced", {"resolution": "1024x1024"}, "resolution"),
    ("ideogram-v4-balanced", {"aspect_ratio": "10:16"}, "aspect_ratio"),
    ("ideogram-v2", {"aspect_ratio": "4:5"}, "aspect_ratio"),
    ("ideogram-v3-turbo", {"aspect_ratio": "21:9"}, "aspect_ratio"),
    ("ideogram-v2", {"resolution": "800x1280"}, "resolution"),  # 3.0's, not a legacy one
]


@pytest.mark.parametrize(
    ("model", "params", "name"), INVALID, ids=[f"{m}-{n}-{p}" for m, p, n in INVALID]
)
def test_what_the_model_does_not_take_is_a_validation_error(
    submissions: Api, model: str, params: dict[str, Any], name: str
) -> None:
    for mode in ("live", "test"):
        response = submissions.generate(submissions.key(mode=mode), request(model, params, OUTSIDE))
        assert response.status_code == 400, response.text
        payload = response.json()
        assert payload["code"] == "validation_error"
        assert name in payload["error"]


@pytest.mark.parametrize(
    ("model", "params", "script"),
    [
        ("ideogram-v2", {}, ["429:1", "ok"]),
        ("ideogram-v4-turbo", {}, ["500", "503", "ok"]),
        ("ideogram-v2-turbo", EDIT, ["502", "ok"]),
        ("ideogram-v3-balanced", {"style_reference_images": ["STYLE_PNG"]}, ["429:0", "ok"]),
    ],
    ids=["legacy-429", "v4-5xx", "legacy-edit-5xx", "v3-429"],
)
def test_429_and_5xx_are_retried_with_the_same_request(
    ideogram_api: Api,
    fake_ideogram: FakeIdeogram,
    sources: dict[str, str],
    model: str,
    params: dict[str, Any],
    script: list[str],
) -> None:
    fake_ideogram.script.extend(script)
    key = ideogram_api.key(credits=100)
    job = ideogram_api.submit_and_wait(key, request(model, params, sources))
    assert job["status"] == "COMPLETED", job
    assert len(fake_ideogram.calls) == len(script)
    first = fake_ideogram.calls[0]
    for call in fake_ideogram.calls[1:]:
        assert (call.path, call.fields, call.files) == (first.path, first.fields, first.files)
    if script[0] == "429:1":  # Retry-After is honoured
        assert fake_ideogram.calls[1].at - fake_ideogram.calls[0].at >= 1.0
    assert len(images_of(job)) == 1
    assert job["creditCost"] > 0


def _account(api: Api, key: str) -> tuple[int, int]:
    account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    return account["balance"], account["held"]


@pytest.mark.parametrize(
    ("model", "params", "script", "code"),
    [
        ("ideogram-v2a-turbo", {}, ["422-safety"], "content_filtered"),
        ("ideogram-v4-balanced", {}, ["unsafe"], "content_filtered"),
        ("ideogram-v3-turbo", EDIT, ["unsafe"], "content_filtered"),
        ("ideogram-v2", EDIT, ["422-safety"], "content_filtered"),
        ("ideogram-v4-quality", {}, ["500"] * 4, "upstream_unavailable"),
    ],
    ids=["legacy-422", "v4-unsafe", "v3-inpaint-unsafe", "legacy-edit-422", "v4-5xx-4x"],
)
def test_refusals_and_exhausted_retries_fail_the_job_uncharged(
    ideogram_api: Api,
    fake_ideogram: FakeIdeogram,
    sources: dict[str, str],
    model: str,
    params: dict[str, Any],
    script: list[str],
    code: str,
) -> None:
    fake_ideogram.script.extend(script)
    key = ideogram_api.key(credits=100)
    job = ideogram_api.submit_and_wait(key, request(model, params, sources))
    assert job["status"] == "FAILED", job
    assert job["errorCode"] == code
    assert job["creditCost"] == 0
    assert _account(ideogram_api, key) == (100, 0)
    assert len(fake_ideogram.calls) == len(script)  # a safety refusal is not retried


@pytest.mark.parametrize(
    ("model", "script", "credits"),
    [("ideogram-v4-turbo", ["ok", "unsafe"], 3), ("ideogram-v2", ["half-unsafe"], 8)],
    ids=["v4-second-request-unsafe", "legacy-half-unsafe"],
)
def test_only_safe_images_are_delivered_and_charged(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, model: str, script: list[str], credits: int
) -> None:
    fake_ideogram.script.extend(script)
    key = ideogram_api.key(credits=100)
    job = ideogram_api.submit_and_wait(key, request(model, {"top": {"num_images": 2}}))
    assert job["status"] == "COMPLETED", job
    assert len(images_of(job)) == 1
    assert job["result"]["metadata"]["withheldUnsafe"] == 1
    assert job["creditCost"] == credits
    assert _account(ideogram_api, key) == (100 - credits, 0)


def test_fake_serves_each_route_as_ideogram_documents_it(fake_ideogram: FakeIdeogram) -> None:
    """The fake is only useful if it is strict: check each route's refusals directly."""
    client = httpx.Client(
        base_url=fake_ideogram.base_url, headers={"Api-Key": fake_ideogram.api_key}
    )
    scene, mask = png_bytes(SCENE), png_bytes(MASK)
    other_size = png_bytes(np.zeros((10, 10, 3), np.uint8))

    def post(path: str, data: Any = None, files: Any = None, **kw: Any) -> int:
        """A multipart POST (text fields as parts without a filename), or JSON with json=."""
        parts = [(name, (None, str(value))) for name, value in (data or {}).items()]
        parts += list((files or {}).items())
        return client.post(path, files=parts or None, **kw).status_code

    inpaint = "/v1/ideogram-v3/inpaint"
    pair = {"image": ("i.png", scene, "image/png"), "mask": ("m.png", mask, "image/png")}
    assert post(inpaint, {"prompt": "p"}, pair) == 200
    assert post(inpaint, {"prompt": "p"}, {"image": pair["image"]}) == 400  # no mask
    assert post(inpaint, {"prompt": "p", "negative_prompt": "x"}, pair) == 400
    assert post(inpaint, {"prompt": "p", "aspect_ratio": "1x1"}, pair) == 400
    assert post(inpaint, {"prompt": "p"}, {**pair, "mask": ("m.png", other_size)}) == 400
    assert post(inpaint, {"prompt": "p", "image": "http://x/i.png"}, {"mask": pair["mask"]}) == 400

    v4 = "/v1/ideogram-v4/generate"
    assert post(v4, {"text_prompt": "p", "rendering_speed": "TURBO"}) == 200
    form = client.post(v4, data={"text_prompt": "p"})
    assert form.status_code == 400  # url-encoded: Ideogram documents multipart/form-data
    assert post(v4, {"prompt": "p"}) == 400
    assert post(v4, {"text_prompt": "p", "json_prompt": "{}"}) == 400
    assert post(v4, {"text_prompt": "p", "resolution": "1024x1024"}) == 400
    assert post(v4, {"text_prompt": "p", "rendering_speed": "FLASH"}) == 400
    for extra in ("num_images", "seed", "negative_prompt", "style_type", "magic_prompt"):
        assert post(v4, {"text_prompt": "p", extra: "1"}) == 400, extra

    legacy = {"prompt": "p", "model": "V_2A", "aspect_ratio": "ASPECT_16_9", "num_images": 1}
    assert post("/generate", json={"image_request": legacy}) == 200
    assert post("/generate", data=legacy) == 400  # multipart: the legacy route takes JSON
    assert post("/generate", json=legacy) == 400  # not wrapped in image_request
    for bad in (
        {"aspect_ratio": "16:9"},
        {"aspect_ratio": "ASPECT_4_5"},
        {"aspect_ratio": None, "resolution": "RESOLUTION_800_1280"},
        {"num_images": "2"},
        {"negative_prompt": "x"},  # not on V_2A
        {"rendering_speed": "TURBO"},
        {"model": "V_3"},
    ):
        request_ = {k: v for k, v in {**legacy, **bad}.items() if v is not None}
        assert post("/generate", json={"image_request": request_}) == 400, bad
    assert post("/generate", json={"image_request": {**legacy, "model": "V_2"}}) == 200

    edit = {"image_file": ("i.png", scene, "image/png"), "mask": ("m.png", mask, "image/png")}
    assert post("/edit", {"prompt": "p", "model": "V_2_TURBO"}, edit) == 200
    assert post("/edit", {"prompt": "p", "model": "V_2A"}, edit) == 400
    assert post("/edit", {"prompt": "p"}, edit) == 400  # model is required
    assert post("/edit", {"prompt": "p", "model": "V_2"}, pair) == 400  # image, not image_file

    assert post("/v1/ideogram-v3/edit", {"prompt": "p"}, pair) == 404  # legacy, to be removed
    for path in ("/v1/ideogram-v3/inpaint", v4, "/generate", "/edit"):  # the key, always
        assert (
            httpx.post(fake_ideogram.base_url + path, json={"image_request": legacy}).status_code
            == 401
        )
    client.close()
