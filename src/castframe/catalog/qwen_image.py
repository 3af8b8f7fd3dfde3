"""``qwen-image``: Qwen/Qwen-Image (Apache-2.0), with Apiframe's ``qwenImageParams``.

Apiframe's block is fal's ``fal-ai/qwen-image`` input, and the model follows fal's
semantics:

- ``task_type`` chooses the work: ``text-to-image`` (the default without ``image_url``),
  ``image-to-image`` (the default with it: ``strength``, 0.6 by default, is how much is
  repainted) or ``image-edit`` (an instruction applied to ``image_url``); the image tasks
  need ``image_url``, and text-to-image refuses one;
- ``image_size`` is one of fal's presets (landscape_4_3, 1024x768, by default); an image
  task without one keeps its input's proportions;
- ``num_images`` 1 to 4, each priced;
- ``guidance_scale`` (2.5 by default) is Qwen-Image's true classifier-free guidance scale
  (diffusers documents that the plain guidance input has no effect on Qwen-Image);
- ``num_inference_steps`` (30 by default); ``acceleration`` ``regular`` or ``high`` runs
  half or a quarter of them (at least 2);
- ``output_format`` png (default) or jpeg.

Served by the ``diffusers`` engine where the operator configured the weights, else by the
sandbox. Priced at fal's US$0.02 per megapixel, per image: 2 credits (every output is
about a megapixel or less).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, model_validator

from castframe.catalog.base import ImageField, ModelSpec
from castframe.catalog.envelope import Envelope, request_model
from castframe.catalog.fields import Fraction, Scale, Seed, Source, lower

IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "square": (512, 512),
    "square_hd": (1024, 1024),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
"""fal's presets, (width, height)."""
DEFAULT_IMAGE_SIZE = "landscape_4_3"
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 2.5
DEFAULT_STRENGTH = 0.6
ACCELERATION_FACTOR = {"none": 1.0, "regular": 0.5, "high": 0.25}
"""The share of the requested steps each acceleration runs."""
OUTPUT_FORMATS = {"png": "png", "jpeg": "jpeg"}
TASKS = ("text-to-image", "image-to-image", "image-edit")
SIDE_MULTIPLE = 16
"""Qwen-Image's latent grid: its VAE downsamples 8x and the transformer packs 2x2 patches."""


class QwenImageParams(BaseModel):
    """``qwenImageParams``: Apiframe's eleven fields, types and ranges as its spec writes
    them."""

    model_config = ConfigDict(extra="forbid")

    acceleration: Literal["none", "regular", "high"] | None = Field(
        default=None, description="none (default), regular (half the steps) or high (a quarter)."
    )
    guidance_scale: Scale | None = Field(
        default=None, description="True classifier-free guidance scale, 0 to 20 (2.5 by default)."
    )
    image_size: (
        Literal[
            "square",
            "square_hd",
            "portrait_4_3",
            "portrait_16_9",
            "landscape_4_3",
            "landscape_16_9",
        ]
        | None
    ) = Field(default=None, description="Output size preset; landscape_4_3 by default.")
    image_url: Source | None = Field(
        default=None,
        description="The image of an image-to-image or image-edit task: an http(s) URL, a "
        "data:image/...;base64 URI, or upload://id.",
    )
    negative_prompt: Annotated[str, Field(max_length=500)] | None = Field(
        default=None, description="What the image should not show."
    )
    num_images: Annotated[StrictInt, Field(ge=1, le=4)] | None = Field(
        default=None, description="Images to make, 1 to 4."
    )
    num_inference_steps: Annotated[StrictInt, Field(ge=2, le=250)] | None = Field(
        default=None, description="Denoising steps, 2 to 250 (30 by default)."
    )
    output_format: Annotated[Literal["png", "jpeg"], BeforeValidator(lower)] | None = Field(
        default=None, description="png (default) or jpeg."
    )
    seed: Seed | None = None
    strength: Fraction | None = Field(
        default=None, description="Image-to-image: how much is repainted, 0 to 1 (0.6)."
    )
    task_type: Literal["text-to-image", "image-to-image", "image-edit"] | None = Field(
        default=None,
        description="text-to-image (default without image_url), image-to-image (default "
        "with it) or image-edit.",
    )

    @model_validator(mode="after")
    def _task(self) -> QwenImageParams:
        task = task_of(self)
        if task == "text-to-image" and self.image_url:
            raise ValueError("image_url needs task_type image-to-image or image-edit")
        if task != "text-to-image" and not self.image_url:
            raise ValueError(f"task_type {task} needs image_url")
        if self.strength is not None and task != "image-to-image":
            raise ValueError("strength applies to task_type image-to-image only")
        return self


def task_of(params: QwenImageParams) -> str:
    return params.task_type or ("image-to-image" if params.image_url else "text-to-image")


def accelerated_steps(steps: int, acceleration: str) -> int:
    """The steps an acceleration runs: a share of the requested ones, at least 2."""
    return max(2, math.ceil(steps * ACCELERATION_FACTOR[acceleration]))


def fit_image_size(width: int, height: int, megapixels: float = 1.0) -> tuple[int, int]:
    """An image task's output without ``image_size``: the input's proportions at about
    ``megapixels``, multiples of 16 (the size the Qwen-Image pipelines work at)."""
    ratio = width / height
    across = math.sqrt(megapixels * 1024 * 1024 * ratio)

    def fit(side: float) -> int:
        return max(SIDE_MULTIPLE, round(side / SIDE_MULTIPLE) * SIDE_MULTIPLE)

    return fit(across), fit(across / ratio)


def _normalise(request: BaseModel) -> dict[str, Any]:
    assert isinstance(request, Envelope)
    params: QwenImageParams = getattr(request, "qwenImageParams")  # noqa: B009
    width, height = IMAGE_SIZES[params.image_size or DEFAULT_IMAGE_SIZE]
    task = task_of(params)
    acceleration = params.acceleration or "none"
    steps = params.num_inference_steps or DEFAULT_STEPS
    return {
        "prompt": request.prompt,
        "negative_prompt": params.negative_prompt or None,
        "seed": params.seed,
        "num_images": params.num_images or 1,
        "width": width,
        "height": height,
        "output_format": OUTPUT_FORMATS[params.output_format or "png"],
        "image_url": params.image_url,
        "task_type": task,
        "image_size": params.image_size,
        "size_from_image": task != "text-to-image" and params.image_size is None,
        "guidance_scale": (
            DEFAULT_GUIDANCE if params.guidance_scale is None else params.guidance_scale
        ),
        "acceleration": acceleration,
        "num_inference_steps": steps,
        "steps": accelerated_steps(steps, acceleration),
        "strength": (
            (DEFAULT_STRENGTH if params.strength is None else params.strength)
            if task == "image-to-image"
            else None
        ),
    }


QWEN_IMAGE = ModelSpec(
    id="qwen-image",
    label="Qwen-Image",
    description="Alibaba's 20B open image model (Apache-2.0): strong text rendering, "
    "text-to-image, image-to-image and instruction edits.",
    family="qwen",
    params_key="qwenImageParams",
    request_model=request_model("qwen-image", "qwenImageParams", QwenImageParams),
    normalise=_normalise,
    prices={"standard": 2},
    image_fields=(ImageField("image_url", "image"),),
    max_outputs=4,
    example={
        "prompt": 'a café chalkboard that reads "Castframe: open models"',
        "model": "qwen-image",
        "qwenImageParams": {"image_size": "landscape_16_9", "num_images": 2},
    },
)
