"""The app on a diffusers model directory, and the job the diffusers tests run through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import Api, body_for, make_api
from tests.support.images import astronaut_png, data_uri


def api_with_model(tmp_path: Path, database_url: str, model_dir: Path) -> Iterator[Api]:
    """The app with its embedded worker running live jobs on the model in ``model_dir``."""
    yield from make_api(
        tmp_path,
        database_url,
        diffusers_model=str(model_dir),
        diffusers_device="cpu",
        faces_enabled=False,
    )


def wide_job(api: Api, key: str) -> dict[str, Any]:
    """A 16:9 job with the astronaut as reference, submitted and waited for."""
    return api.submit_and_wait(
        key, body_for(data_uri(astronaut_png()), seed=3, top={"aspect_ratio": "16:9"})
    )
