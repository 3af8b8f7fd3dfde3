"""The FLUX catalog modules against Apiframe's variants, BFL's documented sizes, and the
outpaint canvas arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from castframe.catalog.flux_fill import FLUX_FILL_PRO
from castframe.catalog.flux_models import FLUX_2_LIMITS, FLUX_MODELS
from castframe.catalog.flux_params import ratio_size
from castframe.engines.fill_canvas import MAX_PIXELS, outpaint_inputs, plan_canvas
from tests.support.apiframe_flux import FLUX_FILL_VARIANT, generate_variant

SPECS = {spec.id: spec for spec in FLUX_MODELS}
IDS = list(SPECS)


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    return schema.get("properties", {})


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A property's schema with pydantic's ``$ref``/``anyOf [X, null]`` unwrapped."""
    if "$ref" in schema:
        return _resolve(root["$defs"][schema["$ref"].rsplit("/", 1)[-1]], root)
    options = [item for item in schema.get("anyOf", []) if item.get("type") != "null"]
    if len(options) == 1:
        return _resolve(options[0], root)
    return schema


@pytest.mark.parametrize("model_id", IDS)
def test_generate_schema_has_the_variants_fields_types_and_required_keys(model_id: str) -> None:
    ours = SPECS[model_id].request_model.model_json_schema(by_alias=True)
    spec = generate_variant(model_id)
    assert set(_properties(ours)) == set(_properties(spec))
    assert set(ours.get("required", [])) == set(spec["required"])
    assert ours.get("additionalProperties") is False
    block = _resolve(_properties(ours)["fluxParams"], ours)
    spec_block = spec["properties"]["fluxParams"]
    assert set(_properties(block)) == set(spec_block["properties"])
    assert block.get("additionalProperties") is False
    for name, expected in spec_block["properties"].items():
        got = _resolve(_properties(block)[name], ours)
        assert got.get("type") == expected["type"], name
        for bound in ("minimum", "maximum", "maxItems", "enum", "pattern"):
            if bound in expected and bound != "enum":
                assert got.get(bound) == expected[bound], (name, bound)
        if "enum" in expected and name != "resolution":
            assert set(got.get("enum", [])) == set(expected["enum"]), name


def test_fill_schema_has_the_variants_fields_types_and_required_keys() -> None:
    ours = FLUX_FILL_PRO.request_model.model_json_schema(by_alias=True)
    assert set(_properties(ours)) == set(_properties(FLUX_FILL_VARIANT))
    assert set(ours["required"]) == set(FLUX_FILL_VARIANT["required"])
    block = _resolve(_properties(ours)["fluxFillParams"], ours)
    spec_block = FLUX_FILL_VARIANT["properties"]["fluxFillParams"]
    assert set(_properties(block)) == set(spec_block["properties"])
    assert set(block["required"]) == set(spec_block["required"])
    for name, expected in spec_block["properties"].items():
        got = _resolve(_properties(block)[name], ours)
        assert got.get("type") == expected["type"], name
        if "enum" in expected:
            assert set(got["enum"]) == set(expected["enum"]), name


def _accepts(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


SPEC_VALID = [
    {"fluxParams": {"width": 512, "height": 512, "output_format": "jpg"}},
    {"fluxParams": {"aspect_ratio": "4:3", "seed": 3, "prompt_upsampling": True}},
    {"fluxParams": {}},
    {},
    {
        "fluxParams": {"aspect_ratio": "16:9"},
        "webhookUrl": "https://example.com/hook",
        "webhookEvents": ["completed"],
    },
]
SPEC_INVALID = [
    {"fluxParams": {"width": 128, "height": 512}},
    {"fluxParams": {"steps": 0}},
    {"fluxParams": {"guidance": 11}},
    {"fluxParams": {"output_format": "gif"}},
    {"fluxParams": {"aspect_ratio": "wide"}},
    {"fluxParams": {"num_outputs": 2}},
    {"fluxParams": {"raw": "yes"}},
    {"fluxParams": {"input_images": ["https://example.com/a.png"] * 11}},
    {"extra": 1},
    {"webhookEvents": []},
]


@pytest.mark.parametrize("model_id", IDS)
def test_bodies_follow_the_spec_variant(model_id: str) -> None:
    validator = Draft202012Validator(generate_variant(model_id))
    model = SPECS[model_id].request_model
    for extra in SPEC_VALID:
        body = {"model": model_id, "prompt": "a cat", **extra}
        assert validator.is_valid(body)
        sized = "width" in extra.get("fluxParams", {})
        if not (sized and model_id == "flux-1.1-pro-ultra"):
            assert _accepts(model, body), body
    for extra in SPEC_INVALID:
        body = {"model": model_id, "prompt": "a cat", **extra}
        assert not validator.is_valid(body), body
        assert not _accepts(model, body), body
    assert not _accepts(model, {"model": model_id})  # prompt is required


@pytest.mark.parametrize(
    ("model_id", "block", "message"),
    [
        ("flux-1.1-pro", {"width": 1600, "height": 512}, "256 to 1440"),
        ("flux-1.1-pro", {"width": 500, "height": 512}, "multiple of 32"),
        ("flux-2-pro", {"width": 1000, "height": 512}, "multiple of 16"),
        ("flux-2-max", {"width": 512}, "together"),
        ("flux-2-flex", {"width": 512, "height": 512, "aspect_ratio": "1:1"}, "not both"),
        ("flux-2-pro", {"aspect_ratio": "4:1"}, "21:9 to 9:21"),
        ("flux-2-pro", {"resolution": "8MP"}, "resolution must be one of"),
        ("flux-2-pro", {"resolution": "match_input_image"}, "needs input_images"),
        ("flux-1.1-pro", {"resolution": "match_input_image"}, "no input images"),
        ("flux-1.1-pro-ultra", {"resolution": "1MP"}, "4MP only"),
    ],
)
def test_sizes_are_checked_against_each_models_limits(
    model_id: str, block: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS[model_id].request_model.model_validate(
            {"model": model_id, "prompt": "x", "fluxParams": block}
        )


@pytest.mark.parametrize(
    ("model_id", "block", "size"),
    [
        ("flux-1.1-pro", {}, (1024, 768)),
        ("flux-1.1-pro", {"width": 512, "height": 512}, (512, 512)),
        ("flux-1.1-pro", {"aspect_ratio": "1:1", "resolution": "2MP"}, (1440, 1440)),
        ("flux-2-pro", {}, (1024, 1024)),
        ("flux-2-pro", {"aspect_ratio": "16:9", "resolution": "0.5MP"}, (960, 544)),
        ("flux-2-max", {"aspect_ratio": "1:1", "resolution": "4MP"}, (2048, 2048)),
        ("flux-2-flex", {"aspect_ratio": "9:16", "resolution": "4MP"}, (1152, 2048)),
        ("flux-1.1-pro-ultra", {}, (2720, 1536)),
        ("flux-1.1-pro-ultra", {"aspect_ratio": "1:1"}, (2048, 2048)),
    ],
)
def test_output_sizes(model_id: str, block: dict[str, Any], size: tuple[int, int]) -> None:
    spec = SPECS[model_id]
    params = spec.normalise(
        spec.request_model.model_validate({"model": model_id, "prompt": "x", "fluxParams": block})
    )
    assert (params["width"], params["height"]) == size
    assert params["num_images"] == 1


def test_normalised_params_hold_every_field_and_the_formats() -> None:
    spec = SPECS["flux-2-flex"]
    body = {
        "model": "flux-2-flex",
        "prompt": "x",
        "fluxParams": {"output_format": "jpg", "steps": 9},
    }
    params = spec.normalise(spec.request_model.model_validate(body))
    assert params["output_format"] == "jpeg" and params["steps"] == 9 and params["guidance"] is None
    for key in (
        "prompt",
        "negative_prompt",
        "seed",
        "num_images",
        "width",
        "height",
        "image_prompt",
        "input_images",
    ):
        assert key in params


def test_flux_2_prices_by_megapixel_in_bfls_proportions() -> None:
    pro, flex, maximum = SPECS["flux-2-pro"], SPECS["flux-2-flex"], SPECS["flux-2-max"]

    def price(spec: Any, block: dict[str, Any]) -> int:
        params = spec.normalise(
            spec.request_model.model_validate(
                {"model": spec.id, "prompt": "x", "fluxParams": block}
            )
        )
        return int(spec.price(params, None))

    assert price(pro, {"width": 1024, "height": 1024}) == 3
    assert price(pro, {"width": 1920, "height": 1088}) == 5  # 2 MP: $0.03 + $0.015
    assert price(pro, {"width": 1024, "height": 1024, "input_images": ["https://e.com/a.png"]}) == 5
    assert price(maximum, {}) == 7 and price(flex, {}) == 5
    assert SPECS["flux-1.1-pro"].price({"num_images": 1}, None) == 4
    assert SPECS["flux-1.1-pro-ultra"].price({"num_images": 1}, None) == 6
    assert FLUX_FILL_PRO.price({"num_images": 1}, None) == 5


FILL = FLUX_FILL_PRO.request_model


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"mode": "inpaint", "prompt": "x", "image": "https://e.com/a.png"}, "needs a mask"),
        ({"mode": "outpaint", "prompt": "x", "image": "https://e.com/a.png"}, "needs outpaint"),
        (
            {
                "mode": "outpaint",
                "outpaint": "Zoom out 3x",
                "prompt": "x",
                "image": "https://e.com/a.png",
            },
            "outpaint",
        ),
        (
            {
                "mode": "outpaint",
                "outpaint": "Make square",
                "prompt": "x",
                "image": "u",
                "mask": "m",
            },
            "omit mask",
        ),
        ({"mode": "inpaint", "prompt": "x", "image": "u", "mask": "m", "guidance": 6}, "guidance"),
        (
            {"mode": "inpaint", "prompt": "x", "image": "u", "mask": "m", "output_format": "webp"},
            "output_format",
        ),
        ({"mode": "inpaint", "image": "u", "mask": "m"}, "prompt"),
    ],
)
def test_fill_modes(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FILL.model_validate({"model": "flux-fill-pro", "fluxFillParams": block})


def test_fill_has_no_top_level_prompt_and_normalises_white_masks() -> None:
    assert not _accepts(
        FILL,
        {
            "model": "flux-fill-pro",
            "prompt": "x",
            "fluxFillParams": {"mode": "inpaint", "prompt": "x", "image": "u", "mask": "m"},
        },
    )
    request = FILL.model_validate(
        {
            "model": "flux-fill-pro",
            "fluxFillParams": {"mode": "inpaint", "prompt": "sky", "image": "u", "mask": "m"},
        }
    )
    params = FLUX_FILL_PRO.normalise(request)
    assert (
        params["prompt"] == "sky"
        and params["mask_paints"] == "white"
        and params["output_format"] == "jpeg"
    )
    assert FLUX_FILL_PRO.operation == "edit"


# -- outpaint canvas arithmetic ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "choice", "canvas", "place"),
    [
        ((512, 384), "Zoom out 1.5x", (768, 576), (128, 96)),
        ((512, 384), "Zoom out 2x", (1024, 768), (256, 192)),
        ((512, 384), "Make square", (512, 512), (0, 64)),
        ((384, 512), "Make square", (512, 512), (64, 0)),
        ((512, 384), "Left outpaint", (768, 384), (256, 0)),
        ((512, 384), "Right outpaint", (768, 384), (0, 0)),
        ((512, 384), "Top outpaint", (512, 576), (0, 192)),
        ((512, 384), "Bottom outpaint", (512, 576), (0, 0)),
        ((500, 300), "Left outpaint", (768, 320), (268, 10)),
    ],
)
def test_canvas_arithmetic(
    size: tuple[int, int], choice: str, canvas: tuple[int, int], place: tuple[int, int]
) -> None:
    plan = plan_canvas(*size, choice)
    assert (plan.width, plan.height) == canvas
    assert (plan.left, plan.top) == place
    assert (plan.image_width, plan.image_height) == size
    assert plan.width % 32 == 0 and plan.height % 32 == 0


def test_a_canvas_over_the_budget_is_scaled_down_whole() -> None:
    plan = plan_canvas(2000, 1500, "Zoom out 2x")
    assert plan.width * plan.height <= MAX_PIXELS
    assert plan.image_width < 2000 and abs(plan.image_width / plan.image_height - 4 / 3) < 0.01
    assert plan.right <= plan.width and plan.bottom <= plan.height


def test_outpaint_inputs_keep_the_image_and_mask_only_the_new_area() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    pixels, paint, plan = outpaint_inputs(image, "Right outpaint")
    assert pixels.shape == (plan.height, plan.width, 3) == (96, 192, 3)
    assert (pixels[:, :128] == image).all()
    assert not paint[:, :128].any() and paint[:, 128:].all()
    assert (pixels[:, 128:] == image[:, -1:]).all()  # the edge stretched over the new area


def test_ratio_size_respects_the_longest_side() -> None:
    assert ratio_size(21 / 9, 4.0, FLUX_2_LIMITS) == (2048, 880)
