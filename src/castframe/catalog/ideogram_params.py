"""Ideogram's params block (``ideogramParams``), shared by the whole family, and the tables
of Ideogram's ratios, sizes, presets and style types per API version.

Apiframe types most of these fields as plain strings; the values Ideogram accepts differ by
version (3.0 ratios and sizes, 4.0's 2K sizes, the legacy 2.x spellings), so each version has
its params class with the right checks. Enum values accept any letter case and are
normalised to the documented spelling, because clients copy them from several vendors' docs;
``"None"`` (Replicate's spelling of "not set", which Apiframe copies) means not given.

Castframe's extensions in the block, documented as such in every schema: ``character_id`` (a
saved character instead of an image), ``num_images`` and ``output_format``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)

from castframe.catalog.base import MAX_SEED, ImageField
from castframe.catalog.envelope import Envelope, request_model

Size = tuple[int, int]
"""An output size, (width, height) in pixels."""


def _size(text: str) -> Size:
    """``"1024x768"`` -> ``(1024, 768)``."""
    width, height = text.split("x")
    return int(width), int(height)


def _by_size(sizes: Iterable[str]) -> tuple[str, ...]:
    """Sizes in the order Ideogram lists them: by width, then height."""
    return tuple(sorted(sizes, key=_size))


@dataclass(frozen=True)
class Sizes:
    """One Ideogram API version's size table. Every view of a version (its ratio and
    resolution enums, the size each ratio makes) is computed from its one table, so no two
    lists of the same version can drift apart."""

    ratios: Mapping[str, Size]
    """Each ratio the version takes, in its documented order, and the size it makes."""
    resolutions: tuple[str, ...]
    """The fixed sizes (width x height) its ``resolution`` field takes, as its API lists them."""

    @property
    def ratio_names(self) -> tuple[str, ...]:
        return tuple(self.ratios)

    @classmethod
    def from_ratios(cls, resolutions: Mapping[str, str]) -> Sizes:
        """A version whose ``resolution`` takes exactly its ratios' sizes (Ideogram 4.0)."""
        return cls(
            ratios={ratio: _size(size) for ratio, size in resolutions.items()},
            resolutions=tuple(resolutions.values()),
        )


V3 = Sizes(
    ratios={
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
    },
    resolutions=(
        # Ideogram 3.0's fixed output sizes (width x height), as its API lists them.
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
    ),
)
"""Ideogram 3.0 (and ``ideogram-character``)."""
CORE_ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")

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

V4 = Sizes.from_ratios(
    {
        # Ideogram 4.0's 2K sizes, by the ratio each is (its generate route takes only these).
        "1:1": "2048x2048",
        "1:2": "1440x2880",
        "2:1": "2880x1440",
        "2:3": "1664x2496",
        "3:2": "2496x1664",
        "4:5": "1792x2240",
        "5:4": "2240x1792",
        "9:16": "1440x2560",
        "16:9": "2560x1440",
        "5:8": "1600x2560",
        "8:5": "2560x1600",
        "3:4": "1728x2304",
        "4:3": "2304x1728",
        "9:22": "1296x3168",
        "22:9": "3168x1296",
        "9:23": "1152x2944",
        "23:9": "2944x1152",
        "3:8": "1248x3328",
        "8:3": "3328x1248",
        "5:12": "1280x3072",
        "12:5": "3072x1280",
    }
)
"""Ideogram 4.0: a ratio is one of its 2K sizes."""
V2 = Sizes(
    ratios={
        # The legacy ``image_request.aspect_ratio`` values (ASPECT_16_9…), at 3.0's sizes:
        # no 4:5, 5:4, 1:2 or 2:1.
        ratio: V3.ratios[ratio]
        for ratio in (
            "1:1",
            "10:16",
            "16:10",
            "9:16",
            "16:9",
            "3:2",
            "2:3",
            "4:3",
            "3:4",
            "1:3",
            "3:1",
        )
    },
    resolutions=_by_size(
        # The legacy API's RESOLUTION_WxH values: Ideogram 3.0's list without 800x1280, with
        # 1280x720, 1024x768 and others.
        (set(V3.resolutions) - {"800x1280"})
        | {
            "640x1024",
            "720x1280",
            "768x1024",
            "768x1152",
            "768x1232",
            "1024x640",
            "1024x768",
            "1152x768",
            "1232x768",
            "1280x720",
        }
    ),
)
"""Ideogram 2.x on the legacy API."""

# The versions' tables in the shapes the rest of Castframe reads.
ASPECT_SIZES: dict[str, Size] = dict(V3.ratios)
RESOLUTIONS: tuple[str, ...] = V3.resolutions
V4_RESOLUTIONS: dict[str, str] = dict(zip(V4.ratios, V4.resolutions, strict=True))
V4_SIZES: dict[str, Size] = dict(V4.ratios)
V2_RESOLUTIONS: tuple[str, ...] = V2.resolutions
V2_ASPECT_RATIOS: tuple[str, ...] = V2.ratio_names
"""The legacy ``image_request.aspect_ratio`` values (ASPECT_16_9…): no 4:5, 5:4, 1:2 or 2:1."""

STYLE_TYPES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION")
V2_STYLE_TYPES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME")
MAGIC_PROMPT = ("Auto", "On", "Off")
SPEEDS = ("turbo", "default", "quality")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
NOT_SET = "none"
NONE_MEANS_UNSET = (
    "style_type",
    "resolution",
    "style_preset",
    "aspect_ratio",
    "magic_prompt_option",
)


def _canonical(
    choices: tuple[str, ...], aliases: Mapping[str, str] | None = None
) -> BeforeValidator:
    """Map any letter case (and any alias) of an enum value to its documented spelling."""
    lookup = {choice.lower(): choice for choice in choices}
    lookup.update({alias.lower(): choice for alias, choice in (aliases or {}).items()})

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return lookup.get(value.strip().lower(), value)
        return value

    return BeforeValidator(convert)


def _one_of(choices: tuple[str, ...], what: str) -> AfterValidator:
    """A string enum checked after its spelling is normalised: the message lists a short
    enum's values, and points to the catalog for a long one."""
    listed = f"one of {', '.join(choices)}" if len(choices) <= 8 else "see GET /v2/models"

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not a known {what} for this model; {listed}")
        return value

    return AfterValidator(check)


def _ratio_aliases(ratios: tuple[str, ...]) -> dict[str, str]:
    """Ideogram writes ratios with "x" (16x9), its legacy API as ASPECT_16_9: all accepted."""
    aliases = {ratio.replace(":", "x"): ratio for ratio in ratios}
    aliases.update({"ASPECT_" + ratio.replace(":", "_"): ratio for ratio in ratios})
    return aliases


def _ratio(sizes: Sizes) -> Any:
    """The type of a version's ``aspect_ratio``: its ratios, in any accepted spelling."""
    ratios = sizes.ratio_names
    return Annotated[
        str, _canonical(ratios, _ratio_aliases(ratios)), _one_of(ratios, "aspect ratio")
    ]


def _resolution(sizes: Sizes) -> Any:
    """The type of a version's ``resolution``: its fixed sizes, or RESOLUTION_WxH."""
    names = sizes.resolutions
    aliases = {"RESOLUTION_" + size.replace("x", "_"): size for size in names}
    return Annotated[str, _canonical(names, aliases), _one_of(names, "resolution")]


StyleType = Annotated[str, _canonical(STYLE_TYPES), _one_of(STYLE_TYPES, "style type")]
V2StyleType = Annotated[
    str,
    _canonical(V2_STYLE_TYPES, {"Render_3d": "RENDER_3D", "3D": "RENDER_3D"}),
    _one_of(V2_STYLE_TYPES, "style type"),
]
MagicPrompt = Annotated[Literal["Auto", "On", "Off"], _canonical(MAGIC_PROMPT)]
RenderingSpeed = Annotated[Literal["default", "turbo", "quality"], _canonical(SPEEDS)]
StylePreset = Annotated[str, _canonical(STYLE_PRESETS), _one_of(STYLE_PRESETS, "style preset")]
NumImages = Annotated[StrictInt, Field(ge=1, le=4)]
OutputFormat = Annotated[
    Literal["png", "jpeg", "webp"], _canonical(OUTPUT_FORMATS, {"jpg": "jpeg"})
]
"""A Castframe extension: the outputs' file format; any letter case, and ``jpg`` for
``jpeg``."""
OUTPUT_FORMAT_DESCRIPTION = (
    "Castframe extension: the outputs' file format, png (default, lossless), jpeg or webp "
    "(quality 90)."
)
NUM_IMAGES_DESCRIPTION = "Castframe extension: images to make, 1 to 4 (default 1)."
ImageSource = Annotated[str, Field(min_length=1, max_length=30 * 1024 * 1024)]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]

IMAGE_FIELDS = (
    ImageField("character_reference_image", "character"),
    ImageField("image", "image"),
    ImageField("mask", "mask"),
    ImageField("style_reference_images", "style", many=True),
)


class IdeogramParams(BaseModel):
    """``ideogramParams`` for Ideogram 3.0 (``ideogram-v3-*``): every field of Apiframe's
    block, a character reference optional."""

    model_config = ConfigDict(extra="forbid")
    edits: ClassVar[bool] = True
    """Whether the model has a mask edit (``image`` + ``mask``)."""
    sizes: ClassVar[Sizes] = V3
    """The version's size table, which the ``aspect_ratio`` and ``resolution`` types below
    (and the top-level shortcut's, ``ideogram_request``) are computed from."""

    character_reference_image: ImageSource | None = Field(
        default=None,
        description="The character: an http(s) URL, a data:image/...;base64 URI, or upload://id.",
    )
    character_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None,
        description="Castframe extension: a saved character (POST /v2/characters) instead of "
        "character_reference_image.",
    )
    style_type: StyleType | None = None
    magic_prompt_option: MagicPrompt | None = None
    rendering_speed: RenderingSpeed | None = None
    seed: Seed | None = None
    negative_prompt: Annotated[str, Field(max_length=2000)] | None = None
    aspect_ratio: _ratio(V3) | None = Field(  # type: ignore[valid-type]
        default=None, description="One of Ideogram's ratios, as 16:9 or 16x9 (default 1:1)."
    )
    resolution: _resolution(V3) | None = Field(  # type: ignore[valid-type]
        default=None,
        description="One of Ideogram's fixed sizes, e.g. 1024x1024 (not with aspect_ratio).",
    )
    style_preset: StylePreset | None = Field(default=None, description="An Ideogram style preset.")
    style_reference_images: (
        Annotated[list[ImageSource], Field(min_length=1, max_length=MAX_STYLE_REFERENCES)] | None
    ) = Field(default=None, description="Up to 3 images whose look (palette) the output takes.")
    num_images: NumImages | None = Field(default=None, description=NUM_IMAGES_DESCRIPTION)
    output_format: OutputFormat | None = Field(default=None, description=OUTPUT_FORMAT_DESCRIPTION)
    image: ImageSource | None = Field(default=None, description="Image to edit (with mask).")
    mask: ImageSource | None = Field(
        default=None, description="Edit mask, same size as image: black = repaint, white = keep."
    )

    @model_validator(mode="before")
    @classmethod
    def _not_set(cls, data: Any) -> Any:
        """Replicate's ``"None"`` (which Apiframe copies) for an enum field means not given."""
        if not isinstance(data, dict):
            return data
        return {
            name: value
            for name, value in data.items()
            if not (
                name in NONE_MEANS_UNSET
                and isinstance(value, str)
                and value.strip().lower() == NOT_SET
            )
        }

    @model_validator(mode="after")
    def _exclusive_fields(self) -> IdeogramParams:
        if self.character_reference_image is not None and self.character_id is not None:
            raise ValueError("give character_reference_image or character_id, not both")
        if (self.image is None) != (self.mask is None):
            raise ValueError("image and mask must be given together (or neither)")
        if self.image is not None and not self.edits:
            raise ValueError("this model has no mask edit: image and mask do not apply")
        if self.resolution is not None and self.aspect_ratio is not None:
            raise ValueError("give resolution or aspect_ratio, not both")
        if self.resolution is not None and self.image is not None:
            raise ValueError("an edit keeps the size of its image: resolution does not apply")
        return self


class CharacterParams(IdeogramParams):
    """``ideogram-character``: the character is required (an image or a saved one)."""

    @model_validator(mode="after")
    def _one_character(self) -> CharacterParams:
        if (self.character_reference_image is None) == (self.character_id is None):
            raise ValueError("give exactly one of character_reference_image and character_id")
        return self


class V4Params(IdeogramParams):
    """Ideogram 4.0: native 2K sizes, no mask edit."""

    edits: ClassVar[bool] = False
    sizes: ClassVar[Sizes] = V4
    aspect_ratio: _ratio(V4) | None = Field(  # type: ignore[valid-type]
        default=None, description="One of Ideogram 4.0's ratios, as 16:9 (a 2K size)."
    )
    resolution: _resolution(V4) | None = Field(  # type: ignore[valid-type]
        default=None, description="One of Ideogram 4.0's 2K sizes, e.g. 2048x2048."
    )


class V2Params(IdeogramParams):
    """Ideogram 2.0 (legacy API): its ratios and style types (RENDER_3D, ANIME)."""

    sizes: ClassVar[Sizes] = V2
    resolution: _resolution(V2) | None = Field(  # type: ignore[valid-type]
        default=None, description="One of Ideogram 2.0's fixed sizes, e.g. 1024x1024."
    )
    style_type: V2StyleType | None = None
    aspect_ratio: _ratio(V2) | None = Field(  # type: ignore[valid-type]
        default=None, description="One of Ideogram 2.0's ratios, as 16:9 (default 1:1)."
    )


class V2aParams(V2Params):
    """Ideogram 2a: the legacy edit route takes only V_2 and V_2_TURBO."""

    edits: ClassVar[bool] = False


SHORTCUTS = ("aspect_ratio", "num_images", "output_format")


class IdeogramEnvelope(Envelope):
    """The body around ``ideogramParams``, with Castframe's top-level shortcuts (extensions)
    for ``aspect_ratio``, ``num_images`` and ``output_format``: given at both levels, they
    must agree."""

    fixed_speed: ClassVar[str | None] = None
    """The rendering speed the model id fixes (None: the client chooses)."""

    aspect_ratio: str | None = None
    """Castframe extension: ``ideogramParams.aspect_ratio`` at top level (its type is the
    model's ratios: ``ideogram_request``)."""
    num_images: NumImages | None = Field(default=None, description=NUM_IMAGES_DESCRIPTION)
    output_format: OutputFormat | None = Field(default=None, description=OUTPUT_FORMAT_DESCRIPTION)

    @model_validator(mode="after")
    def _consistent(self) -> IdeogramEnvelope:
        params: IdeogramParams = getattr(self, "ideogramParams")  # noqa: B009
        for name in SHORTCUTS:
            outer, inner = getattr(self, name), getattr(params, name)
            if outer is not None and inner is not None and outer != inner:
                raise ValueError(f"{name} is given at top level and in ideogramParams, differently")
        if self.aspect_ratio is not None and params.resolution is not None:
            raise ValueError("give resolution or aspect_ratio, not both")
        if self.aspect_ratio is not None and params.image is not None:
            raise ValueError("an edit keeps the size of its image: aspect_ratio does not apply")
        speed = self.fixed_speed
        if speed is not None and params.rendering_speed not in (None, speed):
            raise ValueError(
                f"this model renders at {speed!r}: omit rendering_speed or choose the model of "
                f"the {params.rendering_speed!r} speed"
            )
        return self


def ideogram_request(
    model_id: str, params: type[IdeogramParams], speed: str | None, *, required: bool = False
) -> type[Envelope]:
    """The request body of one Ideogram model: ``params`` as its ``ideogramParams`` block,
    the rendering speed its id fixes (None: the client's), the top-level ``aspect_ratio``
    shortcut checked against the same ratios as the block's."""
    base: type[IdeogramEnvelope] = IdeogramEnvelope
    if speed is not None:
        name = f"IdeogramEnvelope{speed.capitalize()}"
        base = type(name, (IdeogramEnvelope,), {"fixed_speed": speed})
    shortcut = (
        _ratio(params.sizes) | None,
        Field(default=None, description="Castframe extension: ideogramParams.aspect_ratio."),
    )
    return request_model(
        model_id,
        "ideogramParams",
        params,
        params_required=required,
        base=base,
        extra_fields={"aspect_ratio": shortcut},
    )


def normalise(request: BaseModel) -> dict[str, Any]:
    """A validated Ideogram request -> the job's params (catalog/base.py): the common keys,
    the image fields, and Ideogram's own fields as given (None when not given); ``width`` and
    ``height`` from the resolution, or else the ratio's size in the version's table (the
    params class's ``sizes``, which also validated the ratio)."""
    assert isinstance(request, IdeogramEnvelope)
    params: IdeogramParams = getattr(request, "ideogramParams")  # noqa: B009
    aspect = request.aspect_ratio or params.aspect_ratio
    if params.resolution:
        width, height = _size(params.resolution)
    else:
        width, height = params.sizes.ratios[aspect or "1:1"]
    return {
        "prompt": request.prompt,
        "negative_prompt": params.negative_prompt,
        "seed": params.seed,
        "num_images": request.num_images or params.num_images or 1,
        "width": width,
        "height": height,
        "output_format": request.output_format or params.output_format or "png",
        "character_reference_image": params.character_reference_image,
        "character_id": params.character_id,
        "image": params.image,
        "mask": params.mask,
        "style_reference_images": params.style_reference_images,
        "style_type": params.style_type,
        "magic_prompt_option": params.magic_prompt_option,
        "rendering_speed": request.fixed_speed or params.rendering_speed or "default",
        "aspect_ratio": aspect,
        "resolution": params.resolution,
        "style_preset": params.style_preset,
    }


def speed_tier(params: Mapping[str, Any]) -> str:
    """Ideogram prices by rendering speed."""
    return str(params["rendering_speed"])
