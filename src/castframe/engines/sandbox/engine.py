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
from castframe.engines.sandbox.edit import paint_in_mask, place_in_mask
from castframe.engines.sandbox.flux import adapt
from castframe.engines.sandbox.palette import match_palette
from castframe.engines.sandbox.scene import LIGHTING, parse_scene, render_scene
from castframe.engines.sandbox.style import background_pass, final_pass, resolve_style
from castframe.engines.sandbox.subject import Cutout, CutoutCache
from castframe.engines.sandbox.tools import TOOL_MODELS, run_tool

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
        if request.model in TOOL_MODELS:
            return run_tool(request, hooks)
        request = adapt(request)  # FLUX's fill masks, outpaint canvases, matched sizes
        profile = SPEEDS.get(str(request.param("rendering_speed", "default")), SPEEDS["default"])
        hooks.progress(5)
        character = request.inputs.character
        cutout = (
            self._cutouts.get(character.pixels, profile.grabcut_iterations, profile.grabcut_side)
            if character is not None
            else None
        )
        hooks.check_cancelled()
        styles = tuple(item.pixels for item in request.inputs.style_references)
        images: list[GeneratedImage] = []
        for index in range(request.num_images):
            seed = (request.seed + index) % (MAX_SEED + 1)
            prompt = expand_prompt(
                request.prompt, str(request.param("magic_prompt_option", "Auto")), seed
            )
            rng = np.random.default_rng(seed)
            edit = request.inputs
            if edit.image is not None and edit.mask is not None:
                pixels, meta = self._edit(
                    request, edit.image.pixels, edit.mask, prompt, seed, cutout, profile, rng
                )
            else:
                pixels, meta = self._scene_image(request, prompt, seed, cutout, profile, rng)
            if styles:
                pixels = match_palette(pixels, styles)
                meta["styleReferences"] = len(styles)
            images.append(GeneratedImage(pixels=pixels, seed=seed, prompt=prompt, metadata=meta))
            hooks.progress(10 + int(85 * (index + 1) / request.num_images))
            hooks.check_cancelled()
        metadata: dict[str, object] = {"engine": self.name, "model": request.model}
        if cutout is not None:
            metadata["subject"] = {"method": cutout.method, "faceFound": cutout.face is not None}
        return EngineResult(images=images, metadata=metadata)

    def _edit(
        self,
        request: EngineRequest,
        image: np.ndarray,
        mask: np.ndarray,
        prompt: str,
        seed: int,
        cutout: Cutout | None,
        profile: SpeedProfile,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, dict[str, object]]:
        """With a character: the character placed in the mask. Without: the prompt's scene
        painted into the mask, blended at its edge; outside the mask the image is kept."""
        if cutout is not None:
            return place_in_mask(image, mask, cutout, rng), {"mode": "edit"}
        height, width = image.shape[:2]
        spec = parse_scene(prompt, request.negative_prompt, seed)
        scene = render_scene(spec, width, height, seed, profile.detail)
        painting = (np.clip(scene, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return paint_in_mask(image, mask, painting), {"mode": "edit", "scene": spec.describe()}

    def _scene_image(
        self,
        request: EngineRequest,
        prompt: str,
        seed: int,
        cutout: Cutout | None,
        profile: SpeedProfile,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, dict[str, object]]:
        spec = parse_scene(prompt, request.negative_prompt, seed)
        preset = request.param("style_preset")
        style = resolve_style(str(request.param("style_type", "AUTO")), request.prompt, preset)
        canvas = render_scene(
            spec,
            max(int(request.width * profile.scene_scale), 1),
            max(int(request.height * profile.scene_scale), 1),
            seed,
            profile.detail,
        )
        if profile.scene_scale != 1.0:
            canvas = cv2.resize(
                canvas, (request.width, request.height), interpolation=cv2.INTER_LINEAR
            )
        canvas = background_pass(style, canvas, profile.detail)
        face = None
        if cutout is not None:
            light = np.asarray(LIGHTING[spec.time][3], np.float32)
            placement = plan_placement(cutout, request.width, request.height, spec.horizon, rng)
            composite(canvas, cutout, placement, light, shadow=not cutout.touches_bottom)
            face = placement.face
        final = final_pass(style, canvas, face, rng, profile.detail)
        pixels = (final * 255.0 + 0.5).astype(np.uint8)
        meta: dict[str, object] = {"mode": "generate", "style": style, "scene": spec.describe()}
        if preset:
            meta["stylePreset"] = preset
        return pixels, meta
