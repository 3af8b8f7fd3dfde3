"""The FLUX models in the sandbox: their requests rewritten into what the sandbox paints.

- ``flux-fill-pro`` inpaint: the mask read the FLUX way (white = paint);
- ``flux-fill-pro`` outpaint: the canvas grown exactly as the ``bfl`` engine grows it
  (engines/fill_canvas.py), its new area the mask, so the output really is larger;
- FLUX.2's ``input_images``: their palette (as style references), and with
  ``resolution: match_input_image`` the first one's size.

Everything else (sizes, seeds, the image prompt's palette, the input images) the sandbox
already honours from the request as the catalog normalised it.
"""

from __future__ import annotations

import dataclasses

from castframe.engines.base import EngineInputs, EngineRequest, InputImage
from castframe.engines.fill_canvas import fill_paint_mask, outpaint_inputs


def adapt(request: EngineRequest) -> EngineRequest:
    """Pure: a FLUX request as the sandbox's generic paths take it (others unchanged)."""
    inputs = request.inputs
    if request.model == "flux-fill-pro" and inputs.image is not None:
        if request.param("mode") == "outpaint":
            pixels, paint, canvas = outpaint_inputs(
                inputs.image.pixels, str(request.param("outpaint"))
            )
            return dataclasses.replace(
                request,
                width=canvas.width,
                height=canvas.height,
                inputs=EngineInputs(image=InputImage(pixels), mask=paint),
            )
        mask = fill_paint_mask(request)
        if mask is not None:
            width, height = inputs.image.size
            return dataclasses.replace(
                request,
                width=width,
                height=height,
                inputs=dataclasses.replace(inputs, mask=mask),
            )
    if request.model.startswith("flux-2") and inputs.references:
        # FLUX.2's input images guide the output: the sandbox takes their palette.
        styled = dataclasses.replace(inputs, style_references=inputs.references)
        request = dataclasses.replace(request, inputs=styled)
        if request.param("match_input_image"):
            width, height = inputs.references[0].size
            request = dataclasses.replace(request, width=width, height=height)
    return request
