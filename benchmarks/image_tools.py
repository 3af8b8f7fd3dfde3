"""The image tools on this CPU: seconds per megapixel and quality, each real model next to its
classical baseline, measured in the same run.

- Background removal: the bundled U²-Net-P (ONNX Runtime) against the sandbox's GrabCut
  cut-out, on scikit-image's astronaut, chelsea and coffee; quality is the share of
  hand-labelled subject and background pixels each gets right (tests/support/photos.py).
  Seconds per megapixel of input.
- Upscaling x4: Real-ESRGAN x4plus (ncnn, CPU) against Lanczos and bicubic, on crops of the
  same photos downscaled by 4 and upscaled back; quality as PSNR, SSIM and the
  gradient-distribution distance (tests/support/quality.py; lower is better). Seconds per
  megapixel of output.

Run: `python benchmarks/image_tools.py` (about two minutes on 2 cores); docs/performance.md
keeps a record.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
from tests.support.photos import PHOTOS, photo, score_cutout
from tests.support.quality import gradient_distance, psnr, ssim

from castframe.engines.sandbox.tools import grabcut_matte, lanczos_upscale
from castframe.engines.tools.matting import OnnxMatting, bundled_u2netp, u2netp_model
from castframe.engines.tools.superres import RealEsrganCpu

CROPS = {
    "astronaut": (0, 0, 256, 256),
    "chelsea": (40, 100, 232, 292),
    "coffee": (60, 160, 252, 352),
}


def timed(function: Callable[[], np.ndarray], repeat: int) -> tuple[np.ndarray, float]:
    """The result and the median seconds of ``repeat`` runs (after one warm-up run)."""
    result = function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def background_removal(repeat: int) -> None:
    path = bundled_u2netp()
    assert path is not None, "install castframe[tools]"
    model = OnnxMatting(u2netp_model(path))
    print(
        "background removal: s/MP of input, labelled-pixel accuracy (subject kept, background removed)"
    )
    for labelled in PHOTOS:
        rgb = np.asarray(labelled.pixels())
        megapixels = rgb.shape[0] * rgb.shape[1] / 1e6
        for name, run in (("U2-Net-P", model.matte), ("GrabCut", grabcut_matte)):
            matte, seconds = timed(partial(run, rgb), repeat)
            score = score_cutout(labelled, matte)
            print(
                f"  {labelled.name:9} {name:9} {seconds / megapixels:7.2f} s/MP  "
                f"accuracy {score.accuracy:.4f} (subject {score.subject_kept:.4f}, "
                f"background {score.background_removed:.4f})"
            )


def upscaling(repeat: int) -> None:
    model = RealEsrganCpu()
    print("upscale x4: s/MP of output; PSNR dB, SSIM, gradient distance (lower is better)")
    for name, (top, left, bottom, right) in CROPS.items():
        original = np.ascontiguousarray(photo(name)[top:bottom, left:right])
        height, width = original.shape[:2]
        small = cv2.resize(original, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
        megapixels = height * width / 1e6
        candidates: list[tuple[str, Callable[[], np.ndarray]]] = [
            ("Real-ESRGAN", partial(model.upscale, small, 4)),
            ("Lanczos", partial(lanczos_upscale, small, 4)),
            ("bicubic", partial(cv2.resize, small, (width, height), interpolation=cv2.INTER_CUBIC)),
        ]
        for label, run in candidates:
            out, seconds = timed(run, repeat)
            print(
                f"  {name:9} {label:11} {seconds / megapixels:9.3f} s/MP  PSNR {psnr(original, out):5.2f}  "
                f"SSIM {ssim(original, out):.3f}  gradient {gradient_distance(original, out):.4f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    background_removal(args.repeat)
    upscaling(args.repeat)


if __name__ == "__main__":
    main()
