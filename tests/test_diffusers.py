"""The diffusers engine on tiny random FLUX.2 [klein] pipelines (CPU, offline)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from castframe.catalog import MODELS
from castframe.catalog.ideogram_params import ASPECT_SIZES
from castframe.config import Settings
from castframe.engines.base import EngineRequest, JobCancelled, NullHooks
from castframe.engines.open_weights.families import detect_family, text_encoder_layers
from castframe.engines.router import route_engine
from castframe.services import Services
from tests.conftest import Api, body_for, make_settings
from tests.support.apps import api_with_model, wide_job
from tests.support.hooks import Recorder
from tests.support.images import astronaut_png, data_uri, edit_pair
from tests.support.jobs import images_of
from tests.support.polling import wait_until
from tests.support.requests import engine_request
from tests.support.tiny_pipelines import tiny_flux2_klein


@pytest.fixture(scope="session")
def klein_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_flux2_klein(tmp_path_factory.mktemp("models") / "flux2-klein-tiny")


@pytest.fixture(scope="session")
def engine(klein_dir: Path) -> object:
    from castframe.engines.open_weights.engine import DiffusersEngine

    return DiffusersEngine(str(klein_dir), device="cpu")


def request(**overrides: object) -> EngineRequest:
    return engine_request(
        **{"prompt": "a knight in a misty forest", "style_type": "AUTO", "seed": 5, **overrides}
    )


def test_family_detection_and_clear_errors(klein_dir: Path, tmp_path: Path) -> None:
    assert detect_family(klein_dir).name == "flux2-klein"
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "model_index.json").write_text(json.dumps({"_class_name": "QwenImageEditPlusPipeline"}))
    assert detect_family(qwen).name == "qwen-image-edit"
    other = tmp_path / "sdxl"
    other.mkdir()
    (other / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionXLPipeline"})
    )
    with pytest.raises(ValueError, match="unsupported pipeline 'StableDiffusionXLPipeline'"):
        detect_family(other)
    with pytest.raises(ValueError, match=r"no model_index\.json"):
        detect_family(tmp_path)
    with pytest.raises(ValueError, match="unsupported pipeline"):
        Services.build(
            make_settings(tmp_path / "d", f"sqlite:///{tmp_path}/x.db", diffusers_model=str(other))
        )


def test_routing_and_text_encoder_layers() -> None:
    character = MODELS["ideogram-character"]
    assert route_engine(character, "live", Settings(diffusers_model="/m")) == "diffusers"
    assert route_engine(character, "test", Settings(diffusers_model="/m")) == "sandbox"
    assert text_encoder_layers(2560, 7680, 36) == (9, 18, 27)  # FLUX.2 klein 4B's own default
    assert text_encoder_layers(16, 16, 2) == (1,)


@pytest.mark.parametrize("aspect", list(ASPECT_SIZES))
def test_output_sizes_per_aspect_ratio(engine: object, aspect: str) -> None:
    width, height = ASPECT_SIZES[aspect]
    result = engine.generate(request(aspect_ratio=aspect), NullHooks())  # type: ignore[attr-defined]
    assert result.images[0].pixels.shape == (height, width, 3)
    assert result.metadata["family"] == "flux2-klein"


def test_determinism_by_seed_and_variation(engine: object) -> None:
    generate = engine.generate  # type: ignore[attr-defined]
    a = generate(request(seed=11), NullHooks()).images[0].pixels
    b = generate(request(seed=11), NullHooks()).images[0].pixels
    c = generate(request(seed=12), NullHooks()).images[0].pixels
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    two = generate(request(seed=11, num_images=2), NullHooks())
    assert [image.seed for image in two.images] == [11, 12]
    assert np.array_equal(two.images[0].pixels, a)


def test_progress_per_step_and_cancel_between_steps(engine: object) -> None:
    recorder = Recorder()
    engine.generate(request(num_images=2, rendering_speed="quality"), recorder)  # type: ignore[attr-defined]
    assert len(recorder.values) == 16  # 8 steps x 2 images
    assert recorder.values == sorted(recorder.values) and recorder.values[-1] == 95
    stopper = Recorder(cancel_after=3)
    with pytest.raises(JobCancelled):
        engine.generate(request(rendering_speed="quality"), stopper)  # type: ignore[attr-defined]
    assert len(stopper.values) < 8


def test_edit_keeps_unmasked_pixels(engine: object) -> None:
    scene, mask = edit_pair(640, 480)
    keep = mask[..., 0] > 127
    result = engine.generate(
        request(edit_image=scene, edit_mask=~keep, width=640, height=480),  # type: ignore[attr-defined]
        NullHooks(),
    )
    out = result.images[0].pixels
    assert out.shape == scene.shape
    assert np.array_equal(out[keep], scene[keep])
    assert not np.array_equal(out[~keep], scene[~keep])


@pytest.fixture
def diffusers_api(tmp_path: Path, sqlite_url: str, klein_dir: Path) -> Iterator[Api]:
    yield from api_with_model(tmp_path, sqlite_url, klein_dir)


def test_jobs_through_the_api_and_worker(diffusers_api: Api) -> None:
    key = diffusers_api.key()
    job = wide_job(diffusers_api, key)
    assert job["status"] == "COMPLETED", job
    assert job["engine"] == "diffusers"
    image = images_of(job)[0]
    assert (image["width"], image["height"]) == (1312, 736)
    assert job["result"]["metadata"]["family"] == "flux2-klein"
    test_key = diffusers_api.key(mode="test")
    assert (
        diffusers_api.submit_and_wait(test_key, body_for(data_uri(astronaut_png())))["engine"]
        == "sandbox"
    )


def test_cancel_a_running_diffusers_job(diffusers_api: Api) -> None:
    key = diffusers_api.key()
    body = body_for(data_uri(astronaut_png()), rendering_speed="quality", top={"num_images": 4})
    job_id = diffusers_api.generate(key, body).json()["jobId"]
    wait_until(lambda: diffusers_api.get_job(key, job_id)["progress"] > 5, 60, 0.05)
    diffusers_api.client.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
    job = diffusers_api.wait(key, job_id)
    assert job["status"] == "CANCELLED" and job["creditCost"] == 0


def test_speedups_switch_on_without_changing_the_contract(
    klein_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from castframe.engines.open_weights.engine import DiffusersEngine, SpeedUps

    fast = DiffusersEngine(
        str(klein_dir),
        device="cpu",
        speedups=SpeedUps(first_block_cache=True, channels_last_vae=True),
    )
    result = fast.generate(request(aspect_ratio="3:4", seed=9), NullHooks())
    assert result.images[0].pixels.shape == (1152, 864, 3)
    again = fast.generate(request(aspect_ratio="3:4", seed=9), NullHooks())
    assert np.array_equal(result.images[0].pixels, again.images[0].pixels)
    assert any("first-block cache is not supported" in r.message for r in caplog.records)
