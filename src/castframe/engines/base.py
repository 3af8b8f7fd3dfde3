"""The engine contract: a pure function of (inputs, params) to images plus metadata.

The worker owns everything around it (fetching, storage, the database, billing). An engine
reports progress and honours cancellation only through ``RunHooks``, so the same engine runs
in tests, in the embedded worker and on a GPU machine unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class JobCanceled(Exception):
    """Raised by ``RunHooks.check_canceled`` when the owner canceled the job."""


@dataclass(frozen=True)
class EngineRequest:
    prompt: str
    negative_prompt: str | None
    style_type: str
    magic_prompt_option: str
    rendering_speed: str
    seed: int
    num_images: int
    width: int
    height: int
    aspect_ratio: str
    reference: np.ndarray
    """The character reference, RGB uint8 (H, W, 3)."""
    edit_image: np.ndarray | None = None
    """With ``edit_mask``: the image to edit, RGB uint8. Output then has its size."""
    edit_mask: np.ndarray | None = None
    """bool (H, W) at the edit image's size: True where the character may be painted."""
    reference_bytes: bytes = b""
    """The reference as received (for engines that upload it upstream)."""
    resolution: str | None = None
    """Ideogram's ``WxH`` when the client chose a size instead of a ratio (width/height match)."""
    style_preset: str | None = None
    """An Ideogram style preset name, for engines that honour it (``check_params`` refuses it
    at submission for those that do not)."""
    style_references: tuple[np.ndarray, ...] = ()
    """Style reference images, RGB uint8: their look, not their content, guides the output."""


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

    def check_canceled(self) -> None:
        """Raise ``JobCanceled`` if the job was canceled; call between expensive steps."""


class NullHooks:
    """Hooks that do nothing: for benchmarks, scripts and unit tests of engines."""

    def progress(self, percent: int) -> None:
        return None

    def check_canceled(self) -> None:
        return None


class Engine(Protocol):
    name: str

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult: ...
