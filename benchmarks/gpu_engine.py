"""Speed of the diffusers engine's models at real size: seconds per 1024x1024 image.

Builds the real architecture from its config files with random bf16 weights (timings are
honest, pictures are noise), on the GPU, and prints per rendering speed (turbo/default/quality)
the seconds per image, cold start (build + first call) and peak GPU memory, with and without
each speed-up (regional torch.compile, channels_last VAE, first-block cache where supported).

    python benchmarks/gpu_engine.py --configs DIR     # DIR: a pipeline's folder of configs
    python benchmarks/gpu_engine.py --tiny [qwen-image-edit]   # CPU smoke run, tiny test model
    python benchmarks/gpu_engine.py --open stable-diffusion-3.5-large --configs DIR
    python benchmarks/gpu_engine.py --open qwen-image --tiny   # CPU smoke run of an open model

``--open MODEL`` times one of Apiframe's open models (stable-diffusion-3.5-large, -large-turbo,
-medium, stable-diffusion-3, qwen-image, flux-2-dev) the way the engine runs it: its catalog
defaults (steps, guidance) at 1024x1024, built in memory from DIR's configs (configs and
tokenizers of stabilityai/stable-diffusion-3.5-large, Qwen/Qwen-Image or
black-forest-labs/FLUX.2-dev) with random bf16 weights, and prints seconds per image and peak
GPU memory. FLUX.2 [dev] in bf16 (a 32B transformer and a 24B text encoder) needs more than an
80 GB H100: run it on an H200. Not yet run on a GPU: the numbers belong in docs/performance.md
once measured.

DIR is what `huggingface-cli download <repo> --include "*.json" "tokenizer/*"` gives for
black-forest-labs/FLUX.2-klein-4B or Qwen/Qwen-Image-Edit-2511: configs only, no weights. Real
weights are never needed for timing. With no GPU this prints what it would measure and exits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def random_pipeline(configs: Path, device: str, dtype: torch.dtype) -> Any:
    """Every component built from its config (no weights read), moved to ``device``."""
    import json

    import diffusers
    import transformers

    index = json.loads((configs / "model_index.json").read_text())
    parts: dict[str, Any] = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        library, class_name = spec
        folder = configs / name
        if class_name is None:  # an optional component the pipeline was saved without
            parts[name] = None
        elif name == "scheduler":
            parts[name] = getattr(diffusers, class_name).from_pretrained(folder)
        elif name.startswith(("tokenizer", "processor")) or "Processor" in class_name:
            parts[name] = getattr(transformers, class_name).from_pretrained(folder)
        elif library == "transformers":
            config = transformers.AutoConfig.from_pretrained(folder)
            with torch.device(device):
                parts[name] = getattr(transformers, class_name)._from_config(
                    config, torch_dtype=dtype
                )
        else:
            model_class = getattr(diffusers, class_name)
            with torch.device(device):
                parts[name] = model_class.from_config(model_class.load_config(folder)).to(dtype)
    pipeline_class = getattr(diffusers, index["_class_name"])
    extra = {k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)}
    return pipeline_class(**parts, **extra)


def measure(engine: Any, speed: str, runs: int, size: int, images: int = 1) -> float:
    """Median seconds per image over ``runs`` jobs of ``images`` images each."""
    from skimage import data
    from tests.support.requests import engine_request

    from castframe.engines.base import NullHooks

    times = []
    for seed in range(runs):
        request = engine_request(
            prompt="a knight in a misty forest",
            negative_prompt=None,
            style_type="AUTO",
            magic_prompt_option="Off",
            rendering_speed=speed,
            seed=seed,
            num_images=images,
            width=size,
            height=size,
            aspect_ratio="1:1",
            reference=data.astronaut(),
        )
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        engine.generate(request, NullHooks())
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) / images)
    return statistics.median(times)


OPEN_BODIES: dict[str, dict[str, Any]] = {
    "stable-diffusion-3.5-large": {"stableDiffusionParams": {"aspect_ratio": "1:1"}},
    "stable-diffusion-3.5-large-turbo": {"stableDiffusionParams": {"aspect_ratio": "1:1"}},
    "stable-diffusion-3.5-medium": {"stableDiffusionParams": {"aspect_ratio": "1:1"}},
    "stable-diffusion-3": {"stableDiffusionParams": {"aspect_ratio": "1:1"}},
    "qwen-image": {"qwenImageParams": {"image_size": "square_hd"}},
    "flux-2-dev": {"fluxParams": {"width": 1024, "height": 1024}},
}
"""Each open model's request at 1024x1024 with its catalog defaults."""


def open_request(model_id: str, seed: int, size: int) -> Any:
    """The engine request the worker builds for the model's 1024² body (``size`` instead
    for smoke runs)."""
    from castframe.catalog import MODELS
    from castframe.engines.base import EngineRequest

    spec = MODELS[model_id]
    body = {"prompt": "a knight in a misty forest", "model": model_id, **OPEN_BODIES[model_id]}
    params = spec.normalise(spec.request_model.model_validate(body))
    return EngineRequest(
        model=model_id,
        prompt=params["prompt"],
        negative_prompt=None,
        seed=seed,
        num_images=1,
        width=size,
        height=size,
        params={**params, "width": size, "height": size},
    )


def open_runner(model_id: str, pipeline: Any, device: str) -> Any:
    from castframe.engines.open_weights import flux2_dev, qwen_image, sd3

    if model_id.startswith("stable-diffusion-3"):
        return sd3.StableDiffusion3Runner(pipeline, device)
    if model_id == "qwen-image":
        return qwen_image.QwenImageRunner(pipeline, device)
    return flux2_dev.Flux2DevRunner(pipeline, device)


def bench_open(model_id: str, configs: Path | None, tiny: bool, runs: int) -> None:
    """Seconds per image, cold start and peak memory of one open model on the engine."""
    from castframe.engines.base import NullHooks
    from castframe.engines.open_weights import runs as run_helpers
    from castframe.engines.open_weights.engine import OpenWeightsEngine

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    started = time.perf_counter()
    if tiny:
        from tests.support import tiny_pipelines

        with tempfile.TemporaryDirectory() as tmp:
            if model_id == "qwen-image":
                model_dir = tiny_pipelines.tiny_qwen_image(Path(tmp) / "tiny")
                pipeline = run_helpers.load("QwenImagePipeline", model_dir, device)
            elif model_id.startswith("stable-diffusion-3"):
                model_dir = tiny_pipelines.tiny_stable_diffusion_3(Path(tmp) / "tiny")
                pipeline = run_helpers.load("StableDiffusion3Pipeline", model_dir, device)
            else:
                raise SystemExit(f"no tiny test model of {model_id} (no offline Mistral-3)")
    else:
        if not cuda:
            print("no CUDA device: real-size timings need a GPU. Use --tiny for a CPU smoke run.")
            return
        if configs is None:
            raise SystemExit("--configs DIR is required for real-size timings")
        torch.cuda.reset_peak_memory_stats()
        pipeline = random_pipeline(configs, "cuda", torch.bfloat16)
        pipeline.set_progress_bar_config(disable=True)
    engine = OpenWeightsEngine.with_runners(
        {model_id: open_runner(model_id, pipeline, device)}, device
    )
    size = 64 if tiny else 1024
    engine.generate(open_request(model_id, 0, size), NullHooks())
    cold = time.perf_counter() - started
    times = []
    for seed in range(runs):
        if cuda:
            torch.cuda.synchronize()
        begun = time.perf_counter()
        result = engine.generate(open_request(model_id, seed + 1, size), NullHooks())
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begun)
    peak = f" | peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
    print(
        f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}; {model_id} "
        f"({'tiny test model' if tiny else configs}), {size}x{size}, "
        f"{result.metadata.get('steps')} steps: {statistics.median(times):.2f}s per image, "
        f"cold {cold:.1f}s{peak}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", choices=list(OPEN_BODIES), help="time an open model")
    parser.add_argument("--configs", type=Path)
    parser.add_argument(
        "--tiny",
        nargs="?",
        const="flux2-klein",
        choices=["flux2-klein", "qwen-image-edit"],
        help="smoke run on the CPU with a tiny test model of this family",
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.open:
        bench_open(args.open, args.configs, bool(args.tiny), args.runs)
        return
    from castframe.engines.open_weights.engine import DiffusersEngine, SpeedUps

    cuda = torch.cuda.is_available()
    if not args.tiny and not cuda:
        print("no CUDA device: real-size timings need a GPU. Use --tiny for a CPU smoke run.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from tests.support import tiny_pipelines

            build = (
                tiny_pipelines.tiny_flux2_klein
                if args.tiny == "flux2-klein"
                else tiny_pipelines.tiny_qwen_image_edit
            )
            model_dir = build(Path(tmp) / "tiny")
        else:
            if not args.configs:
                raise SystemExit("--configs DIR is required for real-size timings")
            started = time.perf_counter()
            pipeline = random_pipeline(args.configs, "cuda", torch.bfloat16)
            model_dir = Path(tmp) / "random"
            pipeline.save_pretrained(model_dir)
            del pipeline
            print(f"built random weights in {time.perf_counter() - started:.1f}s")
        device = "cuda" if cuda else "cpu"
        print(
            f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}; model: "
            f"{f'tiny {args.tiny} test model' if args.tiny else args.configs}"
        )
        size = 256 if args.tiny else 1024
        baseline: dict[str, float] = {}
        for label, speedups in (
            ("eager", SpeedUps()),
            ("channels_last VAE", SpeedUps(channels_last_vae=True)),
            ("first-block cache", SpeedUps(first_block_cache=True)),
            ("regional compile", SpeedUps(compile=True)),
            ("batched images x4", SpeedUps(batch_images=True)),
        ):
            images = 4 if speedups.batch_images else 1
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            engine = DiffusersEngine(str(model_dir), device=device, speedups=speedups)
            cold = measure(engine, "turbo", 1, size) + (time.perf_counter() - started)
            row = []
            for speed in ("turbo", "default", "quality"):
                seconds = measure(engine, speed, args.runs, size, images)
                ratio = seconds / baseline[speed] if speed in baseline else 1.0
                baseline.setdefault(speed, seconds)
                row.append(f"{speed} {seconds:6.2f}s (x{ratio:.2f})")
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            print(
                f"{label:18} cold {cold:6.1f}s | "
                + " | ".join(row)
                + (f" | peak {peak:.1f} GiB" if cuda else "")
            )
            del engine


if __name__ == "__main__":
    main()
