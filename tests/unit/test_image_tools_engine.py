"""The tools engine's wiring, without the slow models: the operator's InSPyReNet through a
stand-in ``transparent_background`` package, broken weights, what it refuses, and routing."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from castframe.catalog import MODELS
from castframe.config import Settings
from castframe.engines.base import EngineInputs, EngineRequest, InputImage, NullHooks
from castframe.engines.router import live_engine, route_engine, validate_engine_settings
from castframe.engines.tools.engine import ToolsConfig, ToolsEngine
from castframe.engines.tools.matting import OnnxMatting
from castframe.engines.tools.rules import check_params
from castframe.errors import JobFailure
from tests.support.images import astronaut, png_bytes


def request(model: str, pixels: np.ndarray, raw: bytes = b"", **params: Any) -> EngineRequest:
    height, width = pixels.shape[:2]
    return EngineRequest(
        model=model,
        prompt="",
        negative_prompt=None,
        seed=0,
        num_images=1,
        width=width,
        height=height,
        inputs=EngineInputs(image=InputImage(pixels, raw)),
        params=MappingProxyType({"output_format": "png", **params}),
    )


class StandInRemover:
    """transparent-background's ``Remover``: a matte that is 1 in the image's left half."""

    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        StandInRemover.made.append(kwargs)

    def process(self, image: Image.Image, type: str) -> Image.Image:
        assert type == "map"
        grey = np.zeros((image.height, image.width), np.uint8)
        grey[:, : image.width // 2] = 255
        return Image.fromarray(np.dstack([grey] * 3))


@pytest.fixture
def stand_in_package(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("transparent_background")
    module.Remover = StandInRemover  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transparent_background", module)


def test_the_operators_inspyrenet_runs_with_every_field(
    stand_in_package: None, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "ckpt_fast.pth"
    checkpoint.write_bytes(b"weights")
    engine = ToolsEngine(ToolsConfig(inspyrenet_checkpoint=checkpoint))
    pixels = np.ascontiguousarray(astronaut()[:64, :64])
    result = engine.generate(request("851-bg-remove", pixels, reverse=True), NullHooks())
    assert result.metadata["model"] == "InSPyReNet fast (transparent-background, ckpt_fast.pth)"
    alpha = result.images[0].pixels[..., 3]
    assert alpha[:, :32].max() == 0 and alpha[:, 32:].min() == 255  # reversed
    assert StandInRemover.made[-1] == {"mode": "fast", "ckpt": str(checkpoint), "device": "cpu"}
    green = engine.generate(request("851-bg-remove", pixels, background_type="green"), NullHooks())
    assert green.images[0].pixels.shape == (64, 64, 3)
    assert tuple(green.images[0].pixels[0, 63]) == (0, 255, 0)


def test_missing_or_broken_weights_fail_the_job_with_a_clear_message(tmp_path: Path) -> None:
    pixels = np.ascontiguousarray(astronaut()[:32, :32])
    broken = tmp_path / "rmbg.onnx"
    broken.write_bytes(b"not a model")
    engine = ToolsEngine(ToolsConfig(bria_onnx=broken, bria_enabled=True))
    with pytest.raises(JobFailure) as failure:
        engine.generate(request("bria-bg-remove", pixels), NullHooks())
    assert failure.value.code == "engine_misconfigured"
    assert "rmbg.onnx" in failure.value.message and "Protobuf" not in failure.value.message
    without = ToolsEngine(ToolsConfig(inspyrenet_checkpoint=tmp_path / "absent.pth"))
    sys.modules.pop("transparent_background", None)
    with pytest.raises(JobFailure) as failure:
        without.generate(request("851-bg-remove", pixels), NullHooks())
    assert failure.value.code == "engine_misconfigured"
    assert "transparent-background" in failure.value.message


def test_an_input_read_only_at_run_time_is_checked_again() -> None:
    """An upload is sized from its row at submission; its transparency is caught here."""
    rgba = np.dstack([astronaut()[:32, :32], np.full((32, 32), 100, np.uint8)])
    pixels = np.ascontiguousarray(astronaut()[:32, :32])
    with pytest.raises(JobFailure) as failure:
        ToolsEngine().generate(request("851-bg-remove", pixels, png_bytes(rgba)), NullHooks())
    assert failure.value.code == "invalid_image" and "alpha" in failure.value.message


def test_logits_and_probabilities_both_become_a_matte() -> None:
    logits = np.linspace(-8, 8, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    matte = OnnxMatting.postprocess(logits, 16, 12)
    assert matte.shape == (12, 16) and matte.min() == 0.0 and matte.max() == 1.0
    probabilities = OnnxMatting.postprocess(1 / (1 + np.exp(-logits)), 16, 12)
    assert np.allclose(matte, probabilities, atol=0.02)


def test_what_each_model_cannot_honour() -> None:
    assert check_params("851-bg-remove", {"threshold": 0.3, "reverse": True}) == []
    assert [field for field, _ in check_params("bria-bg-remove", {"content_moderation": True})] == [
        "content_moderation"
    ]
    topaz = check_params(
        "topaz-image-upscale", {"model_type": "text-refine", "face_enhance": True, "seed": 3}
    )
    assert [field for field, _ in topaz] == ["model_type", "face_enhance"]
    assert all("tools engine" in message and "Real-ESRGAN" in message for _, message in topaz)
    assert check_params("topaz-image-upscale", {"model_type": "cgi", "face_enhance": False}) == []
    clarity = check_params("clarity-upscale", {"prompt": "x", "sharpen": 3, "dynamic": 6})
    assert [field for field, _ in clarity] == ["prompt", "dynamic"]


def test_live_tool_jobs_go_to_the_tools_engine_and_test_jobs_to_the_sandbox(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    for model_id in ("851-bg-remove", "bria-bg-remove", "topaz-image-upscale", "clarity-upscale"):
        assert live_engine(MODELS[model_id], settings) == "tools"
        assert route_engine(MODELS[model_id], "test", settings) == "sandbox"
    routed = Settings(data_dir=tmp_path, routes="*-upscale=sandbox")
    assert live_engine(MODELS["clarity-upscale"], routed) == "sandbox"


def test_weights_that_are_not_there_fail_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CASTFRAME_BG_REMOVE_851_WEIGHTS"):
        validate_engine_settings(
            Settings(data_dir=tmp_path, bg_remove_851_weights=tmp_path / "none.pth")
        )
    with pytest.raises(ValueError, match="CASTFRAME_BG_REMOVE_BRIA_WEIGHTS"):
        validate_engine_settings(
            Settings(
                data_dir=tmp_path,
                bg_remove_bria_enabled=True,
                bg_remove_bria_weights=tmp_path / "none.onnx",
            )
        )
