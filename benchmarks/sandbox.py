"""Sandbox engine timings per aspect ratio and rendering speed, on one core.

Prints seconds per image (median of N runs) and the ratio of each speed to `default` measured
in the same run, so results compare across noisy machines. Run: `make bench`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
from skimage import data
from tests.support.requests import engine_request

from castframe.catalog.ideogram_params import ASPECT_SIZES
from castframe.engines.base import NullHooks
from castframe.engines.sandbox import SandboxEngine

STYLES = ("REALISTIC", "DESIGN", "GENERAL", "FICTION")


def time_one(engine: SandboxEngine, aspect: str, speed: str, style: str, seed: int) -> float:
    width, height = ASPECT_SIZES[aspect]
    request = engine_request(
        prompt="a woman walking down a city street at night in the rain",
        negative_prompt=None,
        style_type=style,
        magic_prompt_option="Off",
        rendering_speed=speed,
        seed=seed,
        num_images=1,
        width=width,
        height=height,
        aspect_ratio=aspect,
        reference=data.astronaut(),
    )
    started = time.perf_counter()
    engine.generate(request, NullHooks())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    engine = SandboxEngine()
    time_one(engine, "1:1", "default", "REALISTIC", 0)  # warm caches (cascade, cut-out)
    print(f"sandbox engine, one core, median of {args.runs} runs, seconds per image")
    print(f"{'aspect':8}" + "".join(f"{s:>10}" for s in ("turbo", "default", "quality")))
    medians: dict[str, list[float]] = {"turbo": [], "default": [], "quality": []}
    for aspect in ASPECT_SIZES:
        row = f"{aspect:8}"
        for speed in medians:
            runs = [time_one(engine, aspect, speed, "REALISTIC", seed) for seed in range(args.runs)]
            median = statistics.median(runs)
            medians[speed].append(median)
            row += f"{median:10.3f}"
        print(row)
    base = statistics.mean(medians["default"])
    print(
        "ratio to default: "
        + ", ".join(
            f"{speed} {statistics.mean(values) / base:.2f}" for speed, values in medians.items()
        )
    )
    print("\ncold start per reference (face detection + GrabCut cut-out, cached afterwards):")
    from castframe.engines.sandbox.engine import SPEEDS
    from castframe.engines.sandbox.subject import extract_subject

    for speed, profile in SPEEDS.items():
        started = time.perf_counter()
        extract_subject(data.astronaut(), profile.grabcut_iterations, profile.grabcut_side)
        print(f"  {speed:8} {time.perf_counter() - started:.3f}s")
    print("\nby style at 1:1, default speed:")
    for style in STYLES:
        runs = [time_one(engine, "1:1", "default", style, seed) for seed in range(args.runs)]
        print(f"  {style:10} {statistics.median(runs):.3f}s")


if __name__ == "__main__":
    main()
