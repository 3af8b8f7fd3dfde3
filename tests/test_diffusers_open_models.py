"""Apiframe's open models on the diffusers engine: tiny random-initialised Stable Diffusion 3
and Qwen-Image pipelines built from configs, loaded by the engine's own loading code, run
engine-level (small sizes) and through the whole job path (the API, the worker, storage).

Also: each catalog schema against Apiframe's variant, the weights settings failing at start,
flux-2-dev's licence switch, and the refusals that name the engine.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from castframe.catalog import MODELS
from castframe.catalog.qwen_image import IMAGE_SIZES
from castframe.catalog.stable_diffusion import ASPECT_SIZES, image_to_image_size
from castframe.config import Settings
from castframe.engines.base import EngineInputs, EngineRequest, InputImage, JobCancelled, NullHooks
from castframe.engines.router import Routing, validate_engine_settings
from tests.conftest import Api, make_api
from tests.support.hooks import Recorder
from tests.support.images import astronaut, astronaut_png, data_uri
from tests.support.tiny_pipelines import (
    tiny_flux2_dev,
    tiny_qwen_image,
    tiny_stable_diffusion_3,
)

SD_IDS = [
    "stable-diffusion-3.5-large",
    "stable-diffusion-3.5-large-turbo",
    "stable-diffusion-3.5-medium",
    "stable-diffusion-3",
]
# Apiframe's blocks as its published spec (GenerateImageRequest's variants) writes them.
APIFRAME_SD_FIELDS = {
    "aspect_ratio": {"enum": ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "9:16", "9:21"]},
    "cfg": {"minimum": 0, "maximum": 20},
    "image": {},
    "negative_prompt": {"maxLength": 2000},
    "output_format": {"enum": ["webp", "jpg", "png"]},
    "output_quality": {"minimum": 0, "maximum": 100},
    "prompt_strength": {"minimum": 0, "maximum": 1},
    "seed": {},
    "steps": {"minimum": 1, "maximum": 40},
}
APIFRAME_QWEN_FIELDS = {
    "acceleration": {"enum": ["none", "regular", "high"]},
    "guidance_scale": {"minimum": 0, "maximum": 20},
    "image_size": {
        "enum": [
            "square",
            "square_hd",
            "portrait_4_3",
            "portrait_16_9",
            "landscape_4_3",
            "landscape_16_9",
        ]
    },
    "image_url": {},
    "negative_prompt": {"maxLength": 500},
    "num_images": {"minimum": 1, "maximum": 4},
    "num_inference_steps": {"minimum": 2, "maximum": 250},
    "output_format": {"enum": ["png", "jpeg"]},
    "seed": {},
    "strength": {"minimum": 0, "maximum": 1},
    "task_type": {"enum": ["text-to-image", "image-to-image", "image-edit"]},
}
APIFRAME_FLUX_FIELDS = {
    "aspect_ratio", "go_fast", "guidance", "height", "image_prompt", "image_prompt_strength",
    "input_images", "output_format", "output_quality", "prompt_upsampling", "raw",
    "resolution", "seed", "steps", "width",
}  # fmt: skip


def block_of(model_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = MODELS[model_id].request_model.model_json_schema(by_alias=True)
    node = schema["properties"][MODELS[model_id].params_key]
    name = node["$ref"].rsplit("/", 1)[-1]
    return schema, schema["$defs"][name]


def flat(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in node:
        node = next(item for item in node["anyOf"] if item.get("type") != "null")
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


@pytest.mark.parametrize(
    ("model_id", "fields"),
    [
        *((model_id, APIFRAME_SD_FIELDS) for model_id in SD_IDS),
        ("qwen-image", APIFRAME_QWEN_FIELDS),
        ("flux-2-dev", {name: {} for name in APIFRAME_FLUX_FIELDS}),
    ],
)
def test_schemas_are_apiframes_variants(model_id: str, fields: dict[str, Any]) -> None:
    schema, block = block_of(model_id)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["model"]["const"] == model_id
    assert set(schema["required"]) == {"prompt", "model"}
    assert block["additionalProperties"] is False
    assert set(block["properties"]) == set(fields)
    for name, expected in fields.items():
        field = flat(schema, block["properties"][name])
        for key, value in expected.items():
            assert field[key] == value, (model_id, name, key)


def test_sizes_follow_the_hosts() -> None:
    for ratio, (width, height) in ASPECT_SIZES.items():
        across, down = (int(part) for part in ratio.split(":"))
        assert width % 64 == 0 and height % 64 == 0
        assert 0.9 < width * height / 1024**2 < 1.1
        assert abs(width / height - across / down) / (across / down) < 0.05
    assert image_to_image_size(512, 512) == (1024, 1024)
    assert image_to_image_size(1920, 1080) == (1344, 768)
    assert IMAGE_SIZES["landscape_16_9"] == (1024, 576)
    sd = MODELS["stable-diffusion-3.5-large-turbo"]
    params = sd.normalise(sd.request_model.model_validate({"prompt": "x", "model": sd.id}))
    assert (params["steps"], params["cfg"], params["output_format"]) == (4, 0.0, "webp")
    qwen = MODELS["qwen-image"]
    body = {"prompt": "x", "model": "qwen-image"}
    params = qwen.normalise(
        qwen.request_model.model_validate(
            {**body, "qwenImageParams": {"acceleration": "high", "num_inference_steps": 30}}
        )
    )
    assert (params["steps"], params["guidance_scale"]) == (8, 2.5)
    assert (params["width"], params["height"], params["task_type"]) == (1024, 768, "text-to-image")


@pytest.mark.parametrize(
    "params",
    [
        {"cfg": True},
        {"cfg": "3"},
        {"steps": 41},
        {"aspect_ratio": "4:3"},
        {"output_format": "jpeg"},
        {"prompt_strength": 1.5},
        {"scheduler": "euler"},
    ],
)
def test_bad_stable_diffusion_params_are_400s(api_no_worker: Api, params: dict[str, Any]) -> None:
    body = {"prompt": "x", "model": "stable-diffusion-3.5-large", "stableDiffusionParams": params}
    assert api_no_worker.generate(api_no_worker.key(), body).status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"task_type": "image-edit"},
        {"task_type": "text-to-image", "image_url": "https://example.com/a.png"},
        {"strength": 0.5},
        {"num_images": 5},
        {"image_size": "portrait_3_4"},
        {"guidance_scale": "2"},
    ],
)
def test_bad_qwen_params_are_400s(api_no_worker: Api, params: dict[str, Any]) -> None:
    body = {"prompt": "x", "model": "qwen-image", "qwenImageParams": params}
    assert api_no_worker.generate(api_no_worker.key(), body).status_code == 400


# -- the engine, on tiny models -----------------------------------------------------------


@pytest.fixture(scope="session")
def sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_stable_diffusion_3(tmp_path_factory.mktemp("models") / "sd3-tiny")


@pytest.fixture(scope="session")
def qwen_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    generate = tiny_qwen_image(tmp_path_factory.mktemp("models") / "qwen-image-tiny")
    return generate, generate.parent / "edit"


@pytest.fixture(scope="session")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_flux2_dev(tmp_path_factory.mktemp("models") / "flux2-dev-tiny")


@pytest.fixture(scope="session")
def open_engine(sd3_dir: Path, qwen_dirs: tuple[Path, Path], flux_dir: Path) -> Any:
    from castframe.engines.open_weights.engine import OpenWeightsEngine

    return OpenWeightsEngine(
        {
            "stable-diffusion-3.5-large": sd3_dir,
            "stable-diffusion-3.5-large-turbo": sd3_dir,
            "qwen-image": qwen_dirs[0],
            "qwen-image:edit": qwen_dirs[1],
            "flux-2-dev": flux_dir,
        },
        "cpu",
        flux_2_dev=True,
    )


def open_request(
    body: dict[str, Any],
    image: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 7,
    references: tuple[np.ndarray, ...] = (),
) -> EngineRequest:
    """The engine request the worker builds for ``body`` (its catalog params), at ``size``
    instead of the model's size when given (small sizes keep CPU tests quick)."""
    spec = MODELS[body["model"]]
    params = spec.normalise(spec.request_model.model_validate(body))
    width, height = size or (params["width"], params["height"])
    return EngineRequest(
        model=spec.id,
        prompt=params["prompt"],
        negative_prompt=params["negative_prompt"],
        seed=params["seed"] if params["seed"] is not None else seed,
        num_images=params["num_images"],
        width=width,
        height=height,
        inputs=EngineInputs(
            image=InputImage(image) if image is not None else None,
            references=tuple(InputImage(item) for item in references),
        ),
        params={**params, "width": width, "height": height},
    )


def sd_body(model: str = "stable-diffusion-3.5-large", **params: Any) -> dict[str, Any]:
    return {"prompt": "a red fox in snow", "model": model, "stableDiffusionParams": params}


def qwen_body(**params: Any) -> dict[str, Any]:
    return {"prompt": "a shop sign", "model": "qwen-image", "qwenImageParams": params}


def test_sd3_text_to_image_sizes_steps_and_seeds(open_engine: Any) -> None:
    recorder = Recorder()
    request = open_request(sd_body(steps=3, cfg=4.5, negative_prompt="blur"), size=(128, 64))
    first = open_engine.generate(request, recorder)
    assert first.images[0].pixels.shape == (64, 128, 3)
    assert first.metadata["pipeline"] == "StableDiffusion3Pipeline"
    assert (first.metadata["steps"], first.metadata["cfg"]) == (3, 4.5)
    assert len(recorder.values) == 3 and recorder.values[-1] == 95
    again = open_engine.generate(request, NullHooks()).images[0].pixels
    assert np.array_equal(first.images[0].pixels, again)
    other = open_request(sd_body(steps=3, cfg=4.5, seed=8), size=(128, 64))
    assert not np.array_equal(open_engine.generate(other, NullHooks()).images[0].pixels, again)
    turbo = open_engine.generate(
        open_request(sd_body("stable-diffusion-3.5-large-turbo"), size=(64, 64)), Recorder()
    )
    assert (turbo.metadata["steps"], turbo.metadata["cfg"]) == (4, 0.0)


def test_sd3_image_to_image_keeps_proportions_and_strength(open_engine: Any) -> None:
    photo = np.asarray(Image.fromarray(astronaut()).resize((160, 96)))
    recorder = Recorder()
    body = sd_body(image="upload://photo", prompt_strength=0.5, steps=4)
    result = open_engine.generate(open_request(body, image=photo), recorder)
    assert result.metadata["pipeline"] == "StableDiffusion3Img2ImgPipeline"
    assert result.images[0].pixels.shape[:2][::-1] == image_to_image_size(160, 96)
    assert len(recorder.values) == 2  # half of 4 steps repaint
    untouched = open_request(sd_body(image="upload://photo", prompt_strength=0), image=photo)
    kept = open_engine.generate(untouched, NullHooks()).images[0].pixels
    expected = np.asarray(
        Image.fromarray(photo).resize(image_to_image_size(160, 96), Image.Resampling.LANCZOS)
    )
    assert np.array_equal(kept, expected)


def test_qwen_tasks_sizes_counts_and_guidance(open_engine: Any) -> None:
    body = qwen_body(image_size="square", num_images=2, num_inference_steps=4, seed=3)
    two = open_engine.generate(open_request(body, size=(64, 64)), Recorder())
    assert [image.seed for image in two.images] == [3, 4]
    assert all(image.pixels.shape == (64, 64, 3) for image in two.images)
    assert two.metadata["trueCfgScale"] == 2.5
    one = open_engine.generate(
        open_request(qwen_body(num_inference_steps=4, seed=3), size=(64, 64)), NullHooks()
    )
    assert np.array_equal(one.images[0].pixels, two.images[0].pixels)
    fast = Recorder()
    open_engine.generate(
        open_request(qwen_body(num_inference_steps=8, acceleration="regular"), size=(32, 32)),
        fast,
    )
    assert len(fast.values) == 4
    photo = np.asarray(Image.fromarray(astronaut()).resize((96, 64)))
    img2img = open_engine.generate(
        open_request(
            qwen_body(image_url="upload://p", image_size="square", num_inference_steps=4),
            image=photo,
            size=(64, 64),
        ),
        NullHooks(),
    )
    assert img2img.metadata["pipeline"] == "QwenImageImg2ImgPipeline"
    assert img2img.images[0].pixels.shape == (64, 64, 3)
    edit = open_engine.generate(
        open_request(
            qwen_body(image_url="upload://p", task_type="image-edit", num_inference_steps=2),
            image=photo,
            size=(64, 64),
        ),
        NullHooks(),
    )
    assert edit.metadata["pipeline"] == "QwenImageEditPlusPipeline"
    assert edit.images[0].pixels.shape[2] == 3


def flux_body(**params: Any) -> dict[str, Any]:
    return {"prompt": "a lighthouse", "model": "flux-2-dev", "fluxParams": params}


def test_flux_2_dev_sizes_references_and_seeds(open_engine: Any, flux_dir: Path) -> None:
    recorder = Recorder()
    body = flux_body(steps=3, guidance=2.5, seed=5)
    first = open_engine.generate(open_request(body, size=(128, 96)), recorder)
    assert first.images[0].pixels.shape == (96, 128, 3)
    assert (first.metadata["steps"], first.metadata["guidance"]) == (3, 2.5)
    assert len(recorder.values) == 3
    again = open_engine.generate(open_request(body, size=(128, 96)), NullHooks()).images[0]
    assert np.array_equal(first.images[0].pixels, again.pixels)
    photo = np.asarray(Image.fromarray(astronaut()).resize((384, 288)))
    matched = open_engine.generate(
        open_request(
            flux_body(input_images=["upload://a"], resolution="match_input_image", steps=2, seed=5),
            references=(photo,),
        ),
        NullHooks(),
    )
    assert matched.images[0].pixels.shape == (288, 384, 3)
    assert matched.metadata["references"] == 1
    quick = Recorder()
    open_engine.generate(open_request(flux_body(go_fast=True), size=(64, 64)), quick)
    assert len(quick.values) == 14  # half of the default 28 steps
    from castframe.engines.open_weights.engine import OpenWeightsEngine

    off = OpenWeightsEngine({"flux-2-dev": flux_dir}, "cpu")
    assert off.models == []  # weights present, licence switch off: never loaded


def test_cancel_between_steps_and_unheld_models(open_engine: Any) -> None:
    stopper = Recorder(cancel_after=1)
    with pytest.raises(JobCancelled):
        open_engine.generate(open_request(sd_body(steps=6), size=(64, 64)), stopper)
    assert len(stopper.values) < 6
    from castframe.errors import JobFailure

    with pytest.raises(JobFailure, match="holds no weights for stable-diffusion-3"):
        open_engine.generate(
            open_request(sd_body("stable-diffusion-3"), size=(64, 64)), NullHooks()
        )


# -- settings: weights checked at start, the licence switch, refusals ----------------------


def fake_weights(path: Path, class_name: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return path


def test_weights_fail_at_start_with_clear_messages(tmp_path: Path, sd3_dir: Path) -> None:
    def start(models: dict[str, str], **more: Any) -> None:
        validate_engine_settings(Settings(diffusers_models=models, **more))

    with pytest.raises(ValueError, match=r"weights directory of qwen-image .* does not exist"):
        start({"qwen-image": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match=r"qwen-image needs QwenImagePipeline weights, but .* "):
        start({"qwen-image": str(sd3_dir)})
    with pytest.raises(ValueError, match="has no model 'sdxl'"):
        start({"sdxl": str(sd3_dir)})
    with pytest.raises(ValueError, match="castframe weights download qwen-image --repo"):
        start({"qwen-image": "castframe-tests/never-downloaded"})
    with pytest.raises(ValueError, match=r"no model_index\.json"):
        start({"stable-diffusion-3": str(tmp_path)})
    with pytest.raises(ValueError, match=r"CASTFRAME_DIFFUSERS_MODELS\['stable-diffusion-3'\]"):
        start({"qwen-image": str(fake_weights(tmp_path / "q", "QwenImagePipeline"))},
              routes="stable-diffusion-3=diffusers")  # fmt: skip
    start({"stable-diffusion-3": str(sd3_dir)})


def test_flux_2_dev_is_served_only_when_turned_on(tmp_path: Path) -> None:
    weights = {"flux-2-dev": str(fake_weights(tmp_path / "dev", "Flux2Pipeline"))}
    off = Settings(diffusers_models=weights)
    validate_engine_settings(off)
    assert Routing(off).served()["flux-2-dev"] == "sandbox"
    assert "Non-Commercial" in Routing(off).notices()["flux-2-dev"]
    with pytest.raises(ValueError, match="CASTFRAME_DIFFUSERS_FLUX_2_DEV is off"):
        validate_engine_settings(Settings(diffusers_models=weights, routes="flux-2-dev=diffusers"))
    on = Settings(diffusers_models=weights, diffusers_flux_2_dev=True)
    assert Routing(on).served()["flux-2-dev"] == "diffusers"
    assert Routing(on).notices() == {}
    assert "Non-Commercial" in Settings.model_fields["diffusers_flux_2_dev"].description  # type: ignore[operator]


def test_models_lists_the_gate_and_refusals_name_the_engine(
    tmp_path: Path, sqlite_url: str
) -> None:
    dev = fake_weights(tmp_path / "dev", "Flux2Pipeline")
    qwen = fake_weights(tmp_path / "qwen", "QwenImagePipeline")
    sd = fake_weights(tmp_path / "sd", "StableDiffusion3Pipeline")
    models = {"flux-2-dev": str(dev), "qwen-image": str(qwen), "stable-diffusion-3": str(sd)}
    with contextlib_api(tmp_path / "off", sqlite_url, diffusers_models=models) as api:
        entry = api.client.get("/v2/models/flux-2-dev").json()
        assert entry["engine"] == "sandbox" and "Non-Commercial" in entry["engineNotice"]
    with contextlib_api(
        tmp_path / "on", sqlite_url, diffusers_models=models, diffusers_flux_2_dev=True
    ) as api:
        assert api.client.get("/v2/models/flux-2-dev").json()["engine"] == "diffusers"
        key = api.key()
        for body, field in [
            ({"model": "flux-2-dev", "fluxParams": {"raw": True}}, "fluxParams.raw"),
            (
                {"model": "flux-2-dev", "fluxParams": {"image_prompt_strength": 0.3}},
                "fluxParams.image_prompt_strength",
            ),
            (
                {"model": "qwen-image", "qwenImageParams": {"task_type": "image-edit",
                 "image_url": "https://example.com/a.png"}},
                "qwenImageParams.task_type",
            ),
            (
                {"model": "stable-diffusion-3", "stableDiffusionParams": {"cfg": 1,
                 "negative_prompt": "blur"}},
                "stableDiffusionParams.negative_prompt",
            ),
        ]:  # fmt: skip
            response = api.generate(key, {"prompt": "x", **body})
            assert response.status_code == 400, response.text
            assert field in response.text and "diffusers engine" in response.text
        # The sandbox (test keys) honours them all.
        test_key = api.key(mode="test")
        response = api.generate(test_key, {"prompt": "x", "model": "flux-2-dev",
                                           "fluxParams": {"raw": True}})  # fmt: skip
        assert response.status_code == 202, response.text


def contextlib_api(tmp_path: Path, url: str, **settings: Any) -> Any:
    from tests.conftest import open_api

    return open_api(tmp_path, url, run_worker=False, **settings)


# -- the whole job path ----------------------------------------------------------------------


@pytest.fixture
def open_api_live(
    tmp_path: Path, sqlite_url: str, sd3_dir: Path, qwen_dirs: tuple[Path, Path], flux_dir: Path
) -> Iterator[Api]:
    yield from make_api(
        tmp_path,
        sqlite_url,
        diffusers_models={
            "stable-diffusion-3.5-large": str(sd3_dir),
            "qwen-image": str(qwen_dirs[0]),
            "flux-2-dev": str(flux_dir),
        },
        diffusers_flux_2_dev=True,
        diffusers_device="cpu",
        faces_enabled=False,
    )


def test_programs_get_completed_jobs_from_diffusers_and_the_sandbox(open_api_live: Api) -> None:
    api = open_api_live
    live, test = api.key(), api.key(mode="test")
    bodies = [
        (sd_body(aspect_ratio="21:9", steps=2, seed=4, output_format="png"), (1536, 640), "png"),
        (qwen_body(image_size="square", num_inference_steps=2, num_images=2), (512, 512), "png"),
        (
            qwen_body(image_url=data_uri(astronaut_png()), image_size="landscape_16_9",
                      num_inference_steps=2, strength=1.0),
            (1024, 576),
            "png",
        ),
        (flux_body(aspect_ratio="16:9", resolution="0.5MP", steps=2), (960, 544), "jpeg"),
        (sd_body("stable-diffusion-3.5-medium", aspect_ratio="9:16"), (768, 1344), "webp"),
    ]  # fmt: skip
    for body, size, kind in bodies:
        served_live = body["model"] != "stable-diffusion-3.5-medium"
        for key in (live, test) if served_live else (test,):
            job = api.submit_and_wait(key, body)
            assert job["status"] == "COMPLETED", job
            assert job["engine"] == ("diffusers" if key == live else "sandbox")
            for url in job["result"]["images"]:
                image = Image.open(io.BytesIO(api.file(url)))
                assert image.size == size and image.format.lower() == kind


def test_weights_download_fetches_once_and_checks_the_family(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command asks the hub client for the official repository (stubbed: no network in
    tests) and refuses weights of another family."""
    import huggingface_hub
    from typer.testing import CliRunner

    from castframe.cli import app

    asked: list[tuple[str, str | None]] = []

    def snapshot(repo: str, local_dir: str | None = None) -> str:
        asked.append((repo, local_dir))
        kind = "QwenImagePipeline" if repo == "Qwen/Qwen-Image" else "FluxPipeline"
        return str(fake_weights(Path(local_dir or tmp_path / "cache" / repo), kind))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    runner = CliRunner()
    result = runner.invoke(app, ["weights", "download", "qwen-image", "--to", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert asked == [("Qwen/Qwen-Image", str(tmp_path / "q"))]
    assert '{"qwen-image": "' + str(tmp_path / "q") + '"}' in result.output
    assert "Apache-2.0" in result.output
    wrong = runner.invoke(app, ["weights", "download", "qwen-image", "--repo", "someone/flux"])
    assert wrong.exit_code != 0 and "needs QwenImagePipeline" in wrong.output
    unknown = runner.invoke(app, ["weights", "download", "sdxl"])
    assert unknown.exit_code != 0 and "no model 'sdxl'" in unknown.output
