"""The diffusers engine on a tiny random Qwen-Image-Edit-Plus pipeline (CPU, offline).

The same loading code as for a real model: ``save_pretrained`` directory, family read from
``model_index.json``, the inpainting pipeline derived with ``from_pipe``. Sizes are small in
the engine-level tests (the pipeline still reads the reference at about one megapixel).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from castframe.engines.base import EngineRequest, JobCancelled, NullHooks
from castframe.engines.open_weights.families import QWEN_IMAGE_EDIT, missing_requirements
from tests.conftest import Api
from tests.support.apps import api_with_model, wide_job
from tests.support.hooks import Recorder
from tests.support.images import edit_pair
from tests.support.jobs import images_of
from tests.support.requests import engine_request
from tests.support.tiny_pipelines import tiny_lora, tiny_qwen_image_edit


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen_image_edit(tmp_path_factory.mktemp("models") / "qwen-image-edit-tiny")


@pytest.fixture(scope="session")
def qwen(qwen_dir: Path) -> object:
    from castframe.engines.open_weights.engine import DiffusersEngine

    return DiffusersEngine(str(qwen_dir), device="cpu")


def small(**overrides: object) -> EngineRequest:
    values: dict[str, object] = {
        "prompt": "a knight in a misty forest",
        "style_type": "FICTION",
        "negative_prompt": "blurry, low quality",
        "width": 96,
        "height": 64,
        **overrides,
    }
    return engine_request(**values)


def test_generate_maps_steps_seed_and_negative_prompt(qwen: object) -> None:
    generate = qwen.generate  # type: ignore[attr-defined]
    recorder = Recorder()
    one = generate(small(seed=11), recorder)
    assert one.images[0].pixels.shape == (64, 96, 3)
    assert one.metadata["family"] == "qwen-image-edit"
    assert one.metadata["negativePromptHonoured"] is True  # true CFG
    assert len(recorder.values) == QWEN_IMAGE_EDIT.steps["turbo"] == 20
    assert one.images[0].metadata == {"steps": 20}
    two = generate(small(seed=11, num_images=2), NullHooks())
    assert [image.seed for image in two.images] == [11, 12]
    assert np.array_equal(two.images[0].pixels, one.images[0].pixels)  # same seed, same image
    assert not np.array_equal(two.images[1].pixels, one.images[0].pixels)


def test_cancel_between_steps(qwen: object) -> None:
    stopper = Recorder(cancel_after=3)
    with pytest.raises(JobCancelled):
        qwen.generate(small(negative_prompt=None), stopper)  # type: ignore[attr-defined]
    assert len(stopper.values) < QWEN_IMAGE_EDIT.steps["turbo"]


def test_edit_with_a_mask_keeps_unmasked_pixels(
    qwen: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scene and the character both reach the pipeline; the mask decides what changes."""
    seen: list[object] = []
    pipeline = qwen.pipeline  # type: ignore[attr-defined]
    original = type(pipeline).__call__

    def recording(self: object, *args: object, **kwargs: object) -> object:
        seen.append(kwargs["image"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipeline), "__call__", recording)
    scene, mask = edit_pair(320, 240)
    keep = mask[..., 0] > 127
    result = qwen.generate(  # type: ignore[attr-defined]
        small(edit_image=scene, edit_mask=~keep, width=320, height=240, negative_prompt=None),
        NullHooks(),
    )
    out = result.images[0].pixels
    assert out.shape == scene.shape
    assert np.array_equal(out[keep], scene[keep])
    assert not np.array_equal(out[~keep], scene[~keep])
    [images] = seen
    assert isinstance(images, list) and len(images) == 2  # [scene, character reference]
    assert np.array_equal(np.asarray(images[0]), scene)
    assert np.array_equal(np.asarray(images[1]), engine_request().inputs.character.pixels)


def test_missing_torchvision_is_a_clear_startup_error(
    qwen_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castframe.engines.open_weights import engine as engine_module

    assert missing_requirements(QWEN_IMAGE_EDIT) == []  # present in the test environment
    monkeypatch.setattr(engine_module, "missing_requirements", lambda family: ["torchvision"])
    with pytest.raises(ValueError, match="qwen-image-edit pipelines need torchvision"):
        engine_module.DiffusersEngine(str(qwen_dir), device="cpu")


@pytest.fixture
def qwen_api(tmp_path: Path, sqlite_url: str, qwen_dir: Path) -> Iterator[Api]:
    yield from api_with_model(tmp_path, sqlite_url, qwen_dir)


def test_a_job_through_the_api_and_worker(qwen_api: Api) -> None:
    job = wide_job(qwen_api, qwen_api.key())
    assert job["status"] == "COMPLETED", job
    assert job["engine"] == "diffusers"
    assert job["result"]["metadata"]["family"] == "qwen-image-edit"
    image = images_of(job)[0]
    assert (image["width"], image["height"]) == (1312, 736)
    assert job["creditCost"] == 10


def test_a_lightning_style_lora_is_fused_and_switches_to_few_steps(
    qwen: object, qwen_dir: Path, tmp_path: Path
) -> None:
    from castframe.engines.open_weights.engine import DiffusersEngine

    lora_file = tiny_lora(qwen_dir, tmp_path / "lora")
    fast = DiffusersEngine(str(qwen_dir), device="cpu", lora=str(lora_file))
    base_weight = qwen.pipeline.transformer.transformer_blocks[0].attn.to_q.weight  # type: ignore[attr-defined]
    fused_weight = fast.pipeline.transformer.transformer_blocks[0].attn.to_q.weight
    assert fused_weight.shape == base_weight.shape
    assert not torch.equal(fused_weight, base_weight)  # the LoRA is in the weights
    recorder = Recorder()
    result = fast.generate(small(seed=4, rendering_speed="default"), recorder)
    assert len(recorder.values) == 8  # Lightning preset: default = 8 steps, not 40
    assert result.metadata["fewStep"] is True
    assert result.metadata["negativePromptHonoured"] is False  # distilled guidance: no CFG
    with pytest.raises(ValueError, match="does not exist"):
        DiffusersEngine(str(qwen_dir), device="cpu", lora=str(tmp_path / "missing.safetensors"))


def test_batched_images_match_one_by_one(qwen: object, qwen_dir: Path) -> None:
    from castframe.engines.open_weights.engine import DiffusersEngine, SpeedUps

    batched = DiffusersEngine(
        str(qwen_dir),
        device="cpu",
        speedups=SpeedUps(batch_images=True, channels_last_vae=True, first_block_cache=True),
    )
    recorder = Recorder()
    together = batched.generate(small(seed=21, num_images=2, negative_prompt=None), recorder)
    assert len(recorder.values) == 20  # one call: progress counts the batch's steps once
    apart = qwen.generate(small(seed=21, num_images=2, negative_prompt=None), NullHooks())  # type: ignore[attr-defined]
    assert [image.seed for image in together.images] == [21, 22]
    for one, other in zip(together.images, apart.images, strict=True):
        difference = np.abs(one.pixels.astype(int) - other.pixels.astype(int)).max()
        assert difference <= 2  # the same seeded noise; only batched arithmetic differs
    assert not np.array_equal(together.images[0].pixels, together.images[1].pixels)
