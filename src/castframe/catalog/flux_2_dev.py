"""``flux-2-dev``: FLUX.2 [dev], Black Forest Labs' open-weights FLUX.2, with ``fluxParams``.

The same block as the hosted FLUX models (catalog/flux_params.py: Replicate's FLUX inputs)
and FLUX.2's sizes: ``width``/``height`` in multiples of 16, or ``aspect_ratio`` with
``resolution`` (megapixels, or ``match_input_image``); ``guidance``, ``steps`` and ``seed``
steer sampling and ``input_images`` are references. The fields only BFL's hosted models
have (``raw``, ``image_prompt_strength``) are a 400 naming the ``diffusers`` engine.

BFL sells no API for [dev]: it runs on the operator's GPU (the ``diffusers`` engine) or the
sandbox. Its weights are under the FLUX [dev] Non-Commercial License, so the engine serves it
only when the operator turns CASTFRAME_DIFFUSERS_FLUX_2_DEV on. With no provider price to
copy, it is priced by megapixel like the hosted FLUX.2 models at Castframe's own defaults (2
credits for the first megapixel, 1 for each further one of output and input), which
CASTFRAME_PRICES overrides.
"""

from __future__ import annotations

from pydantic import BaseModel

from castframe.catalog.base import ModelSpec
from castframe.catalog.envelope import Envelope, request_model
from castframe.catalog.flux_models import FLUX_2_LIMITS
from castframe.catalog.flux_params import (
    IMAGE_FIELDS,
    FluxParams,
    MegapixelPrice,
    megapixels_tier,
    normalise_flux,
)

PRICE = MegapixelPrice(first=2, extra=1)


class FluxParamsFlux2Dev(FluxParams):
    __doc__ = FluxParams.__doc__
    limits = FLUX_2_LIMITS


def _normalise(request: BaseModel) -> dict[str, object]:
    assert isinstance(request, Envelope)
    params: FluxParams = getattr(request, "fluxParams")  # noqa: B009
    return normalise_flux(request.prompt, params)


FLUX_2_DEV = ModelSpec(
    id="flux-2-dev",
    label="FLUX.2 [dev]",
    description="FLUX.2's open-weights model (32B) on your own GPU: up to 4 MP, reference "
    "images, steps and guidance under your control. Non-commercial licence unless you hold "
    "BFL's.",
    family="flux",
    params_key="fluxParams",
    request_model=request_model("flux-2-dev", "fluxParams", FluxParamsFlux2Dev),
    normalise=_normalise,
    prices=PRICE.tiers(),
    tier=megapixels_tier,
    image_fields=IMAGE_FIELDS,
    max_outputs=1,
    example={
        "prompt": "a lighthouse on a cliff at dawn",
        "model": "flux-2-dev",
        "fluxParams": {"aspect_ratio": "3:2", "resolution": "1MP", "steps": 28},
    },
)
