"""``SandboxEngine``: the deterministic CPU engine behind test keys and ``make run``.

Per image: parse the scene from the rendered prompt, paint it, apply the style's background
pass, place the cut-out character, apply the style's final pass. Every random choice comes
from ``numpy.random.default_rng(seed)``, so one seed gives byte-identical PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.prompt import expand_prompt
from castframe.engines.sandbox.compose import composite, plan_placement
from castframe.engines.sandbox.edit import place_in_mask
from castframe.engines.sandbox.palette import match_palette
from castframe.engines.sandbox.scene import LIGHTING, parse_scene, render_scene
from castframe.engines.sandbox.style import background_pass, final_pass, resolve_style
from castframe.engines.sandbox.subject import Cutout, CutoutCache

MAX_SEED = 2_147_483_647


@dataclass(frozen=True)
class SpeedProfile:
    grabcut_iterations: int
    grabcut_side: int
    detail: int
    scene_scale: float
    """The background is painted at this fraction of the output size, then upscaled."""


SPEEDS = {
    "turbo": SpeedProfile(grabcut_iterations=1, grabcut_side=192, detail=0, scene_scale=0.5),
    "default": SpeedProfile(grabcut_iterations=2, grabcut_side=256, detail=1, scene_scale=1.0),
    "quality": SpeedProfile(grabcut_iterations=4, grabcut_side=360, detail=2, scene_scale=1.0),
}


class SandboxEngine:
    """Real, recognisable pictures with no weights: a procedural scene and the real character."""

    name = "sandbox"

    def __init__(self) -> None:
        self._cutouts = CutoutCache()

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        profile = SPEEDS[request.rendering_speed]
        hooks.progress(5)
        cutout = self._cutouts.get(
            request.reference, profile.grabcut_iterations, profile.grabcut_side
        )
        hooks.check_canceled()
        images: list[GeneratedImage] = []
        for index in range(request.num_images):
            seed = (request.seed + index) % (MAX_SEED + 1)
            prompt = expand_prompt(request.prompt, request.magic_prompt_option, seed)
            rng = np.random.default_rng(seed)
            if request.edit_image is not None and request.edit_mask is not None:
                pixels = place_in_mask(request.edit_image, request.edit_mask, cutout, rng)
                meta: dict[str, object] = {"mode": "edit"}
            else:
                pixels, meta = self._scene_image(request, prompt, seed, cutout, profile, rng)
            if request.style_references:
                pixels = match_palette(pixels, request.style_references)
                meta["styleReferences"] = len(request.style_references)
            images.append(GeneratedImage(pixels=pixels, seed=seed, prompt=prompt, metadata=meta))
            hooks.progress(10 + int(85 * (index + 1) / request.num_images))
            hooks.check_canceled()
        return EngineResult(
            images=images,
            metadata={
                "engine": self.name,
                "subject": {"method": cutout.method, "faceFound": cutout.face is not None},
            },
        )

    def _scene_image(
        self,
        request: EngineRequest,
        prompt: str,
        seed: int,
        cutout: Cutout,
        profile: SpeedProfile,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, dict[str, object]]:
        spec = parse_scene(prompt, request.negative_prompt, seed)
        style = resolve_style(request.style_type, request.prompt, request.style_preset)
        canvas = render_scene(
            spec,
            int(request.width * profile.scene_scale),
            int(request.height * profile.scene_scale),
            seed,
            profile.detail,
        )
        if profile.scene_scale != 1.0:
            canvas = cv2.resize(
                canvas, (request.width, request.height), interpolation=cv2.INTER_LINEAR
            )
        canvas = background_pass(style, canvas, profile.detail)
        light = np.asarray(LIGHTING[spec.time][3], np.float32)
        placement = plan_placement(cutout, request.width, request.height, spec.horizon, rng)
        composite(canvas, cutout, placement, light, shadow=not cutout.touches_bottom)
        final = final_pass(style, canvas, placement.face, rng, profile.detail)
        pixels = (final * 255.0 + 0.5).astype(np.uint8)
        meta: dict[str, object] = {"mode": "generate", "style": style, "scene": spec.describe()}
        if request.style_preset:
            meta["stylePreset"] = request.style_preset
        return pixels, meta
