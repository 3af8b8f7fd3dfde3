"""``ideogram-character``: one character reference, a new scene, optional inpainting.

The request schema follows Apiframe's v2 body (``prompt``, ``model``, ``ideogramParams``) and
Ideogram's character parameters. Enum values accept any letter case and are normalised to the
documented spelling, because clients copy them from several vendors' docs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)

from castframe.catalog.base import ModelSpec
from castframe.config import Settings

ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "3:4": (864, 1152),
    "4:3": (1152, 864),
    "9:16": (736, 1312),
    "16:9": (1312, 736),
}
STYLE_TYPES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION")
MAGIC_PROMPT = ("Auto", "On", "Off")
SPEEDS = ("default", "turbo", "quality")
MAX_SEED = 2_147_483_647


def _canonical(choices: tuple[str, ...]) -> BeforeValidator:
    """Map any letter case of an enum value to its documented spelling."""
    lookup = {choice.lower(): choice for choice in choices}

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return lookup.get(value.strip().lower(), value)
        return value

    return BeforeValidator(convert)


StyleType = Annotated[
    Literal["AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION"], _canonical(STYLE_TYPES)
]
MagicPrompt = Annotated[Literal["Auto", "On", "Off"], _canonical(MAGIC_PROMPT)]
RenderingSpeed = Annotated[Literal["default", "turbo", "quality"], _canonical(SPEEDS)]
AspectRatio = Literal["1:1", "3:4", "4:3", "9:16", "16:9"]
NumImages = Annotated[StrictInt, Field(ge=1, le=4)]
ImageSource = Annotated[str, Field(min_length=1, max_length=30 * 1024 * 1024)]


class IdeogramParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    character_reference_image: ImageSource | None = Field(
        default=None,
        description="The character: an http(s) URL, a data:image/...;base64 URI, or upload://id "
        "(exactly one of this and character_id).",
    )
    character_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="A saved character (POST /v2/characters) instead of an image."
    )
    style_type: StyleType = "AUTO"
    magic_prompt_option: MagicPrompt = "Auto"
    rendering_speed: RenderingSpeed = "default"
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None
    negative_prompt: Annotated[str, Field(max_length=2000)] | None = None
    aspect_ratio: AspectRatio | None = None
    num_images: NumImages | None = None
    image: ImageSource | None = Field(default=None, description="Image to edit (with mask).")
    mask: ImageSource | None = Field(
        default=None, description="Edit mask, same size as image: black = repaint, white = keep."
    )

    @model_validator(mode="after")
    def _exclusive_fields(self) -> IdeogramParams:
        if (self.character_reference_image is None) == (self.character_id is None):
            raise ValueError("give exactly one of character_reference_image and character_id")
        if (self.image is None) != (self.mask is None):
            raise ValueError("image and mask must be given together (or neither)")
        return self


class IdeogramCharacterRequest(BaseModel):
    """Body of ``POST /v2/images/generate`` for ``model: ideogram-character``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    prompt: Annotated[str, Field(min_length=1, max_length=2000)]
    model: Literal["ideogram-character"]
    ideogramParams: IdeogramParams
    aspect_ratio: AspectRatio | None = None
    num_images: NumImages | None = None
    webhookUrl: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, validation_alias=AliasChoices("webhookUrl", "webhook_url")
    )
    webhookEvents: list[Literal["progress", "completed", "failed"]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IdeogramCharacterRequest:
        if not self.prompt.strip():
            raise ValueError("prompt must not be blank")
        for name in ("aspect_ratio", "num_images"):
            outer, inner = getattr(self, name), getattr(self.ideogramParams, name)
            if outer is not None and inner is not None and outer != inner:
                raise ValueError(f"{name} is given at top level and in ideogramParams, differently")
        return self


def _normalise(request: BaseModel) -> dict[str, Any]:
    assert isinstance(request, IdeogramCharacterRequest)
    params = request.ideogramParams
    aspect = request.aspect_ratio or params.aspect_ratio or "1:1"
    width, height = ASPECT_SIZES[aspect]
    return {
        "prompt": request.prompt,
        "negative_prompt": params.negative_prompt,
        "style_type": params.style_type,
        "magic_prompt_option": params.magic_prompt_option,
        "rendering_speed": params.rendering_speed,
        "seed": params.seed,
        "aspect_ratio": aspect,
        "width": width,
        "height": height,
        "num_images": request.num_images or params.num_images or 1,
        "character_reference_image": params.character_reference_image,
        "character_id": params.character_id,
        "image": params.image,
        "mask": params.mask,
    }


def _unit_prices(settings: Settings) -> dict[str, int]:
    return {
        "turbo": settings.price_turbo,
        "default": settings.price_default,
        "quality": settings.price_quality,
    }


IDEOGRAM_CHARACTER = ModelSpec(
    id="ideogram-character",
    name="Ideogram Character",
    description=(
        "Keep one character consistent across new scenes from a single reference image; "
        "optional inpainting places the character into an existing image under a mask."
    ),
    params_key="ideogramParams",
    request_model=IdeogramCharacterRequest,
    image_fields=("character_reference_image", "image", "mask"),
    unit_prices=_unit_prices,
    normalise=_normalise,
)
