"""The image tools' request bodies agree with Apiframe's, field for field: every body that
Apiframe's schema accepts is accepted, every body it refuses is refused (formats aside: an
image that is not a URL is refused later, by the image-source check, with a 400 too)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from castframe.catalog import tool_params as tools
from tests.support.apiframe_tool_requests import BACKGROUND_REMOVE_REQUEST, UPSCALE_REQUEST

IMAGE = "https://example.com/photo.png"
MODELS: dict[str, tuple[type[BaseModel], str, dict[str, Any]]] = {
    "bria-bg-remove": (tools.BRIA_REQUEST, "briaBgRemoveParams", BACKGROUND_REMOVE_REQUEST),
    "851-bg-remove": (tools.LAB851_REQUEST, "lab851BgRemoveParams", BACKGROUND_REMOVE_REQUEST),
    "topaz-image-upscale": (tools.TOPAZ_REQUEST, "topazUpscaleParams", UPSCALE_REQUEST),
    "clarity-upscale": (tools.CLARITY_REQUEST, "clarityUpscaleParams", UPSCALE_REQUEST),
}

GOOD: dict[str, list[dict[str, Any]]] = {
    "bria-bg-remove": [{}, {"content_moderation": False}, {"content_moderation": True}],
    "851-bg-remove": [
        {},
        *(
            {"background_type": kind}
            for kind in ("rgba", "map", "green", "white", "blur", "overlay")
        ),
        {"threshold": 0},
        {"threshold": 1},
        {"threshold": 0.35, "reverse": True, "format": "jpg"},
        {"format": "png"},
    ],
    "topaz-image-upscale": [
        {},
        *({"upscale_factor": factor} for factor in (1, 2, 4, 6)),
        {"upscale_factor": 2.0},
        {"model_type": "cgi", "output_format": "jpg", "seed": 7},
        {"face_enhance": False, "face_enhance_strength": 0.5, "face_enhance_creativity": 1},
        {"model_type": "redefine"},
        {"seed": -3},
    ],
    "clarity-upscale": [
        {},
        *({"scale_factor": factor} for factor in (1, 2, 4, 8)),
        {"prompt": "sharp", "negative_prompt": "blur", "creativity": 0.3, "resemblance": 3},
        {"dynamic": 1, "sharpen": 10, "num_inference_steps": 100, "output_format": "webp"},
    ],
}

BAD: dict[str, list[dict[str, Any]]] = {
    "bria-bg-remove": [{"content_moderation": "yes"}, {"other": 1}],
    "851-bg-remove": [
        {"background_type": "transparent"},
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"threshold": "0.5"},
        {"reverse": "true"},
        {"format": "webp"},
        {"type": "rgba"},
    ],
    "topaz-image-upscale": [
        {"upscale_factor": 3},
        {"upscale_factor": 8},
        {"upscale_factor": "2"},
        {"upscale_factor": 2.5},
        {"model_type": "standard"},
        {"face_enhance_strength": 2},
        {"output_format": "webp"},
        {"seed": 1.5},
        {"scale_factor": 2},
    ],
    "clarity-upscale": [
        {"scale_factor": 6},
        {"prompt": "x" * 2001},
        {"creativity": 1.1},
        {"resemblance": 3.5},
        {"dynamic": 0},
        {"sharpen": 11},
        {"num_inference_steps": 0},
        {"num_inference_steps": 1.5},
        {"output_format": "gif"},
        {"upscale_factor": 2},
    ],
}


def body(model: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    _, key, _ = MODELS[model]
    return {"model": model, key: {"image": IMAGE, **params}, **extra}


def accepted_by_apiframe(schema: dict[str, Any], document: dict[str, Any]) -> bool:
    return Draft202012Validator(schema).is_valid(document)


def accepted_by_us(model: str, document: dict[str, Any]) -> bool:
    try:
        MODELS[model][0].model_validate(copy.deepcopy(document))
    except ValidationError:
        return False
    return True


CASES = [(model, params, True) for model, items in GOOD.items() for params in items] + [
    (model, params, False) for model, items in BAD.items() for params in items
]


@pytest.mark.parametrize(("model", "params", "valid"), CASES, ids=lambda value: str(value)[:40])
def test_the_body_is_judged_as_apiframe_judges_it(
    model: str, params: dict[str, Any], valid: bool
) -> None:
    document = body(model, params)
    schema = MODELS[model][2]
    assert accepted_by_apiframe(schema, document) is valid
    assert accepted_by_us(model, document) is valid


@pytest.mark.parametrize("model", MODELS)
def test_the_envelope_is_apiframes(model: str) -> None:
    schema = MODELS[model][2]
    with_webhook = body(
        model, {}, webhookUrl="https://example.com/hook", webhookEvents=["completed"]
    )
    assert accepted_by_apiframe(schema, with_webhook) and accepted_by_us(model, with_webhook)
    _, key, _ = MODELS[model]
    for document in (
        {"model": model},  # the params block is required
        {"model": model, key: {}},  # and so is its image
        body(model, {}, prompt="a prompt"),  # no prompt in a tool's body
        body(model, {}, webhookEvents=[]),
        body(model, {}, webhookEvents=["done"]),
    ):
        assert not accepted_by_apiframe(schema, document), document
        assert not accepted_by_us(model, document), document


@pytest.mark.parametrize("model", MODELS)
def test_our_schema_has_apiframes_fields_and_nothing_else(model: str) -> None:
    request, key, schema = MODELS[model]
    ours = request.model_json_schema(by_alias=True)
    block = ours["$defs"][ours["properties"][key]["$ref"].split("/")[-1]]
    theirs = next(
        variant["properties"][key]
        for variant in schema["oneOf"]
        if variant["properties"]["model"]["enum"] == [model]
    )
    assert set(block["properties"]) == set(theirs["properties"])
    assert block["required"] == theirs["required"] == ["image"]
    assert block["additionalProperties"] is False
    assert set(ours["properties"]) == {"model", key, "webhookUrl", "webhookEvents"}


def test_normalised_params_keep_not_given_apart_from_defaults() -> None:
    params = tools.normalise_851(tools.LAB851_REQUEST.model_validate(body("851-bg-remove", {})))
    assert params["background_type"] is None and params["threshold"] is None
    assert params["output_format"] == "png" and params["num_images"] == 1
    jpg = tools.normalise_851(
        tools.LAB851_REQUEST.model_validate(body("851-bg-remove", {"format": "jpg"}))
    )
    assert jpg["output_format"] == "jpeg"
    topaz = tools.normalise_topaz(
        tools.TOPAZ_REQUEST.model_validate(body("topaz-image-upscale", {"upscale_factor": 6.0}))
    )
    assert topaz["upscale_factor"] == 6 and tools.factor_of(topaz) == 6
    clarity = tools.normalise_clarity(
        tools.CLARITY_REQUEST.model_validate(body("clarity-upscale", {"prompt": "crisp"}))
    )
    assert clarity["prompt"] == "crisp" and tools.factor_of(clarity) == 2
