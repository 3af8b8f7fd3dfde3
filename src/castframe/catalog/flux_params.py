"""``fluxParams``: Apiframe's params block of the FLUX family, its size arithmetic and prices.

Apiframe types the block as the union of Replicate's ``black-forest-labs/*`` inputs (15
fields) for every FLUX id; what each model can do differs, so each model declares its
``FluxLimits`` (the sizes Black Forest Labs documents for it) and the block's validator
checks the sizes against them: a width of 1500 is a 400 for FLUX1.1 [pro], whose sides stop
at 1440, and 1000 is a 400 everywhere (sides are multiples of 32, or 16 for FLUX.2).

The output size is settled here, at submission, from either ``width`` + ``height`` or
``aspect_ratio`` (+ ``resolution``, megapixels), so the job, the sandbox and the ``bfl``
engine agree on it; ``resolution: "match_input_image"`` (FLUX.2) keeps the first input
image's size, known only when the job runs.

Which fields a BFL route lacks is the ``bfl`` engine's business (engines/bfl.py: a 400
naming it); the sandbox honours every field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from castframe.catalog.base import MAX_SEED, ImageField

MEGAPIXEL = 1024 * 1024
"""BFL's and Replicate's "1 MP" is a 1024x1024 image."""
RESOLUTIONS: dict[str, float] = {"0.5MP": 0.5, "1MP": 1.0, "2MP": 2.0, "4MP": 4.0}
MATCH_INPUT = "match_input_image"
WIDEST, TALLEST = 21 / 9, 9 / 21
"""BFL's aspect ratios run from 21:9 to 9:21."""
OUTPUT_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}
"""Apiframe's spellings -> the job's output format (what Castframe stores)."""
DEFAULT_OUTPUT_FORMAT = "jpeg"
"""BFL's default (and so Apiframe's) when ``output_format`` is not given."""


@dataclass(frozen=True)
class FluxLimits:
    """The sizes one FLUX model makes, as Black Forest Labs documents them."""

    multiple: int
    """Both sides are multiples of this."""
    min_side: int
    max_side: int
    default_size: tuple[int, int]
    """(width, height) when the request names no size (BFL's default for the route)."""
    default_megapixels: float = 1.0
    """The pixel budget of an ``aspect_ratio`` given without ``resolution``."""
    max_megapixels: float = 4.0
    match_input: bool = False
    """Whether ``resolution: "match_input_image"`` applies (FLUX.2's input images)."""
    fixed_megapixels: float | None = None
    """A model whose size is its ratio at a fixed pixel count (FLUX1.1 [pro] Ultra)."""
    default_ratio: str = "1:1"


def _lower_format(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _resolution_spelling(value: Any) -> Any:
    """``1MP``, ``1 MP`` and ``1mp`` alike (Replicate writes "1 MP")."""
    if not isinstance(value, str):
        return value
    compact = value.replace(" ", "")
    if compact.lower() == MATCH_INPUT:
        return MATCH_INPUT
    for name in RESOLUTIONS:
        if compact.lower() == name.lower():
            return name
    return value


Side = Annotated[StrictInt, Field(ge=256, le=2048)]
Source = Annotated[str, Field(min_length=1, max_length=30 * 1024 * 1024)]
Ratio = Annotated[str, Field(pattern=r"^\d+:\d+$", max_length=16)]


class FluxParams(BaseModel):
    """``fluxParams``: Apiframe's 15 fields, their types and ranges as its spec writes them;
    the model's ``limits`` are checked after."""

    model_config = ConfigDict(extra="forbid")
    limits: ClassVar[FluxLimits]

    aspect_ratio: Ratio | None = Field(
        default=None, description="Output ratio, e.g. 16:9 (21:9 to 9:21); not with width/height."
    )
    go_fast: StrictBool | None = Field(default=None, description="Faster, lower-quality sampling.")
    guidance: Annotated[float, Field(ge=1.5, le=10)] | None = Field(
        default=None, description="Prompt adherence, 1.5 to 10."
    )
    height: Side | None = Field(default=None, description="Output height in pixels (with width).")
    image_prompt: Source | None = Field(
        default=None,
        description="An image that guides the composition: an http(s) URL, a "
        "data:image/...;base64 URI, or upload://id.",
    )
    image_prompt_strength: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="Blend of prompt (0) and image_prompt (1)."
    )
    input_images: Annotated[list[Source], Field(max_length=10)] | None = Field(
        default=None, description="Reference images (FLUX.2): URLs, data URIs or upload://id."
    )
    output_format: (
        Annotated[Literal["jpg", "png", "webp"], BeforeValidator(_lower_format)] | None
    ) = Field(default=None, description="jpg (default), png or webp.")
    output_quality: Annotated[StrictInt, Field(ge=0, le=100)] | None = Field(
        default=None, description="JPEG/WebP quality, 0 to 100."
    )
    prompt_upsampling: StrictBool | None = Field(
        default=None, description="Let the model rewrite the prompt for more creative output."
    )
    raw: StrictBool | None = Field(default=None, description="Ultra's less processed, candid look.")
    resolution: (
        Annotated[str, BeforeValidator(_resolution_spelling), Field(max_length=32)] | None
    ) = Field(default=None, description="Megapixels with aspect_ratio: 0.5MP, 1MP, 2MP or 4MP.")
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None
    steps: Annotated[StrictInt, Field(ge=1, le=50)] | None = Field(
        default=None, description="Sampling steps, 1 to 50."
    )
    width: Side | None = Field(default=None, description="Output width in pixels (with height).")

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        """``guidance`` and ``image_prompt_strength`` are JSON numbers: integers are numbers
        too, but booleans and strings are not."""
        if isinstance(data, dict):
            for name in ("guidance", "image_prompt_strength"):
                value = data.get(name)
                if isinstance(value, bool) or (
                    value is not None and not isinstance(value, int | float)
                ):
                    raise ValueError(f"{name} must be a number")
        return data

    @model_validator(mode="after")
    def _sizes(self) -> FluxParams:
        output_size(self.limits, self.width, self.height, self.aspect_ratio, self.resolution)
        if self.resolution == MATCH_INPUT and not self.input_images:
            raise ValueError("resolution match_input_image needs input_images")
        return self


def parse_ratio(ratio: str) -> float:
    across, down = (int(part) for part in ratio.split(":"))
    if across == 0 or down == 0:
        raise ValueError(f"aspect_ratio {ratio} has a zero side")
    value = across / down
    if not TALLEST - 1e-9 <= value <= WIDEST + 1e-9:
        raise ValueError(f"aspect_ratio {ratio} is outside 21:9 to 9:21")
    return value


def _fit(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def ratio_size(ratio: float, megapixels: float, limits: FluxLimits) -> tuple[int, int]:
    """The size of ``ratio`` at ``megapixels``, in the model's multiples, shrunk (keeping the
    ratio) until the longer side fits its maximum."""
    pixels = megapixels * MEGAPIXEL
    width = math.sqrt(pixels * ratio)
    height = width / ratio
    longest = max(width, height)
    if longest > limits.max_side:
        width, height = width * limits.max_side / longest, height * limits.max_side / longest
    width_px = min(_fit(width, limits.multiple), limits.max_side)
    height_px = min(_fit(height, limits.multiple), limits.max_side)
    return max(width_px, limits.min_side), max(height_px, limits.min_side)


def output_size(
    limits: FluxLimits,
    width: int | None,
    height: int | None,
    aspect_ratio: str | None,
    resolution: str | None,
) -> tuple[int, int]:
    """(width, height) of a request, or ValueError saying what is wrong with its sizes."""
    if (width is None) != (height is None):
        raise ValueError("give width and height together")
    if width is not None and height is not None:
        if aspect_ratio is not None or resolution is not None:
            raise ValueError("give width and height, or aspect_ratio and resolution, not both")
        for name, side in (("width", width), ("height", height)):
            if side % limits.multiple:
                raise ValueError(f"{name} must be a multiple of {limits.multiple} for this model")
            if not limits.min_side <= side <= limits.max_side:
                raise ValueError(
                    f"{name} must be {limits.min_side} to {limits.max_side} for this model"
                )
        if width * height > limits.max_megapixels * MEGAPIXEL + 1:
            raise ValueError(f"width x height is over {limits.max_megapixels:g} MP for this model")
        return width, height
    if resolution is not None and resolution != MATCH_INPUT and resolution not in RESOLUTIONS:
        allowed = [*RESOLUTIONS, *([MATCH_INPUT] if limits.match_input else [])]
        raise ValueError(f"resolution must be one of {', '.join(allowed)}")
    if resolution == MATCH_INPUT and not limits.match_input:
        raise ValueError("this model has no input images to match: use 0.5MP, 1MP, 2MP or 4MP")
    ratio = parse_ratio(aspect_ratio) if aspect_ratio is not None else None
    if limits.fixed_megapixels is not None:
        if resolution not in (None, _megapixel_name(limits.fixed_megapixels)):
            raise ValueError(
                f"this model renders at {_megapixel_name(limits.fixed_megapixels)} only"
            )
        return ratio_size(
            ratio if ratio is not None else parse_ratio(limits.default_ratio),
            limits.fixed_megapixels,
            limits,
        )
    if ratio is None and resolution is None:
        return limits.default_size
    if resolution == MATCH_INPUT:
        return limits.default_size  # the input image's size, settled when the job runs
    megapixels = RESOLUTIONS[resolution] if resolution else limits.default_megapixels
    if megapixels > limits.max_megapixels:
        raise ValueError(f"this model makes at most {limits.max_megapixels:g} MP")
    return ratio_size(ratio if ratio is not None else 1.0, megapixels, limits)


def _megapixel_name(megapixels: float) -> str:
    return next(name for name, value in RESOLUTIONS.items() if value == megapixels)


IMAGE_FIELDS = (
    # The image prompt guides the look and composition of a new image (the sandbox takes
    # its palette); input images are FLUX.2's content references.
    ImageField("image_prompt", "style"),
    ImageField("input_images", "reference", many=True),
)


def normalise_flux(prompt: str, params: FluxParams) -> dict[str, Any]:
    """A validated ``fluxParams`` -> the job's params (catalog/base.py): the common keys,
    the image fields, and FLUX's own fields as given (None when not given)."""
    width, height = output_size(
        params.limits, params.width, params.height, params.aspect_ratio, params.resolution
    )
    return {
        "prompt": prompt,
        "negative_prompt": None,
        "seed": params.seed,
        "num_images": 1,
        "width": width,
        "height": height,
        "output_format": OUTPUT_FORMATS[params.output_format or DEFAULT_OUTPUT_FORMAT],
        "image_prompt": params.image_prompt,
        "input_images": params.input_images,
        "aspect_ratio": params.aspect_ratio,
        "resolution": params.resolution,
        "size_given": params.width is not None,
        "match_input_image": params.resolution == MATCH_INPUT,
        "go_fast": params.go_fast,
        "guidance": params.guidance,
        "steps": params.steps,
        "prompt_upsampling": params.prompt_upsampling,
        "raw": params.raw,
        "image_prompt_strength": params.image_prompt_strength,
        "output_quality": params.output_quality,
    }


@dataclass(frozen=True)
class MegapixelPrice:
    """FLUX.2's price: the first megapixel, then each further megapixel of output and of
    input images (BFL's megapixel pricing, rounded up to whole credits)."""

    first: float
    extra: float
    most: int = 12
    """The dearest tier (4 MP out and 8 inputs)."""

    def tiers(self) -> dict[str, int]:
        return {
            f"{count}mp": math.ceil(self.first + self.extra * (count - 1) - 1e-9)
            for count in range(1, self.most + 1)
        }


def megapixels_tier(params: Mapping[str, Any]) -> str:
    """A FLUX.2 job's tier: its output megapixels rounded up, plus one per input image (an
    input's size is not known at submission; BFL downsizes large ones)."""
    output = math.ceil(int(params["width"]) * int(params["height"]) / MEGAPIXEL - 1e-9)
    inputs = len(params.get("input_images") or [])
    return f"{min(max(output, 1) + inputs, 12)}mp"
