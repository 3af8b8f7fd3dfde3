"""What every catalog model declares: its request schema, how to price it, where it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from castframe.config import Settings


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    description: str
    params_key: str
    request_model: type[BaseModel]
    image_fields: tuple[str, ...]
    """Fields of the params object that hold image sources (URL, data URI or upload)."""
    unit_prices: Callable[[Settings], dict[str, int]]
    """Credits per image, by rendering speed."""
    normalise: Callable[[BaseModel], dict[str, Any]]
    """Validated request -> the flat params an engine receives (seed still possibly None)."""
    modality: str = "image"
    max_images: int = 4
    """The most images one job may ask for (``num_images``)."""

    def price(self, params: dict[str, Any], settings: Settings) -> int:
        """Credits for a job: the per-image price of its speed times the number of images."""
        return int(self.unit_prices(settings)[params["rendering_speed"]]) * int(
            params["num_images"]
        )

    def describe(self, settings: Settings) -> dict[str, Any]:
        """Apiframe's ModelCatalogEntry; the costs are credits for one image (the cheapest
        speed) and for a job's most (the dearest speed at the most images), ``per-output``."""
        prices = self.unit_prices(settings)
        return {
            "id": self.id,
            "label": self.name,
            "modality": self.modality,
            "description": self.description,
            "costMin": min(prices.values()),
            "costMax": max(prices.values()) * self.max_images,
            "pricingMode": "per-output",
            "paramsKey": self.params_key,
            "pricing": {
                "unit": "credits per image",
                "byRenderingSpeed": self.unit_prices(settings),
            },
            "schema": self.request_model.model_json_schema(by_alias=True),
        }
