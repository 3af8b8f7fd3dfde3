"""Character consistency of an engine: references x prompts x aspect ratios x styles.

Prints, per reference and overall, the share of outputs with a detected face, the share judged
the same character as the reference (dlib descriptor distance < 0.6) and the mean distance.
Built-in references are the faces scikit-image ships (astronaut; cameraman, upscaled); add your
own with `--refs DIR` (every .png/.jpg/.webp in it). Needs the `faces` extra.

    python benchmarks/consistency.py [--refs DIR] [--speed turbo] [--seeds 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data
from tests.support.requests import engine_request

from castframe.catalog.ideogram_params import ASPECT_SIZES
from castframe.engines.base import NullHooks
from castframe.engines.sandbox import SandboxEngine
from castframe.faces import consistency, face_model

PROMPTS = (
    "walking down a city street at night",
    "on a beach at sunset",
    "a knight in a misty forest",
    "poster of a hiker in snowy mountains",
)
STYLES = ("REALISTIC", "DESIGN", "GENERAL", "FICTION")


def references(folder: Path | None) -> dict[str, np.ndarray]:
    camera = cv2.resize(data.camera(), None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    refs = {"astronaut": data.astronaut(), "cameraman": np.stack([camera] * 3, axis=-1)}
    if folder:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                refs[path.name] = np.asarray(Image.open(path).convert("RGB"))
    return refs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refs", type=Path, default=None)
    parser.add_argument("--speed", default="turbo", choices=("turbo", "default", "quality"))
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    model = face_model()
    if model is None:
        raise SystemExit("install the faces extra: pip install 'castframe[faces]'")
    engine = SandboxEngine()
    totals: list[dict[str, object]] = []
    started = time.perf_counter()
    print(f"{'reference':24}{'outputs':>8}{'face':>8}{'same':>8}{'mean dist':>11}")
    for name, reference in references(args.refs).items():
        main_face = model.main_face(reference)
        if main_face is None:
            print(f"{name:24} no face in the reference; skipped")
            continue
        scores = []
        for prompt in PROMPTS:
            for aspect, (width, height) in ASPECT_SIZES.items():
                for style in STYLES:
                    for seed in range(args.seeds):
                        request = engine_request(
                            prompt=prompt,
                            negative_prompt=None,
                            style_type=style,
                            magic_prompt_option="Off",
                            rendering_speed=args.speed,
                            seed=seed,
                            num_images=1,
                            width=width,
                            height=height,
                            aspect_ratio=aspect,
                            reference=reference,
                        )
                        pixels = engine.generate(request, NullHooks()).images[0].pixels
                        scores.append(consistency(main_face.descriptor, model.faces(pixels)))
        totals += scores
        print(summary(name, scores))
    print(summary("all", totals))
    print(f"({time.perf_counter() - started:.0f}s, engine sandbox, speed {args.speed})")


def summary(name: str, scores: list[dict[str, object]]) -> str:
    found = [s for s in scores if s["faceDetected"]]
    same = [s for s in found if s["sameCharacter"]]
    distances = [float(s["distance"]) for s in found if s["distance"] is not None]  # type: ignore[arg-type]
    mean = statistics.mean(distances) if distances else float("nan")
    n = max(len(scores), 1)
    return f"{name:24}{len(scores):>8}{len(found) / n:>8.0%}{len(same) / n:>8.0%}{mean:>11.3f}"


if __name__ == "__main__":
    main()
