"""Render the sandbox gallery in docs/gallery/ from scikit-image's astronaut photograph.

Run with `make gallery`. Each picture's prompt and parameters are written to
docs/gallery/README.md so a newcomer sees what the sandbox draws for what request.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PIL import Image
from skimage import data
from tests.support.requests import engine_request

from castframe.catalog.ideogram_params import ASPECT_SIZES
from castframe.engines.base import NullHooks
from castframe.engines.sandbox import SandboxEngine

CASES = [
    ("a woman walking down a city street at night in the rain", "REALISTIC", "1:1", None),
    ("portrait on a beach at sunset", "REALISTIC", "3:4", None),
    ("a knight in a misty forest", "FICTION", "4:3", None),
    ("poster of a hiker in snowy mountains", "DESIGN", "9:16", None),
    ("in a cozy cafe, golden hour", "GENERAL", "16:9", None),
    ("standing in a snowy city street", "REALISTIC", "1:1", "snow, people, text"),
    ("floating in space near a ringed planet", "AUTO", "1:1", None),
    ("walking through the desert dunes at noon", "AUTO", "16:9", None),
]


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = SandboxEngine()
    reference = data.astronaut()
    Image.fromarray(reference).save(out_dir / "reference.png")
    rows = ["| image | prompt | style | aspect | negative | seconds |", "|---|---|---|---|---|---|"]
    for index, (prompt, style, aspect, negative) in enumerate(CASES):
        width, height = ASPECT_SIZES[aspect]
        request = engine_request(
            prompt=prompt,
            negative_prompt=negative,
            style_type=style,
            magic_prompt_option="Off",
            rendering_speed="default",
            seed=7 + index,
            num_images=1,
            width=width,
            height=height,
            aspect_ratio=aspect,
            reference=reference,
        )
        started = time.perf_counter()
        image = engine.generate(request, NullHooks()).images[0]
        seconds = time.perf_counter() - started
        name = f"{index:02d}.jpg"
        thumb = Image.fromarray(image.pixels)
        thumb.thumbnail((512, 512))
        thumb.save(out_dir / name, quality=85)
        rows.append(
            f"| ![{prompt}]({name}) | {prompt} | {style} ({image.metadata.get('style')}) "
            f"| {aspect} | {negative or ''} | {seconds:.2f} |"
        )
    (out_dir / "README.md").write_text(
        "# Sandbox gallery\n\nMade by `make gallery` (scripts/make_gallery.py) from the "
        "reference below (scikit-image's `astronaut`), seed 7+, default speed. Thumbnails; the "
        "engine renders the exact sizes of each aspect ratio.\n\n![reference](reference.png)\n\n"
        + "\n".join(rows)
        + "\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/gallery"))
