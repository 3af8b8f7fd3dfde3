"""What every catalog model declares, and the one generic path from a validated request to
a job's params and price.

A model is data: its module in ``catalog/`` builds one ``ModelSpec`` (or a few, for a family
whose members differ only in a constant) and ``catalog/__init__.py`` lists it. Everything
else (validation, pricing, ``GET /v2/models``, the OpenAPI document, the worker's input
loading) reads the spec and never names a model or a params field.

A job's params, as ``normalise`` writes them (and the job row keeps them), always hold the
``COMMON_PARAMS`` keys, the image fields under their own names (sources: URL or
``upload://id``), and then whatever the model defines, with ``None`` for what the client left
out, so an engine can tell "not given" from a default and refuse what it cannot honour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

MAX_SEED = 2_147_483_647
"""Seeds are 31-bit everywhere (Ideogram's, Replicate's and fal's ranges)."""

COMMON_PARAMS = (
    "prompt",
    "negative_prompt",
    "seed",
    "num_images",
    "width",
    "height",
    "output_format",
)
"""Keys every job's params have: what ``engines.base.EngineRequest`` carries as fields."""

SAVED_CHARACTER_PARAM = "character_id"
"""Castframe's extension in a model's params that names a saved character (POST
/v2/characters); the model's ``saved_character_field`` says which image it stands for."""

Role = Literal["character", "image", "mask", "style", "reference"]
"""What an input image is for (``engines.base.EngineInputs`` has one slot per role)."""


@dataclass(frozen=True)
class ImageField:
    """A field of the params block that holds image sources."""

    name: str
    role: Role
    many: bool = False
    """A list of sources (style references, input images) rather than one."""
    required: bool = False
    """Documentation: the request schema is what enforces it."""


PriceTier = Callable[[Mapping[str, Any]], str]


def single_tier(_params: Mapping[str, Any]) -> str:
    return "standard"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    label: str
    description: str
    family: str
    """The provider family (``ideogram``, ``flux``…): docs and the route table's defaults."""
    params_key: str
    request_model: type[BaseModel]
    """The whole request body for this model, written from Apiframe's variant."""
    normalise: Callable[[BaseModel], dict[str, Any]]
    """Validated request -> the job's params (see the module docstring); seed may be None."""
    prices: Mapping[str, int]
    """Default credits per output, by price tier (configurable: ``CASTFRAME_PRICES``)."""
    tier: PriceTier = single_tier
    """Which tier a job's params fall in."""
    image_fields: tuple[ImageField, ...] = ()
    operation: str = "generate"
    """The endpoint: ``POST /v2/images/<operation>``."""
    modality: str = "image"
    max_outputs: int = 4
    upstream: str | None = None
    """The engine that serves this model through its provider's API with the operator's key
    (engines/router.py routes live jobs there when that key is configured)."""
    saved_character_field: str | None = None
    """The image field that a saved character (``character_id``) fills, if the model has one."""
    example: Mapping[str, Any] = field(default_factory=dict)
    """A request body for the OpenAPI document and the docs."""
    sized_by: Callable[[Mapping[str, Any], int, int], tuple[int, int]] | None = None
    """For a model whose output follows its input image (the image tools): (params, input
    width, input height) -> the output's (width, height). The input is then read at submission,
    so that the job's size, price and the output pixel limit are known before it is queued."""

    def field_for(self, role: Role) -> ImageField | None:
        return next((item for item in self.image_fields if item.role == role), None)

    def tier_prices(self, overrides: Mapping[str, Any] | None = None) -> dict[str, int]:
        """Credits per output by tier: the defaults, with the operator's override for this
        model (an int for every tier, or a tier -> credits map) laid over them."""
        prices = dict(self.prices)
        override = (overrides or {}).get(self.id)
        if isinstance(override, int):
            return dict.fromkeys(prices, override)
        if isinstance(override, Mapping):
            prices.update({tier: int(value) for tier, value in override.items() if tier in prices})
        return prices

    def unit_price(self, params: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> int:
        return self.tier_prices(overrides)[self.tier(params)]

    def price(self, params: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> int:
        """Credits for a job: its tier's price per output times the outputs it asks for."""
        return self.unit_price(params, overrides) * int(params.get("num_images") or 1)

    def describe(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apiframe's ModelCatalogEntry, with Castframe's fields after Apiframe's: the costs
        are credits for one output of the cheapest tier and for a job's most outputs of the
        dearest (``per-output``)."""
        prices = self.tier_prices(overrides)
        return {
            "id": self.id,
            "label": self.label,
            "modality": self.modality,
            "description": self.description,
            "costMin": min(prices.values()),
            "costMax": max(prices.values()) * self.max_outputs,
            "pricingMode": "per-output",
            "paramsKey": self.params_key,
            "operation": f"/v2/images/{self.operation}",
            "family": self.family,
            "pricing": {"unit": "credits per output", "tiers": prices},
            "schema": self.request_model.model_json_schema(by_alias=True),
        }
