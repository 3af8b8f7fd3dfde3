"""FLUX requests as the sandbox paints them: white-paint fill masks, outpaint canvases, and
FLUX.2's match_input_image size."""

from __future__ import annotations

import numpy as np

from castframe.engines.base import EngineInputs, EngineRequest, InputImage
from castframe.engines.sandbox.flux import adapt


def _request(model: str, params: dict[str, object], inputs: EngineInputs) -> EngineRequest:
    return EngineRequest(
        model=model,
        prompt="a field",
        negative_prompt=None,
        seed=1,
        num_images=1,
        width=1024,
        height=1024,
        inputs=inputs,
        params=params,
    )


IMAGE = InputImage(np.full((96, 128, 3), 200, np.uint8))


def test_outpaint_becomes_an_edit_of_the_grown_canvas() -> None:
    request = _request(
        "flux-fill-pro", {"mode": "outpaint", "outpaint": "Zoom out 2x"}, EngineInputs(image=IMAGE)
    )
    adapted = adapt(request)
    assert (adapted.width, adapted.height) == (256, 192)
    assert adapted.inputs.image is not None and adapted.inputs.image.size == (256, 192)
    mask = adapted.inputs.mask
    assert mask is not None and mask.shape == (192, 256)
    assert not mask[48:144, 64:192].any() and mask.sum() == 256 * 192 - 128 * 96


def test_inpaint_reads_the_mask_white_is_paint() -> None:
    black_is_true = np.zeros((96, 128), bool)
    black_is_true[:, :64] = True
    request = _request(
        "flux-fill-pro",
        {"mode": "inpaint", "mask_paints": "white"},
        EngineInputs(image=IMAGE, mask=black_is_true),
    )
    adapted = adapt(request)
    assert adapted.inputs.mask is not None
    assert adapted.inputs.mask[:, 64:].all() and not adapted.inputs.mask[:, :64].any()
    assert (adapted.width, adapted.height) == (128, 96)


def test_match_input_image_takes_the_first_reference_size() -> None:
    request = _request("flux-2-pro", {"match_input_image": True}, EngineInputs(references=(IMAGE,)))
    adapted = adapt(request)
    assert (adapted.width, adapted.height) == (128, 96)
    assert adapted.inputs.style_references == (IMAGE,)  # their palette guides the output
    other = _request("flux-2-pro", {"match_input_image": False}, EngineInputs(references=(IMAGE,)))
    assert (adapt(other).width, adapt(other).height) == (1024, 1024)
    plain = _request("flux-1.1-pro", {}, EngineInputs())
    assert adapt(plain) is plain
