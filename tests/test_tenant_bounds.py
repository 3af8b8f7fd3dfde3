"""One tenant never hurts another (#24, part B): caches bounded in bytes, a deleted
character's biometric data gone, thin images refused cleanly, no heavy work on the event
loop, per-account buckets and quota, one reading of signed URLs, and the minor HTTP points."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from castframe.api.generate import parse_prefer_wait
from castframe.bytecache import ByteLRU, nbytes_of
from castframe.dispatch.worker import failure_of
from castframe.errors import public_message
from castframe.jobs.uploads import plan_upload
from castframe.media.fetch import FetchError, resolve_checked
from castframe.media.images import DecodedImage, decode_image
from castframe.media.signing import own_file, signed_url
from castframe.media.sources import classify
from castframe.store.tables import characters, file_deletions, uploads
from tests.conftest import Api, body_for, open_api
from tests.support.images import astronaut, astronaut_png, data_uri, png_bytes

REF = "https://example.com/a.png"


def big_photo(side: int, seed: int) -> bytes:
    """A real photograph scaled up to ``side`` pixels, with a seed-dependent tint so that
    every picture is a different upload and a different cache entry."""
    import cv2

    pixels = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_LINEAR)
    pixels = np.clip(pixels.astype(np.int16) + seed, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return bytes(encoded)


# -- finding 4: bounds in bytes ---------------------------------------------------------------


def test_byte_lru_keeps_its_budget_in_bytes_not_entries() -> None:
    cache: ByteLRU[str, np.ndarray] = ByteLRU(1000, lambda value: int(value.nbytes))
    for index in range(10):
        cache.put(f"k{index}", np.zeros(300, np.uint8))
    assert cache.bytes <= 1000 and len(cache) == 3
    assert cache.get("k9") is not None and cache.get("k0") is None
    cache.get("k7")  # used recently: survives the next insertion
    cache.put("k10", np.zeros(300, np.uint8))
    assert cache.get("k7") is not None and cache.get("k8") is None
    assert not cache.put("huge", np.zeros(5000, np.uint8))  # alone over the budget: not kept
    assert "huge" not in cache and cache.get("k10") is not None
    assert cache.discard_where(lambda key: key == "k10") == 1
    assert nbytes_of(np.zeros(4, np.uint16), b"abc", "xy") == 13


def test_decoded_uploads_are_cached_within_bytes_and_references_downscaled(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Finding 4: 20 different large references leave at most the cache's byte budget
    behind, each reference downscaled to CASTFRAME_REFERENCE_MAX_SIDE before caching."""
    budget = 16 * 1024 * 1024
    with open_api(
        tmp_path, sqlite_url, run_worker=False, input_cache_bytes=budget, reference_max_side=512
    ) as api:
        key = api.key()
        loader = api.services.inputs
        owner = None
        for seed in range(20):
            uploaded = api.client.post(
                "/v2/uploads",
                files={"file": ("a.jpg", big_photo(1500, seed), "image/jpeg")},
                headers={"X-API-Key": key},
            )
            assert uploaded.status_code == 201, uploaded.text
            with api.services.db.read() as conn:
                row = conn.execute(sa.select(uploads.c.account_id, uploads.c.mode)).first()
            assert row is not None
            owner = (str(row[0]), str(row[1]))
            image = loader.load(owner, uploaded.json()["reference"], "reference", 512).image
            assert max(image.width, image.height) == 512
            full = loader.load(owner, uploaded.json()["reference"], "image").image
            assert (full.width, full.height) == (1500, 1500)  # edit images keep their size
        assert loader._cache.bytes <= budget
        assert len(loader._cache) < 20


# -- finding 7: a deleted character's image and descriptor ---------------------------------


def create_character(api: Api, key: str) -> dict[str, Any]:
    created = api.client.post(
        "/v2/characters",
        json={"name": "Eileen", "image": data_uri(astronaut_png())},
        headers={"X-API-Key": key},
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def character_rows(api: Api) -> list[Any]:
    with api.services.db.read() as conn:
        return list(conn.execute(sa.select(characters)).mappings())


def test_deleting_a_character_removes_its_image_and_descriptor_at_once(
    api_no_worker: Api,
) -> None:
    api = api_no_worker
    key = api.key()
    character = create_character(api, key)
    with api.services.db.read() as conn:
        storage_key = conn.execute(sa.select(uploads.c.storage_key)).scalar()
    assert storage_key and api.services.storage.exists(storage_key)
    deleted = api.client.delete(f"/v2/characters/{character['id']}", headers={"X-API-Key": key})
    assert deleted.status_code == 204
    # Unusable at once: its upload:// reference is refused for jobs and for new characters.
    refused = api.generate(key, body_for(character["reference"]))
    assert (refused.status_code, refused.json()["code"]) == (400, "upload_not_found")
    again = api.client.post(
        "/v2/characters",
        json={"name": "copy", "image": character["reference"]},
        headers={"X-API-Key": key},
    )
    assert (again.status_code, again.json()["code"]) == (400, "upload_not_found")
    # No job needed it: the file, the upload row, the character and its descriptor are gone.
    assert not api.services.storage.exists(storage_key)
    assert character_rows(api) == []
    with api.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(uploads)).scalar() == 0
        assert conn.execute(sa.select(file_deletions.c.key)).all() == []


def test_a_deleted_characters_image_stays_until_its_queued_job_is_done(
    tmp_path: Path, database_url: str
) -> None:
    with open_api(tmp_path, database_url, run_worker=False) as api:
        key = api.key()
        character = create_character(api, key)
        queued = api.generate(
            key,
            {
                "prompt": "on a beach",
                "model": "ideogram-character",
                "ideogramParams": {"character_id": character["id"], "rendering_speed": "turbo"},
            },
        )
        assert queued.status_code == 202, queued.text
        deleted = api.client.delete(f"/v2/characters/{character['id']}", headers={"X-API-Key": key})
        assert deleted.status_code == 204
        refused = api.generate(key, body_for(character["reference"]))
        assert (refused.status_code, refused.json()["code"]) == (400, "upload_not_found")
        rows = character_rows(api)
        assert len(rows) == 1 and rows[0]["deleted_at"] is not None  # the job still needs it
        with api.services.db.read() as conn:
            storage_key = conn.execute(sa.select(uploads.c.storage_key)).scalar()
        assert storage_key and api.services.storage.exists(storage_key)
        api.services.start_worker()
        job = api.wait(key, queued.json()["jobId"])
        assert job["status"] == "COMPLETED", job
        from castframe.jobs.retention import RetentionSweeper

        sweeper = RetentionSweeper(api.services.settings, api.services.db, api.services.storage)
        sweeper.sweep(time.time() + 1)
        sweeper.sweep(time.time() + 1)
        assert character_rows(api) == []
        assert not api.services.storage.exists(storage_key)
        assert not api.services.storage.exists(storage_key + ".face.json")


# -- finding 8: an 8200x16 image --------------------------------------------------------------


def test_a_thin_strip_is_a_clear_400_on_characters(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    strip = png_bytes(np.full((16, 8200, 3), 128, np.uint8))
    response = api_sqlite.client.post(
        "/v2/characters",
        json={"name": "strip", "image": data_uri(strip)},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "face_too_small"
    assert "8200x16" in response.json()["error"]


def test_a_thin_strip_as_a_job_reference_runs_without_library_internals(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    strip = png_bytes(np.full((16, 8200, 3), 128, np.uint8))
    job = api_sqlite.submit_and_wait(key, body_for(data_uri(strip)))
    assert job["status"] in ("COMPLETED", "FAILED")
    assert "/" not in (job.get("error") or "") and "cpp" not in (job.get("error") or "")


def test_library_messages_lose_paths_and_build_strings() -> None:
    import cv2

    with pytest.raises(cv2.error) as raised:
        cv2.resize(np.zeros((16, 8200, 3), np.uint8), (512, 0))
    failure = failure_of(raised.value)
    assert "/" not in failure.message and "OpenCV(" not in failure.message
    assert ".cpp" not in failure.message
    assert public_message("see /usr/lib/python3/site-packages/x.py:12: boom") == "see boom"
    assert public_message("https://example.com/a/b.png answered 404") == (
        "https://example.com/a/b.png answered 404"
    )


# -- finding 9: nothing heavy on the event loop ---------------------------------------------


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_escaped_data_uris_uploads_and_large_bodies_decode_in_threads(
    api_sqlite: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castframe.api import generate
    from castframe.api import uploads as upload_routes

    seen: dict[str, bool] = {}
    real_prepare, real_parse, real_decode = (
        generate.prepare,
        generate.parse_json_body,
        upload_routes.decode_image,
    )

    def prepare(*args: Any) -> Any:
        seen["prepare"] = on_event_loop()
        return real_prepare(*args)

    def parse(raw: bytes) -> Any:
        if len(raw) > 100_000:
            seen["parse"] = seen.get("parse", False) or on_event_loop()
        return real_parse(raw)

    def decode(*args: Any, **kwargs: Any) -> DecodedImage:
        seen["decode"] = on_event_loop()
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(generate, "prepare", prepare)
    monkeypatch.setattr(generate, "parse_json_body", parse)
    monkeypatch.setattr(upload_routes, "decode_image", decode)
    key = api_sqlite.key()
    escaped = data_uri(astronaut_png()).replace("data:", "data\\u003a", 1)
    body = json.dumps(body_for("PLACEHOLDER")).replace("PLACEHOLDER", escaped)
    assert len(body) > 100_000
    response = api_sqlite.client.post(
        "/v2/images/generate",
        content=body.encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    assert seen["prepare"] is False and seen["parse"] is False
    uploaded = api_sqlite.client.post(
        "/v2/uploads",
        files={"file": ("a.png", astronaut_png(), "image/png")},
        headers={"X-API-Key": key},
    )
    assert uploaded.status_code == 201 and seen["decode"] is False


def test_uppercase_data_uris_are_data_uris(api_sqlite: Api) -> None:
    upper = "DATA:" + data_uri(astronaut_png())[len("data:") :]
    assert classify(upper, b"k", False, frozenset()).kind == "data"
    key = api_sqlite.key()
    response = api_sqlite.generate(key, body_for(upper))
    assert response.status_code == 202, response.text
    job = api_sqlite.get_job(key, response.json()["jobId"])
    assert job["input"]["ideogramParams"]["character_reference_image"].startswith("upload://")


# -- finding 10: per-account buckets and a storage quota ------------------------------------


def upload(api: Api, key: str, raw: bytes | None = None) -> Any:
    return api.client.post(
        "/v2/uploads",
        files={"file": ("a.png", raw or astronaut_png(), "image/png")},
        headers={"X-API-Key": key},
    )


def test_uploads_and_characters_have_per_account_buckets(tmp_path: Path, sqlite_url: str) -> None:
    with open_api(
        tmp_path,
        sqlite_url,
        run_worker=False,
        upload_rate_per_second=0.001,
        upload_rate_burst=2,
        character_rate_per_second=0.001,
        character_rate_burst=1,
    ) as api:
        first, second = api.key("alice"), api.key("alice", mode="test")
        other = api.key("bob")
        assert [upload(api, first).status_code, upload(api, second).status_code] == [201, 201]
        limited = upload(api, first)  # the account's bucket, whichever key
        assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        assert upload(api, other).status_code == 201  # another account is untouched
        create_character(api, first)
        again = api.client.post(
            "/v2/characters", content=b"not even json", headers={"X-API-Key": first}
        )
        assert (again.status_code, again.json()["code"]) == (429, "rate_limited")


def test_the_storage_quota_is_a_507_with_a_stable_code(tmp_path: Path, sqlite_url: str) -> None:
    size = len(astronaut_png())
    with open_api(
        tmp_path, sqlite_url, run_worker=False, upload_quota_bytes=int(size * 2.5)
    ) as api:
        key = api.key()
        assert [upload(api, key).status_code for _ in range(2)] == [201, 201]
        over = upload(api, key)
        assert (over.status_code, over.json()["code"]) == (507, "storage_quota_exceeded")
        assert over.json()["quotaBytes"] == int(size * 2.5)
        with api.services.db.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(uploads)).scalar() == 2
        refused = api.client.post(
            "/v2/characters",
            json={"name": "Eileen", "image": data_uri(astronaut_png())},
            headers={"X-API-Key": key},
        )
        assert (refused.status_code, refused.json()["code"]) == (507, "storage_quota_exceeded")


# -- finding 14: one reading of signed URLs --------------------------------------------------


def test_duplicate_signature_parameters_are_refused_everywhere(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    created = upload(api_sqlite, key)
    url = created.json()["url"]
    wrong = "0" * 64
    for doubled in (f"{url}&signature={wrong}", url.replace("?", f"?signature={wrong}&")):
        assert own_file(doubled, api_sqlite.services.settings.signing_key) is None
        path = doubled.split("testserver", 1)[1]
        response = api_sqlite.client.get(path)
        assert (response.status_code, response.json()["code"]) == (403, "invalid_signature")
    assert api_sqlite.client.get(url.split("testserver", 1)[1]).status_code == 200
    assert own_file(signed_url("http://x", b"k", "uploads/a/b.png", 60), b"k") is not None


# -- finding 15: the minor points ----------------------------------------------------------


def test_head_answers_every_get_resource_without_a_body(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    queued = api_sqlite.generate(key, body_for(REF)).json()["jobId"]
    for path in (f"/v2/jobs/{queued}", "/v2/jobs", "/v2/account", "/healthz"):
        got = api_sqlite.client.get(path, headers={"X-API-Key": key})
        head = api_sqlite.client.head(path, headers={"X-API-Key": key})
        assert head.status_code == got.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]


def test_range_errors_are_json(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    path = upload(api_sqlite, key).json()["url"].split("testserver", 1)[1]
    past = api_sqlite.client.get(path, headers={"Range": "bytes=99999999-"})
    assert (past.status_code, past.json()["code"]) == (416, "range_not_satisfiable")
    assert past.headers["content-range"].startswith("bytes */")
    bad = api_sqlite.client.get(path, headers={"Range": "pages=1-2"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")
    part = api_sqlite.client.get(path, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and len(part.content) == 10


def test_a_trailing_slash_is_a_json_404_not_a_redirect(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    response = api_sqlite.client.get(
        "/v2/jobs/", headers={"X-API-Key": key, "Host": "evil.example"}, follow_redirects=False
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123_X.y:z", True), ("x" * 129, False), ("a b", False), ("é", False), ("", False)],
)
def test_request_ids_are_bounded_before_echo(api_sqlite: Api, sent: str, kept: bool) -> None:
    response = api_sqlite.client.get("/healthz", headers=[("X-Request-Id", sent.encode("utf-8"))])
    echoed = response.headers["x-request-id"]
    assert (echoed == sent) is kept
    assert len(echoed) <= 128 and echoed.isascii()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=2", 2.0),
        ("wait = 2", 2.0),
        ("respond-async, wait =5", 5.0),
        ('wait="7"', 7.0),
        ("wait", 60.0),
        ("wait=600", 60.0),
        ("waiting=3", None),
        ("", None),
    ],
)
def test_prefer_wait_allows_whitespace_around_the_equals(
    header: str, seconds: float | None
) -> None:
    assert parse_prefer_wait(header) == seconds


def test_plan_upload_sizes_are_what_the_quota_counts() -> None:
    image = decode_image(astronaut_png(), max_bytes=50 << 20, max_pixels=40_000_000)
    planned = plan_upload("a", "live", image)
    assert planned.row["size"] == len(astronaut_png())


def test_the_allocator_takes_its_settings_on_linux() -> None:
    """Finding 4: freed image buffers go back to the system (castframe/allocator.py)."""
    import sys

    from castframe.allocator import bound_heap_retention

    assert bound_heap_retention() is sys.platform.startswith("linux")


def test_uploads_delete_the_sidecar_the_worker_writes() -> None:
    from castframe.dispatch.character_faces import SIDECAR_SUFFIX, sidecar_key
    from castframe.jobs.uploads import DESCRIPTOR_SIDECAR_SUFFIX, files_of

    assert SIDECAR_SUFFIX == DESCRIPTOR_SIDECAR_SUFFIX
    assert files_of(["uploads/a/b.png"]) == ["uploads/a/b.png", sidecar_key("uploads/a/b.png")]


# -- the rest of the schemas: no answer larger than its bounds --------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"ideogramParams": {"aspect_ratio": "x" * 200_000}},
        {"aspect_ratio": "y" * 200_000},
        {"ideogramParams": {"style_preset": "z" * 200_000}},
        {"ideogramParams": {"k" * 200_000: 1}},
    ],
    ids=["params-ratio", "top-ratio", "preset", "unknown-key"],
)
def test_an_error_never_echoes_a_long_value_whole(api_sqlite: Api, body: dict[str, Any]) -> None:
    """A message that quotes the client's value (an unknown ratio, an unknown key) is cut:
    the answer to a 200 KB value was 400 KB, twice the value."""
    key = api_sqlite.key(mode="test")
    response = api_sqlite.generate(key, {"model": "ideogram-v3-turbo", "prompt": "p", **body})
    assert response.status_code == 400
    assert len(response.content) < 2_000
    answer = response.json()
    assert answer["code"] == "validation_error" and "…" in json.dumps(answer, ensure_ascii=False)


def test_an_error_lists_at_most_twenty_problems(api_sqlite: Api) -> None:
    key = api_sqlite.key(mode="test")
    unknown = {f"field_{index}": 1 for index in range(5_000)}
    body = {"model": "ideogram-v3-turbo", "prompt": "p", "ideogramParams": unknown}
    response = api_sqlite.generate(key, body)
    assert response.status_code == 400 and len(response.content) < 4_000
    details = response.json()["details"]
    assert len(details) == 20 and details["ideogramParams.field_0"] == ["unknown field"]


def test_an_unresolvable_host_is_named_without_the_resolvers_errno() -> None:
    with pytest.raises(FetchError) as info:
        resolve_checked("castframe-test.invalid", 443, allow_private=False)
    assert info.value.message.startswith("cannot resolve 'castframe-test.invalid': ")
    assert "Errno" not in info.value.message and "[" not in info.value.message
