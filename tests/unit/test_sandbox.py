"""The sandbox engine, called directly: every parameter changes the picture as documented."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from castframe.catalog.ideogram_params import ASPECT_SIZES
from castframe.engines.base import JobCancelled, NullHooks
from castframe.engines.prompt import expand_prompt
from castframe.engines.sandbox import SandboxEngine
from castframe.engines.sandbox.scene import parse_scene
from castframe.engines.sandbox.style import resolve_style
from castframe.engines.sandbox.subject import detect_face, extract_subject
from castframe.media.images import encode_png
from tests.support.hooks import Recorder
from tests.support.images import astronaut, edit_pair, no_face_image
from tests.support.requests import engine_request

ENGINE = SandboxEngine()


request = engine_request


def render(**overrides: Any) -> np.ndarray:
    return ENGINE.generate(request(**overrides), NullHooks()).images[0].pixels


def test_face_found_in_real_photo_and_not_in_gradient() -> None:
    face = detect_face(astronaut())
    assert face is not None
    x, y, w, h = face
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 200  # the astronaut's face
    assert detect_face(no_face_image()) is None


def test_cutout_keeps_the_subject_and_drops_the_background() -> None:
    cut = extract_subject(astronaut(), iterations=3, work_side=320)
    assert cut.method == "grabcut"
    assert cut.touches_bottom
    fx, fy, fw, fh = cut.face or (0, 0, 0, 0)
    assert cut.alpha[fy + fh // 2, fx + fw // 2] > 0.9  # face centre is foreground
    assert cut.alpha[2, 2] < 0.1 and cut.alpha[2, -3] < 0.1  # top corners are background
    assert 0.15 < float(cut.alpha.mean()) < 0.9


def test_reference_without_face_uses_soft_ellipse() -> None:
    cut = extract_subject(no_face_image(), iterations=1, work_side=200)
    assert cut.method == "ellipse"
    assert cut.face is None
    job = ENGINE.generate(request(reference=no_face_image()), NullHooks())
    assert job.images[0].pixels.shape == (1024, 1024, 3)


@pytest.mark.parametrize("aspect", list(ASPECT_SIZES))
def test_every_aspect_ratio_has_its_exact_size(aspect: str) -> None:
    width, height = ASPECT_SIZES[aspect]
    assert render(aspect_ratio=aspect).shape == (height, width, 3)


@pytest.mark.parametrize("speed", ["turbo", "default", "quality"])
def test_every_speed_keeps_size(speed: str) -> None:
    assert render(rendering_speed=speed).shape == (1024, 1024, 3)


def test_same_seed_gives_identical_png_bytes() -> None:
    first = encode_png(render(seed=1234, rendering_speed="default"))
    second = encode_png(
        SandboxEngine()
        .generate(request(seed=1234, rendering_speed="default"), NullHooks())
        .images[0]
        .pixels
    )
    assert first == second


def test_different_seeds_give_different_layouts() -> None:
    a, b = render(seed=1), render(seed=2)
    assert a.shape == b.shape
    assert float(np.abs(a.astype(int) - b.astype(int)).mean()) > 10


def test_num_images_gives_distinct_variations_with_consecutive_seeds() -> None:
    result = ENGINE.generate(request(num_images=3, seed=100), NullHooks())
    assert [image.seed for image in result.images] == [100, 101, 102]
    a, b, c = (image.pixels.astype(int) for image in result.images)
    assert np.abs(a - b).mean() > 5 and np.abs(b - c).mean() > 5


@pytest.mark.parametrize("style", ["REALISTIC", "DESIGN", "GENERAL", "FICTION"])
def test_styles_differ_from_each_other(style: str) -> None:
    base = render(style_type="REALISTIC" if style != "REALISTIC" else "DESIGN")
    assert np.abs(render(style_type=style).astype(int) - base.astype(int)).mean() > 3


def test_design_style_is_flat_with_few_colours() -> None:
    design = render(style_type="DESIGN", rendering_speed="turbo")
    realistic = render(style_type="REALISTIC", rendering_speed="turbo")

    def colours(img: np.ndarray) -> int:
        return len(np.unique(img[::4, ::4].reshape(-1, 3) // 8, axis=0))

    assert colours(design) < colours(realistic) / 2


def test_auto_style_follows_the_prompt() -> None:
    assert resolve_style("AUTO", "a vintage poster of a hiker") == "DESIGN"
    assert resolve_style("AUTO", "a knight fighting a dragon") == "FICTION"
    assert resolve_style("AUTO", "an oil painting of a harbour") == "GENERAL"
    assert resolve_style("AUTO", "a candid photo at the beach") == "REALISTIC"
    assert resolve_style("FICTION", "a candid photo") == "FICTION"


@pytest.mark.parametrize(
    ("prompt", "setting", "time"),
    [
        ("walking down a city street at night", "city", "night"),
        ("a dark alley with neon signs", "alley", "night"),
        ("relaxing on the beach at sunset", "beach", "sunset"),
        ("hiking in a misty forest in the morning", "forest", "morning"),
        ("standing before snowy mountains at golden hour", "mountains", "golden_hour"),
        ("crossing the desert dunes at noon", "desert", "noon"),
        ("floating in space near a planet", "space", "night"),
        ("reading in a cozy cafe", "interior", "noon"),
        ("a headshot in the studio", "studio", "noon"),
        ("exploring the arctic tundra", "snow", None),
    ],
)
def test_prompt_words_choose_the_scene(prompt: str, setting: str, time: str | None) -> None:
    spec = parse_scene(prompt, None, seed=1)
    assert spec.setting == setting
    if time:
        assert spec.time == time


def test_unknown_prompts_still_get_a_deterministic_scene() -> None:
    a = parse_scene("zxqv blorp", None, 1)
    assert a == parse_scene("zxqv blorp", None, 1)
    assert {parse_scene(f"word{i}", None, 1).setting for i in range(40)} != {a.setting}


def test_negative_prompt_removes_snow_people_and_text() -> None:
    prompt = "standing in a snowy city street"
    spec = parse_scene(prompt, None, 1)
    assert {"snowfall", "people", "text"} <= spec.elements
    cleaned = parse_scene(prompt, "snow, people, text", 1)
    assert not {"snowfall", "snow_cover", "people", "text"} & cleaned.elements
    assert {"snowfall", "people", "text"} <= cleaned.removed
    with_snow = render(prompt=prompt, seed=5, style_type="REALISTIC")
    without = render(prompt=prompt, seed=5, style_type="REALISTIC", negative_prompt="snow")

    # Snow cover turns the street white: without it the lower half is far darker.
    def ground_brightness(img: np.ndarray) -> float:
        return float(img[img.shape[0] // 2 :].mean())

    assert ground_brightness(with_snow) > ground_brightness(without) + 30


def test_character_pixels_are_present_in_the_output() -> None:
    reference = astronaut()
    out = render(style_type="REALISTIC", rendering_speed="quality", seed=3)
    face = detect_face(out)
    assert face is not None, "the character's face must survive into the picture"
    x, y, w, h = detect_face(reference) or (0, 0, 1, 1)
    ref_face = reference[y : y + h, x : x + w].reshape(-1, 3).mean(0)
    fx, fy, fw, fh = face
    out_face = out[fy : fy + fh, fx : fx + fw].reshape(-1, 3).mean(0)
    assert np.abs(ref_face - out_face).max() < 40  # same skin and hair tones


def test_edit_keeps_white_mask_pixels_exactly_and_paints_the_black_region() -> None:
    scene, mask_rgb = edit_pair()
    keep = mask_rgb[..., 0] > 127
    result = ENGINE.generate(
        request(edit_image=scene, edit_mask=~keep, width=640, height=480), NullHooks()
    )
    out = result.images[0].pixels
    assert out.shape == scene.shape
    assert np.array_equal(out[keep], scene[keep])
    changed = np.abs(out.astype(int) - scene.astype(int)).sum(axis=2) > 30
    assert changed[~keep].mean() > 0.2
    assert result.images[0].metadata["mode"] == "edit"


def test_metadata_labels_the_engine_and_scene() -> None:
    result = ENGINE.generate(request(), NullHooks())
    assert result.metadata["engine"] == "sandbox"
    assert result.images[0].metadata["scene"]["setting"] == "city"


def test_magic_prompt_is_deterministic_and_honours_off() -> None:
    assert expand_prompt("a knight", "On", 3) == expand_prompt("a knight", "On", 3)
    assert expand_prompt("a knight", "On", 3) != "a knight"
    assert expand_prompt("a knight", "Off", 3) == "a knight"
    long_prompt = " ".join(["word"] * 40)
    assert expand_prompt(long_prompt, "Auto", 1) == long_prompt
    assert expand_prompt("a knight", "Auto", 1) != "a knight"
    seeds = {expand_prompt("a knight in a forest", "On", s) for s in range(20)}
    assert len(seeds) > 1


def test_engine_reports_progress_and_stops_when_canceled() -> None:
    hooks = Recorder(cancel_after=1)
    with pytest.raises(JobCancelled):
        ENGINE.generate(request(num_images=4), hooks)
    assert hooks.values and hooks.values == sorted(hooks.values)
    assert max(hooks.values) < 100
