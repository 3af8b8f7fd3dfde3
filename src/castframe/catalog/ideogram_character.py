"""``ideogram-character``: one character reference, a new scene, optional inpainting.

The request schema follows Apiframe's v2 body (``prompt``, ``model``, ``ideogramParams``) and
Ideogram's character parameters. Enum values accept any letter case and are normalised to the
documented spelling, because clients copy them from several vendors' docs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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
    # The documented core, then the rest of Ideogram 3.0's ratios, each at Ideogram's size.
    "1:1": (1024, 1024),
    "3:4": (864, 1152),
    "4:3": (1152, 864),
    "9:16": (736, 1312),
    "16:9": (1312, 736),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "4:5": (896, 1120),
    "5:4": (1120, 896),
    "10:16": (800, 1280),
    "16:10": (1280, 800),
    "1:2": (704, 1408),
    "2:1": (1408, 704),
    "1:3": (512, 1536),
    "3:1": (1536, 512),
}
CORE_ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")

RESOLUTIONS: tuple[str, ...] = tuple(
    # Ideogram 3.0's fixed output sizes (width x height), as its API lists them.
    [
        "512x1536",
        "576x1408",
        "576x1472",
        "576x1536",
        "640x1344",
        "640x1408",
        "640x1472",
        "640x1536",
        "704x1152",
        "704x1216",
        "704x1280",
        "704x1344",
        "704x1408",
        "704x1472",
        "736x1312",
        "768x1088",
        "768x1216",
        "768x1280",
        "768x1344",
        "800x1280",
        "832x960",
        "832x1024",
        "832x1088",
        "832x1152",
        "832x1216",
        "832x1248",
        "864x1152",
        "896x960",
        "896x1024",
        "896x1088",
        "896x1120",
        "896x1152",
        "960x832",
        "960x896",
        "960x1024",
        "960x1088",
        "1024x832",
        "1024x896",
        "1024x960",
        "1024x1024",
        "1088x768",
        "1088x832",
        "1088x896",
        "1088x960",
        "1120x896",
        "1152x704",
        "1152x832",
        "1152x864",
        "1152x896",
        "1216x704",
        "1216x768",
        "1216x832",
        "1248x832",
        "1280x704",
        "1280x768",
        "1280x800",
        "1312x736",
        "1344x640",
        "1344x704",
        "1344x768",
        "1408x576",
        "1408x640",
        "1408x704",
        "1472x576",
        "1472x640",
        "1472x704",
        "1536x512",
        "1536x576",
        "1536x640",
    ]
)

STYLE_PRESETS: tuple[str, ...] = tuple(
    # Ideogram 3.0's style presets.
    [
        "80S_ILLUSTRATION",
        "90S_NOSTALGIA",
        "ABSTRACT_ORGANIC",
        "ANALOG_NOSTALGIA",
        "ART_BRUT",
        "ART_DECO",
        "ART_POSTER",
        "AURA",
        "AVANT_GARDE",
        "BAUHAUS",
        "BLUEPRINT",
        "BLURRY_MOTION",
        "BRIGHT_ART",
        "C4D_CARTOON",
        "CHILDRENS_BOOK",
        "COLLAGE",
        "COLORING_BOOK_I",
        "COLORING_BOOK_II",
        "CUBISM",
        "DARK_AURA",
        "DOODLE",
        "DOUBLE_EXPOSURE",
        "DRAMATIC_CINEMA",
        "EDITORIAL",
        "EMOTIONAL_MINIMAL",
        "ETHEREAL_PARTY",
        "EXPIRED_FILM",
        "FLAT_ART",
        "FLAT_VECTOR",
        "FOREST_REVERIE",
        "GEO_MINIMALIST",
        "GLASS_PRISM",
        "GOLDEN_HOUR",
        "GRAFFITI_I",
        "GRAFFITI_II",
        "HALFTONE_PRINT",
        "HIGH_CONTRAST",
        "HIPPIE_ERA",
        "ICONIC",
        "JAPANDI_FUSION",
        "JAZZY",
        "LONG_EXPOSURE",
        "MAGAZINE_EDITORIAL",
        "MINIMAL_ILLUSTRATION",
        "MIXED_MEDIA",
        "MONOCHROME",
        "NIGHTLIFE",
        "OIL_PAINTING",
        "OLD_CARTOONS",
        "PAINT_GESTURE",
        "POP_ART",
        "RETRO_ETCHING",
        "RIVIERA_POP",
        "SPOTLIGHT_80S",
        "STYLIZED_RED",
        "SURREAL_COLLAGE",
        "TRAVEL_POSTER",
        "VINTAGE_GEO",
        "VINTAGE_POSTER",
        "WATERCOLOR",
        "WEIRD",
        "WOODBLOCK_PRINT",
    ]
)
MAX_STYLE_REFERENCES = 3

STYLE_TYPES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION")
MAGIC_PROMPT = ("Auto", "On", "Off")
SPEEDS = ("default", "turbo", "quality")
MAX_SEED = 2_147_483_647


def _canonical(choices: tuple[str, ...], aliases: dict[str, str] | None = None) -> BeforeValidator:
    """Map any letter case (and any alias) of an enum value to its documented spelling."""
    lookup = {choice.lower(): choice for choice in choices}
    lookup.update({alias.lower(): choice for alias, choice in (aliases or {}).items()})

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return lookup.get(value.strip().lower(), value)
        return value

    return BeforeValidator(convert)


def _one_of(choices: tuple[str, ...], what: str) -> AfterValidator:
    """A string enum too long to spell out in every error message."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not a known {what}; see GET /v2/models")
        return value

    return AfterValidator(check)


StyleType = Annotated[
    Literal["AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION"], _canonical(STYLE_TYPES)
]
MagicPrompt = Annotated[Literal["Auto", "On", "Off"], _canonical(MAGIC_PROMPT)]
RenderingSpeed = Annotated[Literal["default", "turbo", "quality"], _canonical(SPEEDS)]
AspectRatio = Annotated[
    str,
    # Ideogram writes ratios with "x" (16x9); both spellings are accepted.
    _canonical(tuple(ASPECT_SIZES), {ratio.replace(":", "x"): ratio for ratio in ASPECT_SIZES}),
    _one_of(tuple(ASPECT_SIZES), "aspect ratio"),
]
Resolution = Annotated[str, _canonical(RESOLUTIONS), _one_of(RESOLUTIONS, "resolution")]
StylePreset = Annotated[str, _canonical(STYLE_PRESETS), _one_of(STYLE_PRESETS, "style preset")]
NumImages = Annotated[StrictInt, Field(ge=1, le=4)]
OUTPUT_FORMATS = ("png", "jpeg", "webp")
OutputFormat = Annotated[
    Literal["png", "jpeg", "webp"], _canonical(OUTPUT_FORMATS, {"jpg": "jpeg"})
]
"""A Castframe extension: the file format of the outputs (media/images.py OUTPUT_FORMATS);
any letter case, and ``jpg`` for ``jpeg``."""
OUTPUT_FORMAT_DESCRIPTION = (
    "Castframe extension: the outputs' file format, png (default, lossless), jpeg or webp "
    "(quality 90)."
)
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
    aspect_ratio: AspectRatio | None = Field(
        default=None, description="One of Ideogram's ratios, as 16:9 or 16x9 (default 1:1)."
    )
    resolution: Resolution | None = Field(
        default=None,
        description="One of Ideogram's fixed sizes, e.g. 1024x1024 (not with aspect_ratio).",
    )
    style_preset: StylePreset | None = Field(default=None, description="An Ideogram style preset.")
    style_reference_images: (
        Annotated[list[ImageSource], Field(min_length=1, max_length=MAX_STYLE_REFERENCES)] | None
    ) = Field(default=None, description="Up to 3 images whose look (palette) the output takes.")
    num_images: NumImages | None = None
    output_format: OutputFormat | None = Field(default=None, description=OUTPUT_FORMAT_DESCRIPTION)
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
        if self.resolution is not None and self.aspect_ratio is not None:
            raise ValueError("give resolution or aspect_ratio, not both")
        if self.resolution is not None and self.image is not None:
            raise ValueError("an edit keeps the size of its image: resolution does not apply")
        return self


class IdeogramCharacterRequest(BaseModel):
    """Body of ``POST /v2/images/generate`` for ``model: ideogram-character``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    prompt: Annotated[str, Field(min_length=1, max_length=2000)]
    model: Literal["ideogram-character"]
    ideogramParams: IdeogramParams
    aspect_ratio: AspectRatio | None = None
    num_images: NumImages | None = None
    output_format: OutputFormat | None = Field(default=None, description=OUTPUT_FORMAT_DESCRIPTION)
    webhookUrl: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, validation_alias=AliasChoices("webhookUrl", "webhook_url")
    )
    webhookEvents: (
        Annotated[list[Literal["progress", "completed", "failed"]], Field(min_length=1)] | None
    ) = None

    @model_validator(mode="after")
    def _consistent(self) -> IdeogramCharacterRequest:
        if not self.prompt.strip():
            raise ValueError("prompt must not be blank")
        for name in ("aspect_ratio", "num_images", "output_format"):
            outer, inner = getattr(self, name), getattr(self.ideogramParams, name)
            if outer is not None and inner is not None and outer != inner:
                raise ValueError(f"{name} is given at top level and in ideogramParams, differently")
        if self.aspect_ratio is not None and self.ideogramParams.resolution is not None:
            raise ValueError("give resolution or aspect_ratio, not both")
        return self


def _normalise(request: BaseModel) -> dict[str, Any]:
    assert isinstance(request, IdeogramCharacterRequest)
    params = request.ideogramParams
    aspect = request.aspect_ratio or params.aspect_ratio or "1:1"
    if params.resolution:
        width, height = (int(side) for side in params.resolution.split("x"))
    else:
        width, height = ASPECT_SIZES[aspect]
    return {
        "prompt": request.prompt,
        "negative_prompt": params.negative_prompt,
        "style_type": params.style_type,
        "magic_prompt_option": params.magic_prompt_option,
        "rendering_speed": params.rendering_speed,
        "seed": params.seed,
        "aspect_ratio": aspect,
        "resolution": params.resolution,
        "style_preset": params.style_preset,
        "style_reference_images": params.style_reference_images,
        "width": width,
        "height": height,
        "num_images": request.num_images or params.num_images or 1,
        "output_format": request.output_format or params.output_format or "png",
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
    image_fields=("character_reference_image", "image", "mask", "style_reference_images"),
    unit_prices=_unit_prices,
    normalise=_normalise,
)
