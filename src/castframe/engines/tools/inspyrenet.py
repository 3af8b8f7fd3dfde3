"""``851-bg-remove``'s own model: InSPyReNet through the ``transparent-background`` package,
from a checkpoint the operator provides (``CASTFRAME_BG_REMOVE_851_WEIGHTS``).

The package downloads its checkpoints on first use unless given a local file; Castframe
always gives it one (nothing downloads at run time). Only the matte is taken from it: the
backgrounds, threshold and reverse are applied by ``backgrounds.render`` like for every
matting model, so all of them answer the fields the same way.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from castframe.errors import JobFailure


class InSPyReNetMatting:
    def __init__(self, checkpoint: Path, device: str = "cpu") -> None:
        self.checkpoint = checkpoint
        self.device = device
        mode = "fast" if "fast" in checkpoint.name else "base"
        self.name = f"InSPyReNet {mode} (transparent-background, {checkpoint.name})"
        self._mode = mode
        self._remover: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            from transparent_background import Remover
        except ImportError as exc:
            raise JobFailure(
                "engine_misconfigured",
                "CASTFRAME_BG_REMOVE_851_WEIGHTS is set but the transparent-background package "
                "is not installed (pip install transparent-background)",
            ) from exc
        if not self.checkpoint.is_file():
            raise JobFailure(
                "engine_misconfigured", f"the 851-bg-remove checkpoint {self.checkpoint} is missing"
            )
        try:
            return Remover(mode=self._mode, ckpt=str(self.checkpoint), device=self.device)
        except Exception as exc:  # torch and the package raise many types for bad files
            raise JobFailure(
                "engine_misconfigured",
                f"the 851-bg-remove checkpoint {self.checkpoint.name} could not be loaded",
            ) from exc

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        """float32 (H, W) in [0, 1] at ``rgb``'s size."""
        with self._lock:
            if self._remover is None:
                self._remover = self._load()
            result = self._remover.process(Image.fromarray(rgb), type="map")
        grey = np.asarray(result, dtype=np.float32)
        if grey.ndim == 3:
            grey = grey[..., 0]
        if grey.shape != rgb.shape[:2]:
            raise JobFailure(
                "engine_error", "the 851-bg-remove model answered a matte of the wrong size"
            )
        return grey / 255.0
