"""The model catalog: ``GET /v2/models`` and ``GET /v2/models/{id}`` (no key needed)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from castframe.api.deps import get_services
from castframe.catalog import MODELS, ModelSpec
from castframe.config import Settings
from castframe.engines.router import Routing
from castframe.errors import ApiError
from castframe.services import Services

router = APIRouter(tags=["models"])


@router.get("/v2/models", summary="List models with their parameters and prices")
def list_models(
    request: Request, modality: Literal["image", "video", "music"] | None = None
) -> dict[str, Any]:
    services = get_services(request)
    settings = services.settings
    routing = Routing(settings)
    served, notices = routing.served(), routing.notices()
    live = _live_models(services)
    return {
        "models": [
            describe(spec, settings, served[model_id], live, notices.get(model_id))
            for model_id, spec in MODELS.items()
            if model_id in served and (modality is None or spec.modality == modality)
        ]
    }


def describe(
    spec: ModelSpec,
    settings: Settings,
    engine: str,
    live: frozenset[str] | None,
    notice: str | None = None,
) -> dict[str, Any]:
    """The catalog entry with the prices in force and, as extensions, the engine that runs
    it for live keys (test keys always use the sandbox), whether a live worker serves it
    (``hasWorker``: false, its jobs wait in the queue; jobs/fleet.py) and, where an engine
    holds weights it may not use (a model behind a licence switch that is off),
    ``engineNotice`` saying why."""
    entry = {
        **spec.describe(settings.prices),
        "engine": engine,
        "hasWorker": live is None or spec.id in live,
    }
    if notice:
        entry["engineNotice"] = notice
    return entry


def _live_models(services: Services) -> frozenset[str] | None:
    """The models live workers serve; on a database error, as if every one were served (the
    catalog is static data and answers without the database)."""
    try:
        return services.cached_live_models()
    except Exception:
        return None


@router.get("/v2/models/{model_id}", summary="One model's parameters and prices")
def get_model(model_id: str, request: Request) -> dict[str, Any]:
    services = get_services(request)
    settings = services.settings
    routing = Routing(settings)
    served = routing.served()
    if model_id not in served:
        raise ApiError("not_found", f"no model {model_id!r}")
    notice = routing.notices().get(model_id)
    return describe(MODELS[model_id], settings, served[model_id], _live_models(services), notice)
