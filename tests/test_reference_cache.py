"""Reference face descriptors computed once per picture: the cache (in memory, and the
upload's sidecar in storage) gives exactly the verdicts of computing afresh, and a missing,
stale, corrupt or unwritable sidecar costs a computation, never a wrong verdict or a job."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data

from castframe.dispatch.character_faces import CharacterDescriptors, sidecar_key
from castframe.engines.base import NullHooks
from castframe.engines.sandbox import SandboxEngine
from castframe.faces import consistency, face_model
from castframe.faces.cache import (
    ENTRY_BYTES,
    DescriptorCache,
    ReferenceFace,
    content_key,
    dump_face,
    load_face,
)
from castframe.faces.identity import FaceModel
from castframe.media.images import DecodedImage, decode_image
from castframe.media.storage import LocalStorage
from castframe.store.db import Database
from tests.support.images import astronaut_png, no_face_image, png_bytes
from tests.support.requests import engine_request

OWNER = ("acct", "live")
UPLOAD_KEY = "uploads/acct/ref-1.png"


@lru_cache(maxsize=1)
def cameraman() -> np.ndarray:
    """scikit-image's cameraman: a second real person (grey, upscaled 1.5x)."""
    gray = cv2.resize(data.camera(), None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    return np.stack([gray] * 3, axis=-1)


@pytest.fixture(scope="module")
def dlib_model() -> FaceModel:
    loaded = face_model()
    assert loaded is not None, "the faces extra is part of `make test`'s install"
    return loaded


class CountingModel(FaceModel):
    """The real model, counting how often a reference's main face is computed."""

    def __init__(self, model: FaceModel) -> None:  # the real one is loaded already
        self.model = model
        self.main_faces = 0

    def main_face(self, rgb: np.ndarray) -> Any:
        self.main_faces += 1
        return self.model.main_face(rgb)

    def faces(self, rgb: np.ndarray) -> Any:
        return self.model.faces(rgb)


class BrokenStorage(LocalStorage):
    """Storage whose every call fails, as an unreachable bucket would."""

    def get(self, key: str) -> bytes:
        raise OSError("storage is down")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        raise OSError("storage is down")


def decoded(pixels: np.ndarray) -> DecodedImage:
    return decode_image(png_bytes(pixels), max_bytes=50 << 20, max_pixels=40_000_000)


@pytest.fixture
def db(sqlite_url: str) -> Database:
    return Database(sqlite_url)


def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", "http://testserver", b"secret")


def outputs(reference: np.ndarray, seeds: range) -> list[np.ndarray]:
    engine = SandboxEngine()
    return [
        engine.generate(engine_request(seed=seed, reference=reference), NullHooks())
        .images[0]
        .pixels
        for seed in seeds
    ]


def test_cached_verdicts_equal_fresh_ones(
    dlib_model: FaceModel, db: Database, tmp_path: Path
) -> None:
    """For two people and a faceless picture, against outputs of both people: every verdict
    from the cached descriptor (memory, then a new process's sidecar) is the fresh one."""
    model = dlib_model
    references = {
        "astronaut": decode_image(astronaut_png(), max_bytes=50 << 20, max_pixels=40_000_000),
        "cameraman": decoded(cameraman()),
        "no face": decoded(no_face_image(256)),
    }
    shots = outputs(references["astronaut"].pixels, range(2)) + outputs(cameraman(), range(2))
    files = storage(tmp_path)
    counting = CountingModel(model)
    first = CharacterDescriptors(db, files)
    for name, reference in references.items():
        key = f"uploads/acct/{name.replace(' ', '-')}.png"
        fresh_face = model.main_face(reference.pixels)
        fresh = None if fresh_face is None else fresh_face.descriptor
        computed = first.descriptor(OWNER, None, reference, counting, upload_key=key)
        from_memory = first.descriptor(OWNER, None, reference, counting, upload_key=key)
        # A restarted worker: empty memory, the sidecar in storage.
        restarted = CharacterDescriptors(db, files)
        from_sidecar = restarted.descriptor(OWNER, None, reference, counting, upload_key=key)
        for shot in shots:
            faces = model.faces(shot)
            expected = consistency(fresh, faces)
            assert consistency(computed, faces) == expected, name
            assert consistency(from_memory, faces) == expected, name
            assert consistency(from_sidecar, faces) == expected, name
        assert files.exists(sidecar_key(key))
        assert (fresh is None) == (name == "no face")
    # One computation per picture: the second call and the restarted worker reused it.
    assert counting.main_faces == len(references)


def test_the_key_is_the_content_not_the_source(dlib_model: FaceModel, db: Database) -> None:
    """The same picture by another upload hits; a different picture never does."""
    model = dlib_model
    counting = CountingModel(model)
    descriptors = CharacterDescriptors(db)
    astronaut_ref = decode_image(astronaut_png(), max_bytes=50 << 20, max_pixels=40_000_000)
    a = descriptors.descriptor(OWNER, None, astronaut_ref, counting, upload_key="uploads/a/1.png")
    b = descriptors.descriptor(OWNER, None, astronaut_ref, counting, upload_key="uploads/a/2.png")
    assert counting.main_faces == 1 and a is not None and np.array_equal(a, b)
    other = descriptors.descriptor(OWNER, None, decoded(cameraman()), counting)
    assert counting.main_faces == 2
    assert other is not None and np.linalg.norm(other - a) > 0.6
    # Pixels without bytes (an engine's own array) are keyed by their pixels.
    again = descriptors.descriptor(OWNER, None, cameraman(), counting)
    descriptors.descriptor(OWNER, None, cameraman(), counting)
    assert counting.main_faces == 3 and again is not None and np.array_equal(again, other)


@pytest.mark.parametrize(
    "sidecar",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"version": "dlib-resnet-v1', id="truncated"),
        pytest.param(b"[1, 2, 3]", id="not an object"),
        pytest.param(b"\xff\xfe garbage", id="binary"),
        pytest.param("stale", id="another model version"),
        pytest.param("other picture", id="another picture's"),
        pytest.param("short", id="wrong length"),
        pytest.param("nan", id="not finite"),
    ],
)
def test_a_bad_sidecar_is_recomputed_not_trusted(
    dlib_model: FaceModel, db: Database, tmp_path: Path, sidecar: bytes | str
) -> None:
    model = dlib_model
    reference = decode_image(astronaut_png(), max_bytes=50 << 20, max_pixels=40_000_000)
    key = content_key(reference.raw, reference.pixels)
    wrong = ReferenceFace(np.full(128, 0.5))
    if sidecar == "stale":
        sidecar = dump_face(key, wrong).replace(b"dlib-resnet-v1", b"dlib-resnet-v0")
    elif sidecar == "other picture":
        sidecar = dump_face("0" * 64, wrong)
    elif sidecar == "short":
        sidecar = dump_face(key, ReferenceFace(np.full(12, 0.5)))
    elif sidecar == "nan":
        sidecar = dump_face(key, wrong).replace(b"0.5", b"NaN", 1)
    assert isinstance(sidecar, bytes)
    assert load_face(key, sidecar) is None
    files = storage(tmp_path)
    files.put(sidecar_key(UPLOAD_KEY), sidecar, "application/json")
    counting = CountingModel(model)
    got = CharacterDescriptors(db, files).descriptor(
        OWNER,
        None,
        reference,
        counting,
        upload_key=UPLOAD_KEY,
    )
    fresh = model.main_face(reference.pixels)
    assert counting.main_faces == 1 and fresh is not None and got is not None
    assert np.array_equal(got, fresh.descriptor)
    # The recomputed descriptor replaced the bad sidecar.
    assert load_face(key, files.get(sidecar_key(UPLOAD_KEY))) is not None


def test_failing_storage_costs_a_computation_not_the_job(
    dlib_model: FaceModel, db: Database, tmp_path: Path
) -> None:
    model = dlib_model
    reference = decode_image(astronaut_png(), max_bytes=50 << 20, max_pixels=40_000_000)
    broken = BrokenStorage(tmp_path / "files", "http://testserver", b"secret")
    counting = CountingModel(model)
    descriptors = CharacterDescriptors(db, broken)
    got = descriptors.descriptor(OWNER, None, reference, counting, upload_key=UPLOAD_KEY)
    fresh = model.main_face(reference.pixels)
    assert got is not None and fresh is not None and np.array_equal(got, fresh.descriptor)
    descriptors.descriptor(OWNER, None, reference, counting, upload_key=UPLOAD_KEY)
    assert counting.main_faces == 1  # memory still served the second job


def test_the_memory_cache_is_bounded() -> None:
    cache = DescriptorCache(max_bytes=3 * ENTRY_BYTES)
    for index in range(10):
        cache.put(f"k{index}", ReferenceFace(None))
    assert len(cache) == 3
    assert cache.get("k0") is None and cache.get("k9") is not None
    cache.get("k7")  # used recently: survives the next insertion
    cache.put("k10", ReferenceFace(None))
    assert cache.get("k7") is not None and cache.get("k8") is None
