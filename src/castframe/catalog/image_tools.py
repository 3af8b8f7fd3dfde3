"""Apiframe's image tools as registry models: ``bria-bg-remove`` and ``851-bg-remove``
(``POST /v2/images/background-remove``), ``topaz-image-upscale`` and ``clarity-upscale``
(``POST /v2/images/upscale``).

Their bodies are in ``tool_params``. Each job makes one output, priced per output:
background removal at a flat price, Topaz by the output's megapixels (as Apiframe prices it),
Clarity flat. The output's size is known at submission, because the input image is read
there (a tool's price and its size limit depend on it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from castframe.catalog import tool_params as tools
from castframe.catalog.base import ImageField, ModelSpec, PriceTier, single_tier

IMAGE = (ImageField("image", "image", required=True),)
SAMPLE = "https://example.com/photo.png"
TOPAZ_TIERS = {"up-to-4mp": 4, "up-to-16mp": 8, "up-to-64mp": 16}
"""Credits per output by output megapixels (the last tier ends at the 64 MP limit)."""


OutputSize = Callable[[Mapping[str, Any], int, int], tuple[int, int]]
"""(params, input width, input height) -> the output's (width, height): ``ModelSpec.sized_by``."""


def same_size(_params: Mapping[str, Any], width: int, height: int) -> tuple[int, int]:
    return width, height


def upscaled(params: Mapping[str, Any], width: int, height: int) -> tuple[int, int]:
    factor = tools.factor_of(dict(params))
    return width * factor, height * factor


def topaz_tier(params: Mapping[str, Any]) -> str:
    width, height = params.get("width"), params.get("height")
    if not width or not height:
        return "up-to-64mp"
    megapixels = int(width) * int(height) / 1_000_000
    if megapixels <= 4:
        return "up-to-4mp"
    return "up-to-16mp" if megapixels <= 16 else "up-to-64mp"


SIZED_BY: dict[str, OutputSize] = {"background-remove": same_size, "upscale": upscaled}
"""How each tool endpoint's output size follows its input image."""


def _tool(
    model_id: str,
    params_key: str,
    request_model: type[BaseModel],
    normalise: Callable[[BaseModel], dict[str, Any]],
    *,
    operation: str,
    label: str,
    description: str,
    family: str,
    prices: Mapping[str, int],
    example: Mapping[str, Any],
    tier: PriceTier = single_tier,
) -> ModelSpec:
    """A tool's spec from what differs between tools: every tool takes one required ``image``
    and makes one output, sized by its endpoint (``SIZED_BY``); its example body is the
    sample image with ``example``'s fields."""
    return ModelSpec(
        id=model_id,
        label=label,
        description=description,
        family=family,
        params_key=params_key,
        request_model=request_model,
        normalise=normalise,
        prices=prices,
        tier=tier,
        image_fields=IMAGE,
        operation=operation,
        max_outputs=1,
        sized_by=SIZED_BY[operation],
        example={"model": model_id, params_key: {"image": SAMPLE, **example}},
    )


BRIA_BG_REMOVE = _tool(
    "bria-bg-remove",
    "briaBgRemoveParams",
    tools.BRIA_REQUEST,
    tools.normalise_bria,
    operation="background-remove",
    label="Bria RMBG 2.0 background removal",
    description=(
        "Background removal with Bria's RMBG-2.0, run from the operator's weights where the "
        "operator has turned it on (its licence is non-commercial without Bria's agreement); "
        "a transparent PNG at the input's size."
    ),
    family="bria",
    prices={"standard": 2},
    example={},
)

LAB851_BG_REMOVE = _tool(
    "851-bg-remove",
    "lab851BgRemoveParams",
    tools.LAB851_REQUEST,
    tools.normalise_851,
    operation="background-remove",
    label="851 Labs background removal",
    description=(
        "Background removal with transparent-background's InSPyReNet (the operator's weights) "
        "or the bundled U2-Net-P: a transparent PNG, the matte, or the subject on green, "
        "white, its blurred background or an overlay; threshold and reverse supported."
    ),
    family="851-labs",
    prices={"standard": 1},
    example={"background_type": "rgba"},
)

TOPAZ_UPSCALE = _tool(
    "topaz-image-upscale",
    "topazUpscaleParams",
    tools.TOPAZ_REQUEST,
    tools.normalise_topaz,
    operation="upscale",
    label="Image upscale (Topaz request shape, Real-ESRGAN model)",
    description=(
        "Upscaling by 1, 2, 4 or 6 with Apiframe's Topaz request shape. Castframe runs "
        "Real-ESRGAN x4plus (x4plus-anime for model_type cgi), not Topaz's models; 6 is x4 "
        "then Lanczos. Priced by output megapixels; outputs over 64 MP are refused."
    ),
    family="upscale",
    prices=TOPAZ_TIERS,
    tier=topaz_tier,
    example={"upscale_factor": 2},
)

CLARITY_UPSCALE = _tool(
    "clarity-upscale",
    "clarityUpscaleParams",
    tools.CLARITY_REQUEST,
    tools.normalise_clarity,
    operation="upscale",
    label="Image upscale (Clarity request shape, Real-ESRGAN model)",
    description=(
        "Upscaling by 1, 2, 4 or 8 with Apiframe's Clarity request shape. Castframe runs "
        "Real-ESRGAN x4plus, not Clarity's diffusion model (its prompt, creativity and other "
        "diffusion fields are refused); 8 is x4 then Lanczos; sharpen is honoured."
    ),
    family="upscale",
    prices={"standard": 8},
    example={"scale_factor": 2},
)

IMAGE_TOOLS = (BRIA_BG_REMOVE, LAB851_BG_REMOVE, TOPAZ_UPSCALE, CLARITY_UPSCALE)
