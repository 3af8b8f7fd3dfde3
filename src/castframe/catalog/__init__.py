"""The model registry: every model Castframe can serve, each declared by its catalog module.

Adding a model is a module here (its ``ModelSpec``: schema, params, images, prices) listed in
``_ALL`` below, plus its tests; engines/router.py decides which engine serves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from castframe.catalog.base import MAX_SEED, ImageField, ModelSpec
from castframe.catalog.flux_2_dev import FLUX_2_DEV
from castframe.catalog.flux_fill import FLUX_FILL_PRO
from castframe.catalog.flux_models import FLUX_MODELS
from castframe.catalog.ideogram_character import IDEOGRAM_CHARACTER
from castframe.catalog.ideogram_v2 import IDEOGRAM_V2
from castframe.catalog.ideogram_v3 import IDEOGRAM_V3
from castframe.catalog.ideogram_v4 import IDEOGRAM_V4
from castframe.catalog.image_tools import IMAGE_TOOLS
from castframe.catalog.qwen_image import QWEN_IMAGE
from castframe.catalog.stable_diffusion import STABLE_DIFFUSION_MODELS

_ALL: tuple[ModelSpec, ...] = (
    IDEOGRAM_CHARACTER,
    *IDEOGRAM_V3,
    *IDEOGRAM_V4,
    *IDEOGRAM_V2,
    *FLUX_MODELS,
    FLUX_FILL_PRO,
    *IMAGE_TOOLS,
    FLUX_2_DEV,
    *STABLE_DIFFUSION_MODELS,
    QWEN_IMAGE,
)

MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in _ALL}
FLAGSHIP = IDEOGRAM_CHARACTER
"""The model the quick start, the playground and the CLI default to."""


_BY_OPERATION: dict[str, Mapping[str, ModelSpec]] = {
    operation: MappingProxyType(
        {model_id: spec for model_id, spec in MODELS.items() if spec.operation == operation}
    )
    for operation in dict.fromkeys(spec.operation for spec in _ALL)
}


def models_for(operation: str) -> Mapping[str, ModelSpec]:
    """The models of one endpoint (``generate``, ``edit``…), by id: built once (every
    submission asks), read-only."""
    return _BY_OPERATION.get(operation, MappingProxyType({}))


def operations() -> list[str]:
    """Every endpoint some model serves, in registry order."""
    return list(dict.fromkeys(spec.operation for spec in _ALL))


__all__ = ["FLAGSHIP", "MAX_SEED", "MODELS", "ImageField", "ModelSpec", "models_for", "operations"]
