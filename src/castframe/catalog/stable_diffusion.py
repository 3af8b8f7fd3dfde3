"""``stable-diffusion-3.5-large``, ``-large-turbo``, ``-medium`` and ``stable-diffusion-3``:
Stability AI's open MMDiT models, with Apiframe's ``stableDiffusionParams``.

Apiframe's block is Replicate's ``stability-ai/stable-diffusion-3.5-*`` input, and these
models follow Replicate's semantics:

- ``aspect_ratio`` picks one of nine sizes of about one megapixel, both sides multiples of
  64 (1:1 is 1024x1024, 16:9 is 1344x768...); 1:1 by default;
- ``cfg`` and ``steps`` pass through to the sampler; each model has Replicate's defaults (the
  turbo model is distilled: 4 steps and cfg 0, so no classifier-free guidance);
- ``image`` makes it image-to-image: ``prompt_strength`` (0.85 by default) is how much of
  the image is repainted, and the output keeps the input's proportions at about a megapixel
  (Replicate ignores ``aspect_ratio`` then);
- ``output_format`` is webp by default (jpg and png too); ``output_quality`` (90 by default)
  is recorded with the job.

Served by the ``diffusers`` engine where the operator configured the weights
(CASTFRAME_DIFFUSERS_MODELS), else by the sandbox. The weights are under the Stability AI
Community Licence (free below US$1M annual revenue). Prices are Stability's API prices per
image in credits (1 credit = US$0.01): 3.5 Large 6.5, Large Turbo 4, Medium 3.5, SD3 Medium
3.5, rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from castframe.catalog.base import ImageField, ModelSpec
from castframe.catalog.envelope import Envelope, request_model
from castframe.catalog.fields import Fraction, Scale, Seed, Source, lower

ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
"""(width, height) per ratio: about a megapixel, multiples of 64 (Replicate's sizes)."""
SIDE_MULTIPLE = 64
OUTPUT_FORMATS = {"webp": "webp", "jpg": "jpeg", "png": "png"}
"""Apiframe's spellings -> the job's output format; webp by default (Replicate's)."""
DEFAULT_PROMPT_STRENGTH = 0.85
DEFAULT_OUTPUT_QUALITY = 90


@dataclass(frozen=True)
class Sampling:
    """A checkpoint's defaults when the request names no ``steps`` or ``cfg``."""

    steps: int
    cfg: float


class StableDiffusionParams(BaseModel):
    """``stableDiffusionParams``: Apiframe's nine fields, types and ranges as its spec writes
    them."""

    model_config = ConfigDict(extra="forbid")

    aspect_ratio: (
        Literal["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "9:16", "9:21"] | None
    ) = Field(default=None, description="Output ratio at about one megapixel; 1:1 by default.")
    cfg: Scale | None = Field(default=None, description="Classifier-free guidance scale, 0 to 20.")
    image: Source | None = Field(
        default=None,
        description="An image to transform (image-to-image): an http(s) URL, a "
        "data:image/...;base64 URI, or upload://id.",
    )
    negative_prompt: Annotated[str, Field(max_length=2000)] | None = Field(
        default=None, description="What the image should not show."
    )
    output_format: Annotated[Literal["webp", "jpg", "png"], BeforeValidator(lower)] | None = Field(
        default=None, description="webp (default), jpg or png."
    )
    output_quality: Annotated[StrictInt, Field(ge=0, le=100)] | None = Field(
        default=None, description="JPEG/WebP quality, 0 to 100 (90 by default)."
    )
    prompt_strength: Fraction | None = Field(
        default=None,
        description="With image: how much of it is repainted, 0 to 1 (0.85 by default).",
    )
    seed: Seed | None = None
    steps: Annotated[StrictInt, Field(ge=1, le=40)] | None = Field(
        default=None, description="Sampling steps, 1 to 40."
    )


def normalise_sd(prompt: str, params: StableDiffusionParams, sampling: Sampling) -> dict[str, Any]:
    """A validated block -> the job's params (catalog/base.py), with the model's defaults
    for ``steps`` and ``cfg`` filled in so every engine samples alike."""
    width, height = ASPECT_SIZES[params.aspect_ratio or "1:1"]
    return {
        "prompt": prompt,
        "negative_prompt": params.negative_prompt or None,
        "seed": params.seed,
        "num_images": 1,
        "width": width,
        "height": height,
        "output_format": OUTPUT_FORMATS[params.output_format or "webp"],
        "image": params.image,
        "aspect_ratio": params.aspect_ratio,
        "cfg": sampling.cfg if params.cfg is None else params.cfg,
        "steps": params.steps or sampling.steps,
        "prompt_strength": (
            DEFAULT_PROMPT_STRENGTH if params.prompt_strength is None else params.prompt_strength
        ),
        "output_quality": (
            DEFAULT_OUTPUT_QUALITY if params.output_quality is None else params.output_quality
        ),
    }


def image_to_image_size(width: int, height: int) -> tuple[int, int]:
    """Image-to-image output: the input's proportions at about a megapixel, multiples of 64
    (ratios beyond 21:9 are brought back to it)."""
    ratio = min(max(width / height, 9 / 21), 21 / 9)
    across = (1024 * 1024 * ratio) ** 0.5
    down = across / ratio

    def fit(side: float) -> int:
        return max(SIDE_MULTIPLE, round(side / SIDE_MULTIPLE) * SIDE_MULTIPLE)

    return fit(across), fit(down)


IMAGE_FIELDS = (ImageField("image", "image"),)


def _spec(model_id: str, label: str, description: str, sampling: Sampling, price: int) -> ModelSpec:
    def normalise(request: BaseModel) -> dict[str, Any]:
        assert isinstance(request, Envelope)
        params: StableDiffusionParams = getattr(request, "stableDiffusionParams")  # noqa: B009
        return normalise_sd(request.prompt, params, sampling)

    return ModelSpec(
        id=model_id,
        label=label,
        description=description,
        family="stable-diffusion",
        params_key="stableDiffusionParams",
        request_model=request_model(model_id, "stableDiffusionParams", StableDiffusionParams),
        normalise=normalise,
        prices={"standard": price},
        image_fields=IMAGE_FIELDS,
        max_outputs=1,
        example={
            "prompt": "a lighthouse on a cliff at dawn, oil painting",
            "model": model_id,
            "stableDiffusionParams": {"aspect_ratio": "3:2", "output_format": "png"},
        },
    )


SAMPLING = {
    "stable-diffusion-3.5-large": Sampling(steps=28, cfg=3.5),
    "stable-diffusion-3.5-large-turbo": Sampling(steps=4, cfg=0.0),
    "stable-diffusion-3.5-medium": Sampling(steps=40, cfg=5.0),
    "stable-diffusion-3": Sampling(steps=28, cfg=3.5),
}
"""Replicate's defaults per model (the turbo model is distilled to 4 steps without CFG)."""

SD35_LARGE = _spec(
    "stable-diffusion-3.5-large",
    "Stable Diffusion 3.5 Large",
    "Stability AI's 8B MMDiT: detailed, prompt-faithful images at about a megapixel, "
    "image-to-image with a prompt strength; open weights (Stability Community Licence).",
    SAMPLING["stable-diffusion-3.5-large"],
    7,
)
SD35_LARGE_TURBO = _spec(
    "stable-diffusion-3.5-large-turbo",
    "Stable Diffusion 3.5 Large Turbo",
    "Stable Diffusion 3.5 Large distilled to 4 steps without guidance: fast drafts.",
    SAMPLING["stable-diffusion-3.5-large-turbo"],
    4,
)
SD35_MEDIUM = _spec(
    "stable-diffusion-3.5-medium",
    "Stable Diffusion 3.5 Medium",
    "Stability AI's 2.5B MMDiT-X: good quality on modest GPUs.",
    SAMPLING["stable-diffusion-3.5-medium"],
    4,
)
SD3_MEDIUM = _spec(
    "stable-diffusion-3",
    "Stable Diffusion 3 Medium",
    "Stability AI's first MMDiT (2B), the model Stable Diffusion 3.5 follows.",
    SAMPLING["stable-diffusion-3"],
    4,
)

STABLE_DIFFUSION_MODELS = (SD35_LARGE, SD35_LARGE_TURBO, SD35_MEDIUM, SD3_MEDIUM)
