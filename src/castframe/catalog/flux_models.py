"""The FLUX text-to-image models Black Forest Labs sells through its API: ``flux-1.1-pro``,
``flux-1.1-pro-ultra``, ``flux-2-pro``, ``flux-2-flex`` and ``flux-2-max``.

One ``fluxParams`` block (catalog/flux_params.py) for all of them, each with the sizes BFL
documents for it; served upstream by the ``bfl`` engine when CASTFRAME_BFL_API_KEY is set,
else by the sandbox. Prices are BFL's in credits (1 credit = US$0.01, as for Ideogram):
FLUX1.1 [pro] $0.04 and Ultra $0.06 per image; FLUX.2 by megapixel ([pro] $0.03 for the
first and $0.015 for each further megapixel of output and input, [flex] $0.05 and $0.05,
[max] $0.07 and $0.03), rounded up to whole credits.
"""

from __future__ import annotations

from pydantic import BaseModel

from castframe.catalog.base import ModelSpec, single_tier
from castframe.catalog.envelope import Envelope, request_model
from castframe.catalog.flux_params import (
    IMAGE_FIELDS,
    FluxLimits,
    FluxParams,
    MegapixelPrice,
    megapixels_tier,
    normalise_flux,
)

FLUX_1_LIMITS = FluxLimits(multiple=32, min_side=256, max_side=1440, default_size=(1024, 768))
"""FLUX1.1 [pro]: 256 to 1440 px a side, multiples of 32, 1024x768 by default."""
ULTRA_LIMITS = FluxLimits(
    multiple=32,
    min_side=256,
    max_side=3200,
    default_size=(2752, 1536),
    fixed_megapixels=4.0,
    default_ratio="16:9",
)
"""FLUX1.1 [pro] Ultra: about 4 MP at its ratio (21:9 to 9:21, 16:9 by default)."""
FLUX_2_LIMITS = FluxLimits(
    multiple=16, min_side=256, max_side=2048, default_size=(1024, 1024), match_input=True
)
"""FLUX.2: multiples of 16 up to 2048 a side and 4 MP; 1 MP by default."""

FLUX_2_PRICES = {
    "flux-2-pro": MegapixelPrice(first=3, extra=1.5),
    "flux-2-flex": MegapixelPrice(first=5, extra=5),
    "flux-2-max": MegapixelPrice(first=7, extra=3),
}


def _params_class(name: str, limits: FluxLimits) -> type[FluxParams]:
    return type(name, (FluxParams,), {"limits": limits, "__doc__": FluxParams.__doc__})


def _normalise(request: BaseModel) -> dict[str, object]:
    assert isinstance(request, Envelope)
    params: FluxParams = getattr(request, "fluxParams")  # noqa: B009
    return normalise_flux(request.prompt, params)


def _spec(
    model_id: str,
    label: str,
    description: str,
    limits: FluxLimits,
    prices: dict[str, int],
    example: dict[str, object],
) -> ModelSpec:
    params = _params_class("FluxParams" + model_id.replace("-", "_").replace(".", "_"), limits)
    return ModelSpec(
        id=model_id,
        label=label,
        description=description,
        family="flux",
        params_key="fluxParams",
        request_model=request_model(model_id, "fluxParams", params),
        normalise=_normalise,
        prices=prices,
        tier=single_tier if "standard" in prices else megapixels_tier,
        image_fields=IMAGE_FIELDS,
        max_outputs=1,
        upstream="bfl",
        example={"prompt": "a lighthouse on a cliff at dawn", "model": model_id, **example},
    )


FLUX_1_1_PRO = _spec(
    "flux-1.1-pro",
    "FLUX1.1 [pro]",
    "Black Forest Labs' fast, reliable text-to-image model: width and height up to 1440 px, "
    "an optional image prompt.",
    FLUX_1_LIMITS,
    {"standard": 4},
    {"fluxParams": {"width": 1024, "height": 768, "output_format": "jpg"}},
)
FLUX_1_1_PRO_ULTRA = _spec(
    "flux-1.1-pro-ultra",
    "FLUX1.1 [pro] Ultra",
    "FLUX1.1 [pro] at about 4 megapixels, any ratio from 21:9 to 9:21, with a raw mode and "
    "an image prompt whose strength is set.",
    ULTRA_LIMITS,
    {"standard": 6},
    {"fluxParams": {"aspect_ratio": "16:9", "raw": True}},
)
FLUX_2_PRO = _spec(
    "flux-2-pro",
    "FLUX.2 [pro]",
    "FLUX.2 for production: up to 4 MP, up to 8 reference images, priced by megapixel.",
    FLUX_2_LIMITS,
    FLUX_2_PRICES["flux-2-pro"].tiers(),
    {"fluxParams": {"aspect_ratio": "3:2", "resolution": "1MP"}},
)
FLUX_2_FLEX = _spec(
    "flux-2-flex",
    "FLUX.2 [flex]",
    "FLUX.2 with steps, guidance and prompt upsampling under your control; strong typography.",
    FLUX_2_LIMITS,
    FLUX_2_PRICES["flux-2-flex"].tiers(),
    {"fluxParams": {"width": 1024, "height": 1024, "steps": 28, "guidance": 4.5}},
)
FLUX_2_MAX = _spec(
    "flux-2-max",
    "FLUX.2 [max]",
    "The highest-quality FLUX.2: the strongest prompt following and editing consistency.",
    FLUX_2_LIMITS,
    FLUX_2_PRICES["flux-2-max"].tiers(),
    {"fluxParams": {"width": 1024, "height": 1024}},
)

FLUX_MODELS = (FLUX_1_1_PRO, FLUX_1_1_PRO_ULTRA, FLUX_2_PRO, FLUX_2_FLEX, FLUX_2_MAX)
