"""The engine contract: a pure function of (model, inputs, params) to images plus metadata.

The worker owns everything around it (fetching, storage, the database, billing). An engine
reports progress and honours cancellation only through ``RunHooks``, so the same engine runs
in tests, in the embedded worker and on a GPU machine unchanged.

The request is model-neutral: what every image model has (prompt, seed, count, size) is a
field, the input images are named by their role, and whatever else a model defines travels in
``params`` as the catalog module normalised it. An engine reads only the params of the models
it serves (the router refuses the rest at submission).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np


class JobCancelled(Exception):
    """Raised by ``RunHooks.check_cancelled`` when the owner cancelled the job."""


@dataclass(frozen=True)
class InputImage:
    """One decoded input: RGB uint8 pixels (H, W, 3) and the bytes as received (for engines
    that send the file upstream as it came)."""

    pixels: np.ndarray
    raw: bytes = b""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        height, width = self.pixels.shape[:2]
        return int(width), int(height)


@dataclass(frozen=True)
class EngineInputs:
    """A job's input images by role; any of them may be absent.

    - ``character``: the person to keep consistent (face scoring runs only where it is set);
    - ``image`` with ``mask``: an edit, whose output keeps the image's size; ``image`` alone:
      the image to transform (image-to-image, background removal, upscaling);
    - ``mask``: bool (H, W) at the image's size, True where the engine may paint;
    - ``style_references``: images whose look, not content, guides the output;
    - ``references``: content references (a model's ``input_images``)."""

    character: InputImage | None = None
    image: InputImage | None = None
    mask: np.ndarray | None = None
    style_references: tuple[InputImage, ...] = ()
    references: tuple[InputImage, ...] = ()

    @property
    def editing(self) -> bool:
        return self.image is not None and self.mask is not None


NO_INPUTS = EngineInputs()
NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class EngineRequest:
    model: str
    """The catalog id of the model the job asked for."""
    prompt: str
    negative_prompt: str | None
    seed: int
    num_images: int
    width: int
    height: int
    inputs: EngineInputs = NO_INPUTS
    params: Mapping[str, Any] = field(default_factory=lambda: NO_PARAMS)
    """The model's own normalised params (catalog/<model>.py), read-only."""

    def param(self, name: str, default: Any = None) -> Any:
        """A model param, or ``default`` when the model has none or the client gave none."""
        value = self.params.get(name)
        return default if value is None else value


@dataclass
class GeneratedImage:
    pixels: np.ndarray
    seed: int
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineResult:
    images: list[GeneratedImage]
    metadata: dict[str, Any] = field(default_factory=dict)


class RunHooks(Protocol):
    def progress(self, percent: int) -> None:
        """Report 0-100; cheap to call often (the worker throttles writes)."""

    def check_cancelled(self) -> None:
        """Raise ``JobCancelled`` if the job was cancelled; call between expensive steps."""


class NullHooks:
    """Hooks that do nothing: for benchmarks, scripts and unit tests of engines."""

    def progress(self, percent: int) -> None:
        return None

    def check_cancelled(self) -> None:
        return None


class Engine(Protocol):
    name: str

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult: ...
