"""Real-ESRGAN in PyTorch for an operator's checkpoint: the published checkpoints' parameter
names, exact sizes, tiles that join, and a foreign file refused clearly. Runs on the CPU with a
small, untrained network (the real weights are the operator's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from castframe.engines.tools import rrdbnet
from castframe.engines.tools.engine import ToolsConfig, ToolsEngine
from castframe.engines.tools.superres import FACTORS, RealEsrganCpu
from castframe.errors import JobFailure
from tests.support.photos import photo


def checkpoint(tmp_path: Path, blocks: int = 2) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": rrdbnet.build_network(blocks).state_dict()}, path)
    return path


def test_the_network_has_the_published_checkpoints_parameter_names() -> None:
    names = set(rrdbnet.build_network(23).state_dict())
    for name in (
        "conv_first.weight",
        "body.0.rdb1.conv1.weight",
        "body.22.rdb3.conv5.bias",
        "conv_body.weight",
        "conv_up1.weight",
        "conv_up2.weight",
        "conv_hr.weight",
        "conv_last.bias",
    ):
        assert name in names
    assert len(names) == 23 * 3 * 5 * 2 + 6 * 2


def test_exact_sizes_and_tiles_that_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upscaler = rrdbnet.RealEsrganTorch(checkpoint(tmp_path), "cpu", blocks=2)
    small = np.ascontiguousarray(photo("coffee")[::20, ::20][:17, :23])
    for factor in FACTORS:
        assert upscaler.upscale(small, factor).shape == (17 * factor, 23 * factor, 3)
    assert upscaler.name == "Real-ESRGAN x4 (PyTorch, RealESRGAN_x4plus.pth, cpu)"
    whole = upscaler.upscale(small, 4)
    monkeypatch.setattr(rrdbnet, "TILE", 8)
    monkeypatch.setattr(rrdbnet, "PAD", 6)
    tiled = upscaler.upscale(small, 4)
    assert np.abs(tiled.astype(int) - whole.astype(int)).mean() < 2.0


def test_a_foreign_file_fails_the_job_clearly(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"params_ema": {"conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(JobFailure) as failure:
        rrdbnet.RealEsrganTorch(path, "cpu", blocks=2).upscale(np.zeros((8, 8, 3), np.uint8), 2)
    assert failure.value.code == "engine_misconfigured"
    assert (
        failure.value.message
        == "the upscale weights other.pth are not a Real-ESRGAN x4plus checkpoint"
    )


def test_the_engine_uses_the_checkpoint_for_photos_and_ncnn_for_cgi(tmp_path: Path) -> None:
    engine = ToolsEngine(ToolsConfig(upscale_weights=checkpoint(tmp_path), upscale_device="cpu"))
    assert isinstance(engine.upscaler_for("x4plus"), rrdbnet.RealEsrganTorch)
    assert isinstance(engine.upscaler_for("x4plus-anime"), RealEsrganCpu)
    assert isinstance(ToolsEngine().upscaler_for("x4plus"), RealEsrganCpu)
