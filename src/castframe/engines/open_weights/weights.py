"""Which models the ``diffusers`` engine holds weights for, and where they are (pure: no torch).

An operator gives weights per model in ``CASTFRAME_DIFFUSERS_MODELS`` (JSON: model id ->
a local ``save_pretrained`` directory, or a hub id that ``castframe weights download``
fetched once into the local hub cache) and, for ``ideogram-character``, in
``CASTFRAME_DIFFUSERS_MODEL``. Everything is checked at start (``check_weights``): a missing
directory, a hub id never downloaded, or the weights of another pipeline family stop the
server with a message naming the setting, never the first job. Nothing is downloaded here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from castframe.config import Settings

CHARACTER_MODEL = "ideogram-character"
FLUX_2_DEV = "flux-2-dev"
QWEN_EDIT_KEY = "qwen-image:edit"
"""The weights ``qwen-image``'s image-edit task runs on (Qwen-Image-Edit: another
checkpoint than Qwen-Image's)."""
SETTING = "CASTFRAME_DIFFUSERS_MODELS"
LICENCE_SETTING = "CASTFRAME_DIFFUSERS_FLUX_2_DEV"


@dataclass(frozen=True)
class Weights:
    """What one key of CASTFRAME_DIFFUSERS_MODELS may hold."""

    key: str
    pipeline_classes: tuple[str, ...]
    hub_id: str
    """The official weights, what ``castframe weights download`` fetches by default."""
    licence: str


WEIGHTS: dict[str, Weights] = {
    weights.key: weights
    for weights in (
        Weights(
            "stable-diffusion-3.5-large",
            ("StableDiffusion3Pipeline",),
            "stabilityai/stable-diffusion-3.5-large",
            "Stability AI Community Licence",
        ),
        Weights(
            "stable-diffusion-3.5-large-turbo",
            ("StableDiffusion3Pipeline",),
            "stabilityai/stable-diffusion-3.5-large-turbo",
            "Stability AI Community Licence",
        ),
        Weights(
            "stable-diffusion-3.5-medium",
            ("StableDiffusion3Pipeline",),
            "stabilityai/stable-diffusion-3.5-medium",
            "Stability AI Community Licence",
        ),
        Weights(
            "stable-diffusion-3",
            ("StableDiffusion3Pipeline",),
            "stabilityai/stable-diffusion-3-medium-diffusers",
            "Stability AI Community Licence",
        ),
        Weights("qwen-image", ("QwenImagePipeline",), "Qwen/Qwen-Image", "Apache-2.0"),
        Weights(
            QWEN_EDIT_KEY,
            ("QwenImageEditPlusPipeline",),
            "Qwen/Qwen-Image-Edit-2509",
            "Apache-2.0",
        ),
        Weights(
            FLUX_2_DEV,
            ("Flux2Pipeline",),
            "black-forest-labs/FLUX.2-dev",
            "FLUX [dev] Non-Commercial License",
        ),
    )
}
"""Every key CASTFRAME_DIFFUSERS_MODELS accepts, with the pipeline its weights must be."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def configured(settings: Settings) -> dict[str, str]:
    """The operator's weights by key (``ideogram-character`` included when
    CASTFRAME_DIFFUSERS_MODEL is set)."""
    table = dict(settings.diffusers_models)
    if settings.diffusers_model:
        table[CHARACTER_MODEL] = settings.diffusers_model
    return table


def holds(model_id: str, settings: Settings) -> bool:
    """Whether the engine serves ``model_id`` under ``settings``: its weights are configured
    and, for flux-2-dev, the operator turned it on (its licence)."""
    if model_id == FLUX_2_DEV and not settings.diffusers_flux_2_dev:
        return False
    return model_id in configured(settings) and model_id != QWEN_EDIT_KEY


def gated(settings: Settings) -> dict[str, str]:
    """Models with weights that the engine does not serve, and why (GET /v2/models)."""
    if FLUX_2_DEV in settings.diffusers_models and not settings.diffusers_flux_2_dev:
        return {
            FLUX_2_DEV: f"weights configured, but {LICENCE_SETTING} is off: FLUX.2 [dev] is "
            "under the FLUX [dev] Non-Commercial License"
        }
    return {}


def resolve(key: str, value: str) -> Path:
    """A local directory, or a hub id already in the local hub cache (never downloaded
    here); ValueError naming the setting otherwise."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    if _HUB_ID.match(value) and not value.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(value, local_files_only=True))
        except Exception as exc:  # not in the cache (or no huggingface_hub): say what to do
            raise ValueError(
                f"{SETTING}: the weights of {key} ({value}) are not downloaded: run "
                f"`castframe weights download {key} --repo {value}` once"
            ) from exc
    raise ValueError(f"{SETTING}: the weights directory of {key} ({value}) does not exist")


def pipeline_class(model_dir: Path) -> str:
    index = model_dir / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{model_dir} has no model_index.json: give a diffusers save_pretrained directory"
        )
    try:
        name = json.loads(index.read_text()).get("_class_name", "")
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{index} is not a diffusers model index") from exc
    return str(name)


def check_weights(settings: Settings) -> dict[str, Path]:
    """Every configured key -> its directory, checked: a known key, an existing directory
    (or a downloaded hub id) holding the pipeline its model needs. ValueError otherwise."""
    checked: dict[str, Path] = {}
    for key, value in settings.diffusers_models.items():
        weights = WEIGHTS.get(key)
        if weights is None:
            raise ValueError(
                f"{SETTING}: the diffusers engine has no model {key!r}; it serves "
                f"{', '.join(WEIGHTS)} (ideogram-character: CASTFRAME_DIFFUSERS_MODEL)"
            )
        path = resolve(key, value)
        found = pipeline_class(path)
        if found not in weights.pipeline_classes:
            raise ValueError(
                f"{SETTING}: {key} needs {' or '.join(weights.pipeline_classes)} weights, but "
                f"{value} holds a {found or 'unknown'} pipeline"
            )
        checked[key] = path
    return checked


def download(key: str, repo: str | None = None, to: Path | None = None) -> Path:
    """Fetch the weights of ``key`` once, on the operator's machine (``castframe weights
    download``), with huggingface_hub's progress bars: into ``to`` when given, else into the
    local hub cache, where CASTFRAME_DIFFUSERS_MODELS can name them by hub id. Gated
    repositories (Stability's, FLUX.2 [dev]) need their licence accepted on the hub and
    HF_TOKEN set. Never called at request time."""
    weights = WEIGHTS.get(key)
    if weights is None:
        raise ValueError(f"no model {key!r}: choose one of {', '.join(WEIGHTS)}")
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo or weights.hub_id, local_dir=str(to) if to is not None else None)
    found = pipeline_class(Path(path))
    if found not in weights.pipeline_classes:
        raise ValueError(
            f"{repo or weights.hub_id} holds a {found or 'unknown'} pipeline; {key} needs "
            f"{' or '.join(weights.pipeline_classes)}"
        )
    return Path(path)
