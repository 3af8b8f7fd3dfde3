"""Real-ESRGAN x4plus in PyTorch, for an operator's weights file on a GPU
(``CASTFRAME_UPSCALE_WEIGHTS``, e.g. ``RealESRGAN_x4plus.pth``).

The network is ESRGAN's RRDBNet (23 residual-in-residual dense blocks, 64 features, growth 32,
two nearest-neighbour x2 upsamplings), written here from the paper's description with the
parameter names of the published checkpoints, so their state dicts load as they are (the
``params_ema`` entry when present). Tiles bound the GPU memory whatever the input size.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from castframe.engines.base import RunHooks
from castframe.engines.tools.superres import NATIVE_SCALE, finish
from castframe.errors import JobFailure

TILE = 256
PAD = 16


def build_network(blocks: int = 23, features: int = 64, growth: int = 32) -> Any:
    """An untrained RRDBNet x4 (torch imported only here: it is an optional dependency)."""
    import torch
    from torch import nn
    from torch.nn import functional

    def act(tensor: torch.Tensor) -> torch.Tensor:
        return functional.leaky_relu(tensor, negative_slope=0.2)

    class DenseBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for index in range(1, 6):
                inputs = features + (index - 1) * growth
                outputs = features if index == 5 else growth
                setattr(self, f"conv{index}", nn.Conv2d(inputs, outputs, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen = [x]
            for index in range(1, 5):
                seen.append(act(getattr(self, f"conv{index}")(torch.cat(seen, 1))))
            last: Any = self.conv5
            return last(torch.cat(seen, 1)) * 0.2 + x

    class ResidualInResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rdb1, self.rdb2, self.rdb3 = DenseBlock(), DenseBlock(), DenseBlock()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_first = nn.Conv2d(3, features, 3, 1, 1)
            self.body = nn.Sequential(*(ResidualInResidual() for _ in range(blocks)))
            self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
            self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
            self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
            self.conv_last = nn.Conv2d(features, 3, 3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            for conv in (self.conv_up1, self.conv_up2):
                feat = act(conv(functional.interpolate(feat, scale_factor=2, mode="nearest")))
            return self.conv_last(act(self.conv_hr(feat)))

    return Network()


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


class RealEsrganTorch:
    """The operator's Real-ESRGAN x4 checkpoint on ``device``; one image at a time."""

    def __init__(self, weights: Path, device: str = "auto", blocks: int = 23) -> None:
        self.weights = weights
        self._device = device
        self._blocks = blocks
        self._net: Any = None
        self._lock = threading.Lock()
        self.name = f"Real-ESRGAN x4 (PyTorch, {weights.name}, {device})"

    def _load(self) -> Any:
        try:
            import torch
        except ImportError as exc:
            raise JobFailure(
                "engine_misconfigured",
                "CASTFRAME_UPSCALE_WEIGHTS needs PyTorch (pip install torch)",
            ) from exc
        device = pick_device(self._device)
        try:
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            state = state.get("params_ema", state.get("params", state))
            network = build_network(self._blocks)
            network.load_state_dict(state, strict=True)
        except Exception as exc:  # a missing, truncated or foreign file: many types
            raise JobFailure(
                "engine_misconfigured",
                f"the upscale weights {self.weights.name} are not a Real-ESRGAN x4plus checkpoint",
            ) from exc
        self.name = f"Real-ESRGAN x4 (PyTorch, {self.weights.name}, {device})"
        return network.eval().to(device), device

    def x4(self, rgb: np.ndarray, hooks: RunHooks | None = None) -> np.ndarray:
        import torch

        with self._lock:
            if self._net is None:
                self._net = self._load()
            network, device = self._net
            height, width = rgb.shape[:2]
            image = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
            image = image.permute(2, 0, 1)[None].float() / 255.0
            out = torch.empty((1, 3, height * NATIVE_SCALE, width * NATIVE_SCALE), device=device)
            tiles = [
                (top, left) for top in range(0, height, TILE) for left in range(0, width, TILE)
            ]
            with torch.inference_mode():
                for done, (top, left) in enumerate(tiles, 1):
                    bottom, right = min(height, top + TILE), min(width, left + TILE)
                    y0, x0 = max(0, top - PAD), max(0, left - PAD)
                    y1, x1 = min(height, bottom + PAD), min(width, right + PAD)
                    result = network(image[:, :, y0:y1, x0:x1])
                    s = NATIVE_SCALE
                    out[:, :, top * s : bottom * s, left * s : right * s] = result[
                        :, :, (top - y0) * s : (bottom - y0) * s, (left - x0) * s : (right - x0) * s
                    ]
                    if hooks is not None:
                        hooks.progress(5 + int(85 * done / len(tiles)))
                        hooks.check_cancelled()
            pixels = (out.clamp(0, 1)[0].permute(1, 2, 0) * 255.0 + 0.5).byte().cpu().numpy()
        return np.ascontiguousarray(pixels)

    def upscale(self, rgb: np.ndarray, factor: int, hooks: RunHooks | None = None) -> np.ndarray:
        height, width = rgb.shape[:2]
        return finish(self.x4(rgb, hooks), width, height, factor)
