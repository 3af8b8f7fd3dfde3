"""A program written for Apiframe calling the two image tool endpoints of a real server
process, live key: real models (U²-Net-P, Real-ESRGAN) run by the embedded worker."""

from __future__ import annotations

import io
import time
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import Castframe
from tests.support.images import astronaut, data_uri, png_bytes

pytestmark = pytest.mark.e2e


def poll(base: str, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.time() + 180
    while time.time() < deadline:
        job: dict[str, Any] = httpx.get(f"{base}/v2/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


def test_background_remove_and_upscale_on_a_real_server(castframe_sqlite: Castframe) -> None:
    _, base = castframe_sqlite.server()
    headers = {"X-API-Key": castframe_sqlite.key()}
    photo = cv2.resize(astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
    requests = [
        (
            "background-remove",
            {
                "model": "851-bg-remove",
                "lab851BgRemoveParams": {"image": data_uri(png_bytes(photo))},
            },
            (128, 128),
            "RGBA",
        ),
        (
            "upscale",
            {
                "model": "clarity-upscale",
                "clarityUpscaleParams": {
                    "image": data_uri(png_bytes(photo[:24, :32])),
                    "scale_factor": 8,
                },
            },
            (256, 192),
            "RGB",
        ),
    ]
    for operation, body, size, mode in requests:
        submitted = httpx.post(f"{base}/v2/images/{operation}", json=body, headers=headers)
        assert submitted.status_code == 202, submitted.text
        job = poll(base, headers, submitted.json()["jobId"])
        assert job["status"] == "COMPLETED", job
        assert job["result"]["metadata"]["engine"] == "tools"
        image = Image.open(io.BytesIO(httpx.get(job["result"]["images"][0]).content))
        assert image.size == size and image.mode == mode
        if mode == "RGBA":
            alpha = np.asarray(image)[..., 3]
            assert alpha[:6, :6].max() == 0 and alpha[16:28, 48:60].min() == 255  # the face
