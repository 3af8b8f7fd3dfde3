"""The model catalog: ``GET /v2/models`` and ``GET /v2/models/{id}`` (no key needed)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from castframe.api.deps import get_services
from castframe.catalog import MODELS
from castframe.errors import ApiError

router = APIRouter(tags=["models"])


@router.get("/v2/models", summary="List models with their parameters and prices")
def list_models(
    request: Request, modality: Literal["image", "video", "music"] | None = None
) -> dict[str, Any]:
    settings = get_services(request).settings
    return {
        "models": [
            spec.describe(settings)
            for spec in MODELS.values()
            if modality is None or spec.modality == modality
        ]
    }


@router.get("/v2/models/{model_id}", summary="One model's parameters and prices")
def get_model(model_id: str, request: Request) -> dict[str, Any]:
    if model_id not in MODELS:
        raise ApiError("not_found", f"no model {model_id!r}")
    return MODELS[model_id].describe(get_services(request).settings)
