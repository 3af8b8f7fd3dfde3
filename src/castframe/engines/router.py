"""Which engine runs a job (the route table), what it refuses, and building engines once.

Routing is a table. Test keys always get the sandbox. For live keys, the operator's
``CASTFRAME_ROUTES`` (``pattern=engine`` entries, first match wins) names the engine of each
model; a model it does not match goes to its provider's upstream engine when that engine's
key is configured (``ModelSpec.upstream``), else to the diffusers engine when it holds weights
for that model (CASTFRAME_DIFFUSERS_MODELS; flux-2-dev only with its licence switch on), else
to the sandbox. The choice is made once, at submission, and stored on
the job, so a configuration change never re-routes jobs already queued.

Each engine declares which models it serves and what it cannot honour (``ENGINES``); what it
cannot honour is a 400 at submission naming the field and the engine.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import importlib.util
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from castframe.catalog import MODELS, ModelSpec
from castframe.config import ENV_PREFIX, Settings
from castframe.engines.base import Engine
from castframe.errors import JobFailure

if TYPE_CHECKING:
    from castframe.engines.open_weights.families import Family

Refusals = list[tuple[str, str]]
"""(field of the params block, message naming the engine) for each thing it cannot honour."""


class Rules(Protocol):
    """What an engine's rules module answers for the router: engines/ideogram.py,
    engines/bfl.py, engines/tools/rules.py, and engines/open_weights/engine.py (``serves``
    only: ``_diffusers_refusals`` answers for its families)."""

    def serves(self, model_id: str) -> bool: ...

    def check_params(self, model_id: str, params: Mapping[str, Any]) -> Refusals: ...


def _needs(engine: str, setting: str) -> Callable[[Settings], str | None]:
    """``EngineEntry.missing`` of an engine that needs one setting (its provider's key)."""
    message = f"the {engine} engine needs {ENV_PREFIX}{setting.upper()}"

    def missing(settings: Settings) -> str | None:
        return None if getattr(settings, setting) else message

    return missing


def _diffusers_refusals(spec: ModelSpec, params: Mapping[str, Any], settings: Settings) -> Refusals:
    """Each open-weights family's own refusals, some under the operator's weights."""
    from castframe.engines.open_weights import weights

    if spec.id == weights.CHARACTER_MODEL:
        from castframe.engines.open_weights.families import check_params as diffusers_check

        family = served_family(settings.diffusers_model)
        few_step = bool(settings.diffusers_lora) and family.few_step_steps is not None
        return diffusers_check(params, family, few_step)
    if spec.id.startswith("stable-diffusion-3"):
        from castframe.engines.open_weights import sd3

        return sd3.refusals(params)
    if spec.id == "qwen-image":
        from castframe.engines.open_weights import qwen_image

        return qwen_image.refusals(params, weights.QWEN_EDIT_KEY in settings.diffusers_models)
    if spec.id == weights.FLUX_2_DEV:
        from castframe.engines.open_weights import flux2_dev

        return flux2_dev.refusals(params)
    return []


def _diffusers_missing(settings: Settings) -> str | None:
    if not settings.diffusers_model and not settings.diffusers_models:
        return (
            "the diffusers engine needs weights: CASTFRAME_DIFFUSERS_MODELS (or "
            "CASTFRAME_DIFFUSERS_MODEL for ideogram-character)"
        )
    return None


def _tools_refusals(spec: ModelSpec, params: Mapping[str, Any], settings: Settings) -> Refusals:
    """The tools engine's rules, and bria-bg-remove only where the operator turned it on."""
    from castframe.engines.tools.rules import check_params as tools_check

    refusals = tools_check(spec.id, params)
    if spec.id == "bria-bg-remove" and not (
        settings.bg_remove_bria_enabled and settings.bg_remove_bria_weights
    ):
        refusals.append(
            (
                "image",
                "the tools engine serves bria-bg-remove only where the operator has turned it on "
                "(RMBG-2.0's licence is non-commercial): use 851-bg-remove, or ask the operator "
                "to set CASTFRAME_BG_REMOVE_BRIA_WEIGHTS and CASTFRAME_BG_REMOVE_BRIA_ENABLED",
            )
        )
    return refusals


def tools_ready(spec: ModelSpec, settings: Settings) -> bool:
    """Whether this installation can run ``spec`` on the tools engine: the upscaler needs the
    ncnn wheel and Debian's libraries, background removal ONNX Runtime and a model (the
    bundled one, or the operator's, checked at start-up)."""
    if spec.operation == "upscale" and settings.upscale_weights:
        return importlib.util.find_spec("torch") is not None
    if spec.operation == "upscale":
        from castframe.engines.tools.superres import available

        return available() is None
    return importlib.util.find_spec("onnxruntime") is not None


def diffusers_holds(spec: ModelSpec, settings: Settings) -> bool:
    """Whether this server's diffusers engine has (and may use) weights for ``spec``."""
    from castframe.engines.open_weights.weights import holds

    return ENGINES["diffusers"].serves(spec) and holds(spec.id, settings)


@dataclass(frozen=True)
class EngineEntry:
    """What the router knows of a built-in engine, without importing it until it is used.

    Its rules module answers for it: ``serves(model_id)`` which models it serves,
    ``check_params(model_id, params)`` what it cannot honour in a job of one (``Rules``),
    imported on the first question. Where what it refuses also depends on the operator's
    settings, ``refuse`` answers instead of ``check_params``."""

    module: str | None
    """The rules module; None: every model, every parameter (the sandbox)."""
    refuse: Callable[[ModelSpec, Mapping[str, Any], Settings], Refusals] | None = None
    missing: Callable[[Settings], str | None] = lambda settings: None
    """Why this operator's settings cannot run it (None: they can)."""

    def rules(self) -> Rules:
        assert self.module is not None
        return cast(Rules, importlib.import_module(self.module))

    def serves(self, spec: ModelSpec) -> bool:
        return self.module is None or self.rules().serves(spec.id)

    def refusals(self, spec: ModelSpec, params: Mapping[str, Any], settings: Settings) -> Refusals:
        if self.refuse is not None:
            return self.refuse(spec, params, settings)
        if self.module is None:
            return []
        return self.rules().check_params(spec.id, params)


ENGINES: dict[str, EngineEntry] = {
    "sandbox": EngineEntry(None),
    "ideogram": EngineEntry(
        "castframe.engines.ideogram", missing=_needs("ideogram", "ideogram_api_key")
    ),
    "bfl": EngineEntry("castframe.engines.bfl", missing=_needs("bfl", "bfl_api_key")),
    "diffusers": EngineEntry(
        "castframe.engines.open_weights.engine",
        refuse=_diffusers_refusals,
        missing=_diffusers_missing,
    ),
    "tools": EngineEntry("castframe.engines.tools.rules", refuse=_tools_refusals),
}
"""Built-in engines. Any ``package.module:Factory`` is accepted too: a plug-in engine that an
operator (or a benchmark) ships, built by calling ``Factory(settings)``; it is routed only
where ``CASTFRAME_ROUTES`` names it, and receives every parameter."""
KNOWN_ENGINES = tuple(ENGINES)


@functools.lru_cache(maxsize=16)
def parse_routes(routes: str) -> tuple[tuple[str, str], ...]:
    """``CASTFRAME_ROUTES`` as (pattern, engine) pairs; ValueError on a malformed entry."""
    table = []
    for entry in (part.strip() for part in routes.split(",")):
        if not entry:
            continue
        pattern, sep, engine = (piece.strip() for piece in entry.partition("="))
        if not sep or not pattern or not engine:
            raise ValueError(f"CASTFRAME_ROUTES: {entry!r} is not pattern=engine")
        table.append((pattern, engine))
    return tuple(table)


def live_engine(spec: ModelSpec, settings: Settings) -> str:
    """Pure: the engine that serves ``spec`` for live keys under ``settings``."""
    for pattern, engine in parse_routes(settings.routes):
        if fnmatch.fnmatchcase(spec.id, pattern):
            return engine
    if spec.upstream and ENGINES[spec.upstream].missing(settings) is None:
        return spec.upstream
    if diffusers_holds(spec, settings):
        return "diffusers"
    if ENGINES["tools"].serves(spec) and tools_ready(spec, settings):
        return "tools"
    return "sandbox"


def route_engine(spec: ModelSpec, mode: str, settings: Settings) -> str:
    """Pure: (model, key mode, settings) -> engine name."""
    return "sandbox" if mode == "test" else live_engine(spec, settings)


def check_params(
    engine: str, spec: ModelSpec, params: Mapping[str, Any], settings: Settings
) -> Refusals:
    """What ``engine`` cannot honour in a job of ``spec``, as (params field path, message),
    checked at submission so users get a 400 instead of a failed job or a silently ignored
    parameter. A plug-in receives every parameter."""
    entry = ENGINES.get(engine)
    if entry is None:
        return []
    return [
        (f"{spec.params_key}.{name}", message)
        for name, message in entry.refusals(spec, params, settings)
    ]


@functools.lru_cache(maxsize=4)
def served_family(model_dir: str) -> Family:
    """The diffusers family of the configured model, read once (start-up validated it)."""
    from castframe.engines.open_weights.families import detect_family

    return detect_family(model_dir)


class Routing:
    """``route_engine`` and ``check_params`` under one operator's settings (what submission
    validation asks of the engines: jobs/validation.py's ``EngineRules``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def engine_for(self, spec: ModelSpec, mode: str) -> str:
        return route_engine(spec, mode, self.settings)

    def refusals(self, engine: str, spec: ModelSpec, params: Mapping[str, Any]) -> Refusals:
        return check_params(engine, spec, params, self.settings)

    def served(self) -> dict[str, str]:
        """Every model this server can run for live keys, with the engine that runs it."""
        return {model_id: live_engine(spec, self.settings) for model_id, spec in MODELS.items()}

    def notices(self) -> dict[str, str]:
        """Models an engine holds weights for but does not serve, and why (flux-2-dev
        before its licence switch is turned on)."""
        from castframe.engines.open_weights.weights import gated

        return gated(self.settings)


def validate_engine_settings(settings: Settings) -> None:
    """Fail at start-up, not on the first job, when the route table or an engine's settings
    are wrong: every engine that some model routes to must be buildable and serve it."""
    parse_routes(settings.routes)
    for spec in MODELS.values():
        engine = live_engine(spec, settings)
        if ":" in engine:
            load_plugin(engine)
            continue
        entry = ENGINES.get(engine)
        if entry is None:
            raise ValueError(
                f"CASTFRAME_ROUTES routes {spec.id} to {engine!r}: choose one of "
                f"{', '.join(KNOWN_ENGINES)} or a plug-in package.module:Factory"
            )
        if not entry.serves(spec):
            raise ValueError(
                f"CASTFRAME_ROUTES routes {spec.id} to {engine}, which cannot serve it"
            )
        missing = entry.missing(settings)
        if missing:
            raise ValueError(missing)
        if engine == "diffusers" and not diffusers_holds(spec, settings):
            raise ValueError(_no_weights(spec.id, settings))
    from castframe.engines.open_weights.weights import check_weights

    check_weights(settings)  # missing directories and other families fail here, at start
    for path, what in (
        (settings.bg_remove_851_weights, "CASTFRAME_BG_REMOVE_851_WEIGHTS"),
        (settings.upscale_weights, "CASTFRAME_UPSCALE_WEIGHTS"),
        (
            settings.bg_remove_bria_weights if settings.bg_remove_bria_enabled else None,
            "CASTFRAME_BG_REMOVE_BRIA_WEIGHTS",
        ),
    ):
        if path is not None and not path.is_file():
            raise ValueError(f"{what}: {path} is not a file")
    if settings.diffusers_model:
        from castframe.engines.open_weights.families import detect_family

        detect_family(settings.diffusers_model)  # unsupported pipelines fail here, at start


def _no_weights(model_id: str, settings: Settings) -> str:
    from castframe.engines.open_weights import weights

    if model_id == weights.FLUX_2_DEV and model_id in settings.diffusers_models:
        return (
            f"CASTFRAME_ROUTES routes {model_id} to diffusers, but {weights.LICENCE_SETTING} is "
            "off (FLUX.2 [dev] is under the FLUX [dev] Non-Commercial License)"
        )
    setting = (
        "CASTFRAME_DIFFUSERS_MODEL"
        if model_id == weights.CHARACTER_MODEL
        else f"CASTFRAME_DIFFUSERS_MODELS[{model_id!r}]"
    )
    return (
        f"CASTFRAME_ROUTES routes {model_id} to diffusers, which has no weights for it ({setting})"
    )


class EngineRegistry:
    """Engines are built on first use and kept (a GPU engine loads its weights once).

    A registry built for a ``device`` (``castframe worker --devices cuda:0,cuda:1``: one
    registry per device, ``for_device``) builds its own engine instances on that device: the
    diffusers engine there instead of ``CASTFRAME_DIFFUSERS_DEVICE``, and a plug-in factory
    that takes a ``device`` keyword gets it (one that does not is built as usual).
    """

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        self.settings = settings
        self.device = device
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._devices: dict[str, EngineRegistry] = {}

    def for_device(self, device: str | None) -> EngineRegistry:
        """This registry (no device named), or the one (made once) whose engines run on
        ``device``."""
        if device is None or device == self.device:
            return self
        with self._lock:
            if device not in self._devices:
                self._devices[device] = EngineRegistry(self.settings, device)
            return self._devices[device]

    def get(self, name: str) -> Engine:
        with self._lock:
            if name not in self._engines:
                self._engines[name] = self._build(name)
            return self._engines[name]

    def built(self) -> list[Engine]:
        """The engines built so far (a lane asks which models they hold: engines/residency.py)."""
        with self._lock:
            return list(self._engines.values())

    def _build(self, name: str) -> Engine:
        settings = self.settings
        if name == "sandbox":
            from castframe.engines.sandbox import SandboxEngine

            return SandboxEngine()
        if name == "ideogram":
            if not settings.ideogram_api_key:
                raise LookupError("the ideogram engine has no CASTFRAME_IDEOGRAM_API_KEY")
            from castframe.engines.ideogram import IdeogramEngine

            return IdeogramEngine(
                api_key=settings.ideogram_api_key,
                base_url=settings.ideogram_base_url,
                download=self._downloader("Ideogram"),
                timeout=settings.ideogram_timeout,
                max_retries=settings.ideogram_max_retries,
                retry_base=settings.ideogram_retry_base,
                concurrency=settings.ideogram_concurrency,
                max_image_bytes=settings.max_image_bytes * 2,
                max_image_pixels=settings.max_image_pixels,
            )
        if name == "bfl":
            if not settings.bfl_api_key:
                raise LookupError("the bfl engine has no CASTFRAME_BFL_API_KEY")
            from castframe.engines.bfl import BflEngine

            return BflEngine(
                api_key=settings.bfl_api_key,
                base_url=settings.bfl_base_url,
                download=self._downloader("BFL"),
                timeout=settings.bfl_timeout,
                max_retries=settings.bfl_max_retries,
                retry_base=settings.bfl_retry_base,
                concurrency=settings.bfl_concurrency,
                poll_interval=settings.bfl_poll_interval,
                poll_timeout=settings.bfl_poll_timeout,
                max_image_bytes=settings.max_image_bytes * 2,
                max_image_pixels=settings.max_image_pixels,
            )
        if name == "tools":
            from castframe.engines.tools.engine import ToolsConfig, ToolsEngine

            return ToolsEngine(
                ToolsConfig(
                    inspyrenet_checkpoint=settings.bg_remove_851_weights,
                    bria_onnx=settings.bg_remove_bria_weights,
                    bria_enabled=settings.bg_remove_bria_enabled,
                    upscale_weights=settings.upscale_weights,
                    upscale_device=settings.upscale_device,
                )
            )
        if name == "diffusers":
            from castframe.engines.open_weights.engine import OpenWeightsEngine, SpeedUps
            from castframe.engines.open_weights.weights import check_weights

            return OpenWeightsEngine(
                check_weights(settings),
                self.device or settings.diffusers_device,
                character_dir=settings.diffusers_model,
                speedups=SpeedUps(
                    compile=settings.diffusers_compile,
                    first_block_cache=settings.diffusers_first_block_cache,
                    channels_last_vae=settings.diffusers_channels_last,
                    batch_images=settings.diffusers_batch_images,
                ),
                lora=settings.diffusers_lora,
                flux_2_dev=settings.diffusers_flux_2_dev,
            )
        if ":" in name:
            factory = load_plugin(name)
            engine: Engine = (
                factory(settings, device=self.device)
                if self.device is not None and takes_device(factory)
                else factory(settings)
            )
            return engine
        raise LookupError(f"engine {name!r} is not available in this build")

    def _downloader(self, provider: str) -> Callable[[str], bytes]:
        """Upstream results are downloaded through the safe fetcher like every other
        outbound URL."""
        from castframe.media.fetch import FetchError, FetchPolicy, fetch

        settings = self.settings
        policy = FetchPolicy.from_settings(settings, max_bytes=settings.max_image_bytes * 2)

        def download(url: str) -> bytes:
            try:
                response = fetch(url, policy)
            except FetchError as exc:
                raise JobFailure(
                    "upstream_unavailable", f"downloading a {provider} image failed: {exc.message}"
                ) from exc
            if response.status_code != 200:
                raise JobFailure(
                    "upstream_unavailable",
                    f"downloading a {provider} image failed: HTTP {response.status_code}",
                )
            return response.body

        return download


def takes_device(factory: Any) -> bool:
    """Whether a plug-in factory accepts ``device=`` (so a worker can build one per device)."""
    import inspect

    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "device" in parameters or any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()
    )


def load_plugin(path: str) -> Any:
    """``package.module:Factory`` -> the factory; raises ValueError with a clear message."""
    module_name, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load engine plug-in {path!r}: {exc}") from exc
