"""Request bodies of Apiframe's image tools: ``POST /v2/images/background-remove``
(``briaBgRemoveParams``, ``lab851BgRemoveParams``) and ``POST /v2/images/upscale``
(``topazUpscaleParams``, ``clarityUpscaleParams``), field for field as Apiframe's OpenAPI
document writes them, and their normalisation into a job's params.

Unlike generation, a tool's body has no ``prompt``: the envelope is ``model``, the params
block (required) and the webhook fields. The params block holds the input ``image`` (a URL,
a data URI or an upload URL, like every image field).

Normalised params keep the ``COMMON_PARAMS`` keys (no prompt, one output, the output size
unknown until the image is read: ``width``/``height`` None, filled at submission when the
image is probed), ``image``, and each model's own fields with None for "not given".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    create_model,
)

from castframe.catalog.envelope import WebhookEvents, WebhookUrl

MAX_SEED = 2_147_483_647
ImageSource = Annotated[str, Field(min_length=1, json_schema_extra={"format": "uri"})]
Number = Annotated[float, Field(strict=True)]
"""A JSON number (an int is one too); a string holding a number is not, as in Apiframe's schema."""
Unit = Annotated[Number, Field(ge=0, le=1)]


def _integral(value: Any) -> Any:
    """A factor sent as ``2.0`` is the factor 2 (JSON numbers carry no int/float type)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


TopazFactor = Annotated[Literal[1, 2, 4, 6], BeforeValidator(_integral)]
ClarityFactor = Annotated[Literal[1, 2, 4, 8], BeforeValidator(_integral)]


class ToolEnvelope(BaseModel):
    """``webhookUrl`` and ``webhookEvents``: the tools' bodies have no prompt."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    webhookUrl: WebhookUrl | None = Field(
        default=None, validation_alias=AliasChoices("webhookUrl", "webhook_url")
    )
    webhookEvents: WebhookEvents | None = None


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BriaBgRemoveParams(_Block):
    """``briaBgRemoveParams``."""

    image: ImageSource
    content_moderation: StrictBool | None = None


class Lab851BgRemoveParams(_Block):
    """``lab851BgRemoveParams``: ``transparent-background``'s ``process`` arguments."""

    image: ImageSource
    background_type: Literal["rgba", "map", "green", "white", "blur", "overlay"] | None = None
    threshold: Unit | None = None
    reverse: StrictBool | None = None
    format: Literal["png", "jpg"] | None = None


class TopazUpscaleParams(_Block):
    """``topazUpscaleParams``."""

    image: ImageSource
    upscale_factor: TopazFactor | None = None
    model_type: (
        Literal["standard-v2", "low-res-v2", "cgi", "high-fidelity-v2", "text-refine", "redefine"]
        | None
    ) = None
    face_enhance: StrictBool | None = None
    face_enhance_strength: Unit | None = None
    face_enhance_creativity: Unit | None = None
    output_format: Literal["jpg", "png"] | None = None
    seed: StrictInt | None = None


class ClarityUpscaleParams(_Block):
    """``clarityUpscaleParams``: the Clarity upscaler's inputs."""

    image: ImageSource
    scale_factor: ClarityFactor | None = None
    prompt: Annotated[str, Field(max_length=2000)] | None = None
    negative_prompt: Annotated[str, Field(max_length=2000)] | None = None
    creativity: Unit | None = None
    resemblance: Annotated[Number, Field(ge=0, le=3)] | None = None
    dynamic: Annotated[Number, Field(ge=1, le=50)] | None = None
    sharpen: Annotated[Number, Field(ge=0, le=10)] | None = None
    num_inference_steps: Annotated[StrictInt, Field(ge=1, le=100)] | None = None
    output_format: Literal["png", "jpg", "webp"] | None = None
    seed: StrictInt | None = None


def tool_request(model_id: str, params_key: str, params: type[BaseModel]) -> type[ToolEnvelope]:
    """One variant of the endpoint's ``oneOf``: ``model`` fixed, the params block required."""
    name = "".join(part.capitalize() for part in model_id.split("-"))
    fields: dict[str, Any] = {"model": (Literal[model_id], ...), params_key: (params, ...)}
    return create_model(f"M{name}Request", __base__=ToolEnvelope, **fields)


OUTPUT_FORMATS = {"png": "png", "jpg": "jpeg", "webp": "webp"}
"""Apiframe's format names -> the job's ``output_format`` (media/images.py's keys)."""


def common(request: BaseModel, params_key: str, output_format: str | None) -> dict[str, Any]:
    """The ``COMMON_PARAMS`` of a tool job, and its ``image``."""
    block = getattr(request, params_key)
    seed = getattr(block, "seed", None)
    return {
        "prompt": None,
        "negative_prompt": None,
        "seed": None if seed is None else seed % (MAX_SEED + 1),
        "num_images": 1,
        "width": None,
        "height": None,
        "output_format": OUTPUT_FORMATS[output_format or "png"],
        "image": block.image,
    }


def normalise_bria(request: BaseModel) -> dict[str, Any]:
    block = request.briaBgRemoveParams  # type: ignore[attr-defined]
    return {
        **common(request, "briaBgRemoveParams", "png"),
        "content_moderation": block.content_moderation,
    }


def normalise_851(request: BaseModel) -> dict[str, Any]:
    block = request.lab851BgRemoveParams  # type: ignore[attr-defined]
    return {
        **common(request, "lab851BgRemoveParams", block.format),
        "background_type": block.background_type,
        "threshold": block.threshold,
        "reverse": block.reverse,
        "format": block.format,
    }


def normalise_topaz(request: BaseModel) -> dict[str, Any]:
    block = request.topazUpscaleParams  # type: ignore[attr-defined]
    params = common(request, "topazUpscaleParams", block.output_format)
    fields = ("model_type", "face_enhance", "face_enhance_strength", "face_enhance_creativity")
    return {
        **params,
        "upscale_factor": block.upscale_factor,
        **{name: getattr(block, name) for name in fields},
    }


def normalise_clarity(request: BaseModel) -> dict[str, Any]:
    block = request.clarityUpscaleParams  # type: ignore[attr-defined]
    params = common(request, "clarityUpscaleParams", block.output_format)
    fields = (
        "creativity",
        "resemblance",
        "dynamic",
        "sharpen",
        "num_inference_steps",
    )
    # Clarity's guidance prompts are the job's prompt and negative prompt.
    params.update(prompt=block.prompt, negative_prompt=block.negative_prompt)
    return {
        **params,
        "scale_factor": block.scale_factor,
        **{name: getattr(block, name) for name in fields},
    }


BRIA_REQUEST = tool_request("bria-bg-remove", "briaBgRemoveParams", BriaBgRemoveParams)
LAB851_REQUEST = tool_request("851-bg-remove", "lab851BgRemoveParams", Lab851BgRemoveParams)
TOPAZ_REQUEST = tool_request("topaz-image-upscale", "topazUpscaleParams", TopazUpscaleParams)
CLARITY_REQUEST = tool_request("clarity-upscale", "clarityUpscaleParams", ClarityUpscaleParams)


def factor_of(params: dict[str, Any]) -> int:
    """A normalised upscale job's factor (Topaz's ``upscale_factor`` or Clarity's
    ``scale_factor``; both default to 2, as the upstreams do)."""
    value = params.get("upscale_factor") or params.get("scale_factor") or 2
    return int(value)
