"""Character consistency scores (dlib) and saved characters."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from castframe.catalog.ideogram_params import ASPECT_SIZES
from castframe.engines.base import NullHooks
from castframe.engines.sandbox import SandboxEngine
from castframe.faces import consistency
from castframe.faces.identity import FaceModel
from tests.conftest import Api, body_for, open_api
from tests.support.images import astronaut, astronaut_png, data_uri, no_face_image, png_bytes
from tests.support.jobs import images_of
from tests.support.requests import engine_request

ENGINE = SandboxEngine()


@lru_cache(maxsize=1)
def cameraman() -> np.ndarray:
    """scikit-image's cameraman: a second, different real person (grey, upscaled 1.5x)."""
    gray = cv2.resize(data.camera(), None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    return np.stack([gray] * 3, axis=-1)


def render(reference: np.ndarray, style: str, aspect: str, seed: int = 9) -> np.ndarray:
    request = engine_request(
        prompt="walking through a city street at night",
        style_type=style,
        seed=seed,
        aspect_ratio=aspect,
        reference=reference,
    )
    return ENGINE.generate(request, NullHooks()).images[0].pixels


@pytest.mark.parametrize("style", ["REALISTIC", "DESIGN", "GENERAL", "FICTION"])
def test_sandbox_keeps_the_character_in_every_aspect_ratio(model: FaceModel, style: str) -> None:
    main = model.main_face(astronaut())
    assert main is not None
    for aspect in ASPECT_SIZES:
        score = consistency(main.descriptor, model.faces(render(astronaut(), style, aspect)))
        assert score["faceDetected"], (style, aspect)
        assert score["sameCharacter"], (style, aspect, score)


def test_a_different_person_is_judged_different(model: FaceModel) -> None:
    astronaut_face = model.main_face(astronaut())
    camera_face = model.main_face(cameraman())
    assert astronaut_face is not None and camera_face is not None
    output = render(cameraman(), "REALISTIC", "1:1")
    versus_astronaut = consistency(astronaut_face.descriptor, model.faces(output))
    assert versus_astronaut["faceDetected"] and versus_astronaut["sameCharacter"] is False
    assert versus_astronaut["distance"] > 0.6
    versus_self = consistency(camera_face.descriptor, model.faces(output))
    assert versus_self["sameCharacter"] is True


def test_no_face_gives_null_scores_without_crashing(model: FaceModel) -> None:
    assert consistency(None, model.faces(no_face_image())) == {
        "faceDetected": False,
        "distance": None,
        "sameCharacter": None,
    }


def test_completed_jobs_carry_consistency(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    job = api_sqlite.submit_and_wait(
        key, body_for(data_uri(astronaut_png()), top={"num_images": 2})
    )
    for image in images_of(job):
        assert image["consistency"]["faceDetected"] is True
        assert image["consistency"]["sameCharacter"] is True
        assert 0 <= image["consistency"]["distance"] < 0.6
    no_face = api_sqlite.submit_and_wait(key, body_for(data_uri(png_bytes(no_face_image()))))
    assert no_face["status"] == "COMPLETED"
    assert images_of(no_face)[0]["consistency"]["faceDetected"] is False


def test_consistency_is_null_when_disabled(tmp_path: Path, sqlite_url: str) -> None:
    with open_api(tmp_path, sqlite_url, faces_enabled=False) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        assert images_of(job)[0]["consistency"] is None


def create(api: Api, key: str, image: bytes, name: str = "Eileen") -> object:
    return api.client.post(
        "/v2/characters", json={"name": name, "image": data_uri(image)}, headers={"X-API-Key": key}
    )


def test_saved_character_lifecycle_and_isolation(api: Api) -> None:
    alice, bob = api.key("alice"), api.key("bob")
    response = create(api, alice, astronaut_png())
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    character = response.json()  # type: ignore[attr-defined]
    character_id = character["characterId"]
    assert character_id.startswith("chr_") and character["descriptorCached"] is True
    headers = {"X-API-Key": alice}
    assert [
        c["id"] for c in api.client.get("/v2/characters", headers=headers).json()["characters"]
    ] == [character_id]
    assert api.client.get(f"/v2/characters/{character_id}", headers=headers).status_code == 200
    # Bob sees nothing and cannot use it.
    assert (
        api.client.get(f"/v2/characters/{character_id}", headers={"X-API-Key": bob}).status_code
        == 404
    )
    assert api.client.get("/v2/characters", headers={"X-API-Key": bob}).json()["characters"] == []
    stolen = api.generate(
        bob,
        {
            "prompt": "p",
            "model": "ideogram-character",
            "ideogramParams": {"character_id": character_id},
        },
    )
    assert (stolen.status_code, stolen.json()["code"]) == (400, "character_not_found")
    assert (
        api.client.delete(f"/v2/characters/{character_id}", headers={"X-API-Key": bob}).status_code
        == 404
    )
    # Alice generates with it, without any image in the request.
    body = {
        "prompt": "on a beach at sunset",
        "model": "ideogram-character",
        "ideogramParams": {"character_id": character_id, "rendering_speed": "turbo"},
    }
    job = api.submit_and_wait(alice, body)
    assert job["status"] == "COMPLETED", job
    assert job["input"]["ideogramParams"]["character_id"] == character_id
    assert images_of(job)[0]["consistency"]["sameCharacter"] is True
    # Deleting it refuses later submissions but keeps the finished job.
    assert api.client.delete(f"/v2/characters/{character_id}", headers=headers).status_code == 204
    later = api.generate(alice, body)
    assert (later.status_code, later.json()["code"]) == (400, "character_not_found")
    assert list(later.json()["details"]) == ["ideogramParams.character_id"]
    kept = api.get_job(alice, job["id"])
    assert kept["status"] == "COMPLETED"
    assert api.client.get(images_of(kept)[0]["url"]).status_code == 200
    assert api.client.get(f"/v2/characters/{character_id}", headers=headers).status_code == 404


def test_character_images_need_exactly_one_clear_face(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    none = create(api_sqlite, key, png_bytes(no_face_image()))
    assert none.json()["code"] == "no_face_found"  # type: ignore[attr-defined]
    pair = np.concatenate([astronaut(), astronaut()[:, ::-1]], axis=1)
    two = create(api_sqlite, key, png_bytes(pair))
    assert two.json()["code"] == "multiple_faces"  # type: ignore[attr-defined]
    tiny = cv2.resize(astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    small = create(api_sqlite, key, png_bytes(np.pad(tiny, ((200, 200), (200, 200), (0, 0)))))
    assert small.status_code == 400  # type: ignore[attr-defined]
    assert small.json()["code"] in ("face_too_small", "no_face_found")  # type: ignore[attr-defined]
    broken = api_sqlite.client.post(
        "/v2/characters",
        json={"name": "x", "image": "data:image/png;base64,AAAA"},
        headers={"X-API-Key": key},
    )
    assert broken.json()["code"] == "invalid_image"
    unknown = api_sqlite.client.post(
        "/v2/characters", json={"name": "x", "image": "y", "z": 1}, headers={"X-API-Key": key}
    )
    assert unknown.json()["code"] == "validation_error"
