"""Which engine runs a job, and building engines once per process.

Test keys always get the sandbox. Live ``ideogram-character`` jobs get the engine named by
``CASTFRAME_ENGINE_IDEOGRAM_CHARACTER``, or, when that is empty, ``ideogram`` if an Ideogram
key is configured and ``sandbox`` otherwise. The choice is made once, at submission, and stored
on the job, so a configuration change never re-routes jobs already queued.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from castframe.config import Settings
from castframe.engines.base import Engine
from castframe.errors import JobFailure

if TYPE_CHECKING:
    from castframe.engines.open_weights.families import Family

KNOWN_ENGINES = ("sandbox", "ideogram", "diffusers")
"""Built-in engines. Any ``package.module:Factory`` is accepted too: a plug-in engine that an
operator (or a benchmark) ships, built by calling ``Factory(settings)``."""


def live_engine(settings: Settings) -> str:
    if settings.engine_ideogram_character:
        return settings.engine_ideogram_character
    if settings.ideogram_api_key:
        return "ideogram"
    return "diffusers" if settings.diffusers_model else "sandbox"


def route_engine(model_id: str, mode: str, settings: Settings) -> str:
    """Pure: (model, key mode, settings) -> engine name."""
    if mode == "test":
        return "sandbox"
    if model_id == "ideogram-character":
        return live_engine(settings)
    return "sandbox"


def check_params(engine: str, params: dict[str, Any], settings: Settings) -> list[tuple[str, str]]:
    """What the engine cannot honour, as (field, message naming the engine), checked at
    submission so users get a 400 instead of a failed job or a silently ignored parameter.
    The sandbox honours every parameter; a plug-in receives them all in its EngineRequest."""
    if engine == "ideogram":
        from castframe.engines.ideogram import check_params as ideogram_check

        return ideogram_check(params)
    if engine == "diffusers":
        from castframe.engines.open_weights.families import check_params as diffusers_check

        family = served_family(settings.diffusers_model)
        few_step = bool(settings.diffusers_lora) and family.few_step_steps is not None
        return diffusers_check(params, family, few_step)
    return []


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

    def engine_for(self, model_id: str, mode: str) -> str:
        return route_engine(model_id, mode, self.settings)

    def refusals(self, engine: str, params: dict[str, Any]) -> list[tuple[str, str]]:
        return check_params(engine, params, self.settings)


def validate_engine_settings(settings: Settings) -> None:
    """Fail at start-up, not on the first job, when the engine setting is wrong."""
    engine = live_engine(settings)
    if ":" in engine:
        load_plugin(engine)
        return
    if engine not in KNOWN_ENGINES:
        raise ValueError(
            f"CASTFRAME_ENGINE_IDEOGRAM_CHARACTER={engine!r}: choose one of "
            f"{', '.join(KNOWN_ENGINES)}"
        )
    if engine == "ideogram" and not settings.ideogram_api_key:
        raise ValueError("the ideogram engine needs CASTFRAME_IDEOGRAM_API_KEY")
    if engine == "diffusers":
        if not settings.diffusers_model:
            raise ValueError("the diffusers engine needs CASTFRAME_DIFFUSERS_MODEL")
        from castframe.engines.open_weights.families import detect_family

        detect_family(settings.diffusers_model)  # unsupported pipelines fail here, at start


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
                download=self._downloader(),
                timeout=settings.ideogram_timeout,
                max_retries=settings.ideogram_max_retries,
                retry_base=settings.ideogram_retry_base,
                concurrency=settings.ideogram_concurrency,
                max_image_bytes=settings.max_image_bytes * 2,
                max_image_pixels=settings.max_image_pixels,
            )
        if name == "diffusers":
            from castframe.engines.open_weights.engine import DiffusersEngine, SpeedUps

            return DiffusersEngine(
                settings.diffusers_model,
                self.device or settings.diffusers_device,
                SpeedUps(
                    compile=settings.diffusers_compile,
                    first_block_cache=settings.diffusers_first_block_cache,
                    channels_last_vae=settings.diffusers_channels_last,
                    batch_images=settings.diffusers_batch_images,
                ),
                lora=settings.diffusers_lora,
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

    def _downloader(self) -> Any:
        """Result downloads go through the safe fetcher like every other outbound URL."""
        from castframe.media.fetch import FetchError, FetchPolicy, fetch

        settings = self.settings
        policy = FetchPolicy.from_settings(settings, max_bytes=settings.max_image_bytes * 2)

        def download(url: str) -> bytes:
            try:
                response = fetch(url, policy)
            except FetchError as exc:
                raise JobFailure(
                    "upstream_unavailable", f"downloading an Ideogram image failed: {exc.message}"
                ) from exc
            if response.status_code != 200:
                raise JobFailure(
                    "upstream_unavailable",
                    f"downloading an Ideogram image failed: HTTP {response.status_code}",
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
    import importlib

    module_name, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load engine plug-in {path!r}: {exc}") from exc
