"""The v2 API core: submit, get, list, cancel, models, uploads, files, auth, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from castframe.catalog import MODELS
from castframe.errors import ERROR_CODES
from castframe.jobs.accounts import hash_key
from castframe.store.tables import api_keys
from tests.conftest import Api, body_for, open_api, truncate_all
from tests.support.http import LoopbackServer
from tests.support.images import astronaut_png, data_uri, decode, png_bytes
from tests.support.jobs import images_of
from tests.support.polling import wait_until


def test_seed_request_answers_202_with_exactly_job_id_and_status(api: Api, ref: str) -> None:
    key = api.key()
    body = {
        "prompt": "A cinematic portrait of the character in a neon city",
        "model": "ideogram-character",
        "ideogramParams": {
            "character_reference_image": ref,
            "style_type": "AUTO",
            "magic_prompt_option": "Auto",
            "negative_prompt": "blurry",
        },
    }
    response = api.generate(key, body)
    assert response.status_code == 202
    payload = response.json()
    assert set(payload) == {"jobId", "status"}
    assert payload["status"] == "QUEUED"
    job = api.wait(key, payload["jobId"])
    assert job["status"] == "COMPLETED", job
    image = images_of(job)[0]
    assert (image["width"], image["height"]) == (1024, 1024)
    assert image["contentType"] == "image/png"
    assert decode(api.file(image["url"])).shape == (1024, 1024, 3)
    assert job["progress"] == 100
    assert job["creditCost"] == 15
    assert job["input"]["ideogramParams"]["negative_prompt"] == "blurry"
    assert job["startedAt"] and job["completedAt"] and job["createdAt"].endswith("Z")


def test_job_object_has_apiframe_fields(api: Api, ref: str) -> None:
    key = api.key()
    job = api.submit_and_wait(key, body_for(ref))
    for name in (
        "id",
        "status",
        "model",
        "createdAt",
        "startedAt",
        "completedAt",
        "progress",
        "input",
        "result",
        "error",
        "creditCost",
        "webhookStatus",
    ):
        assert name in job
    assert job["model"] == "ideogram-character"
    assert job["error"] is None


def test_rendered_prompt_is_reported_after_magic_prompt(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    on = api_sqlite.submit_and_wait(key, body_for(ref, "a knight", magic_prompt_option="on"))
    off = api_sqlite.submit_and_wait(key, body_for(ref, "a knight", magic_prompt_option="OFF"))
    assert on["input"]["ideogramParams"]["magic_prompt_option"] == "On"
    assert images_of(on)[0]["prompt"].startswith("a knight, ")
    assert len(images_of(on)[0]["prompt"]) > len("a knight") + 20
    assert images_of(off)[0]["prompt"] == "a knight"


@pytest.mark.parametrize(
    ("aspect", "size"),
    [
        ("1:1", (1024, 1024)),
        ("3:4", (864, 1152)),
        ("4:3", (1152, 864)),
        ("9:16", (736, 1312)),
        ("16:9", (1312, 736)),
    ],
)
def test_aspect_ratio_sets_exact_size(
    api_sqlite: Api, ref: str, aspect: str, size: tuple[int, int]
) -> None:
    key = api_sqlite.key()
    job = api_sqlite.submit_and_wait(key, body_for(ref, aspect_ratio=aspect))
    image = images_of(job)[0]
    assert (image["width"], image["height"]) == size
    pixels = decode(api_sqlite.file(image["url"]))
    assert pixels.shape[:2] == (size[1], size[0])


def test_aspect_ratio_at_top_level_and_num_images(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    job = api_sqlite.submit_and_wait(
        key, body_for(ref, top={"aspect_ratio": "16:9", "num_images": 2})
    )
    images = images_of(job)
    assert len(images) == 2
    assert {(i["width"], i["height"]) for i in images} == {(1312, 736)}
    assert images[0]["seed"] != images[1]["seed"]
    assert job["creditCost"] == 2 * 10


INVALID_BODIES: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("missing prompt", {"prompt": None}, 400, "validation_error", "prompt"),
    ("empty prompt", {"prompt": ""}, 400, "validation_error", "prompt"),
    ("long prompt", {"prompt": "x" * 2001}, 400, "validation_error", "prompt"),
    ("unknown model", {"model": "dall-e"}, 400, "unknown_model", "model"),
    ("missing model", {"model": None}, 400, "validation_error", "model"),
    ("unknown field", {"foo": 1}, 400, "validation_error", "foo"),
    (
        "unknown param",
        {"ideogramParams.colour": "red"},
        400,
        "validation_error",
        "ideogramParams.colour",
    ),
    (
        "missing reference",
        {"ideogramParams.character_reference_image": None},
        400,
        "validation_error",
        "ideogramParams",
    ),
    (
        "reference and character",
        {"ideogramParams.character_id": "chr_x"},
        400,
        "validation_error",
        "ideogramParams",
    ),
    (
        "bad style",
        {"ideogramParams.style_type": "ANIME"},
        400,
        "validation_error",
        "ideogramParams.style_type",
    ),
    (
        "bad magic",
        {"ideogramParams.magic_prompt_option": "Maybe"},
        400,
        "validation_error",
        "ideogramParams.magic_prompt_option",
    ),
    (
        "bad speed",
        {"ideogramParams.rendering_speed": "fast"},
        400,
        "validation_error",
        "ideogramParams.rendering_speed",
    ),
    ("seed string", {"ideogramParams.seed": "7"}, 400, "validation_error", "ideogramParams.seed"),
    ("seed negative", {"ideogramParams.seed": -1}, 400, "validation_error", "ideogramParams.seed"),
    (
        "seed too big",
        {"ideogramParams.seed": 2147483648},
        400,
        "validation_error",
        "ideogramParams.seed",
    ),
    ("seed bool", {"ideogramParams.seed": True}, 400, "validation_error", "ideogramParams.seed"),
    (
        "negative not str",
        {"ideogramParams.negative_prompt": 5},
        400,
        "validation_error",
        "ideogramParams.negative_prompt",
    ),
    ("bad aspect", {"aspect_ratio": "7:5"}, 400, "validation_error", "aspect_ratio"),
    (
        "conflicting aspect",
        {"aspect_ratio": "1:1", "ideogramParams.aspect_ratio": "3:4"},
        400,
        "validation_error",
        "aspect_ratio",  # a whole-body check, under the field its message is about
    ),
    ("num_images 0", {"num_images": 0}, 400, "validation_error", "num_images"),
    ("num_images 5", {"num_images": 5}, 400, "validation_error", "num_images"),
    (
        "image without mask",
        {"ideogramParams.image": "https://example.com/a.png"},
        400,
        "validation_error",
        "ideogramParams",
    ),
    ("bad webhook event", {"webhookEvents": ["done"]}, 400, "validation_error", "webhookEvents.0"),
    (
        "ftp reference",
        {"ideogramParams.character_reference_image": "ftp://example.com/a.png"},
        400,
        "url_not_allowed",
        "ideogramParams.character_reference_image",
    ),
    (
        "private reference",
        {"ideogramParams.character_reference_image": "http://10.0.0.1/a.png"},
        400,
        "url_not_allowed",
        "ideogramParams.character_reference_image",
    ),
    (
        "broken data uri",
        {"ideogramParams.character_reference_image": "data:image/png;base64,AAAA"},
        400,
        "invalid_image",
        "ideogramParams.character_reference_image",
    ),
    (
        "unknown upload",
        {
            "ideogramParams.character_reference_image": "upload://0b9e4a52-0000-4000-8000-000000000000"
        },
        400,
        "upload_not_found",
        "ideogramParams.character_reference_image",
    ),
]


def _apply(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split(".")
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return body


@pytest.mark.parametrize(
    ("case", "changes", "status", "code", "field"),
    INVALID_BODIES,
    ids=[c[0] for c in INVALID_BODIES],
)
def test_validation_rules(
    api_no_worker: Api, case: str, changes: dict[str, Any], status: int, code: str, field: str
) -> None:
    key = api_no_worker.key()
    body = _apply(body_for("https://example.com/me.png"), changes)
    api_no_worker.services.settings.allow_private_urls = False
    response = api_no_worker.generate(key, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["code"] == code
    assert isinstance(payload["error"], str) and payload["error"]
    assert field in payload["details"], payload["details"]
    assert all(isinstance(m, str) for m in payload["details"][field])


def test_enums_accept_any_case_and_are_normalised(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    body = body_for(
        "https://example.com/me.png",
        style_type="realistic",
        magic_prompt_option="oN",
        rendering_speed="QUALITY",
    )
    response = api_no_worker.generate(key, body)
    assert response.status_code == 202, response.text
    job = api_no_worker.get_job(key, response.json()["jobId"])
    params = job["input"]["ideogramParams"]
    assert (params["style_type"], params["magic_prompt_option"], params["rendering_speed"]) == (
        "REALISTIC",
        "On",
        "quality",
    )
    assert job["creditCost"] == 20


def test_webhook_url_alias(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    body = body_for("https://example.com/me.png", top={"webhook_url": "https://example.com/h"})
    response = api_no_worker.generate(key, body)
    assert response.status_code == 202
    job = api_no_worker.get_job(key, response.json()["jobId"])
    assert job["input"]["webhookUrl"] == "https://example.com/h"


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b"prompt=x", "application/x-www-form-urlencoded", 400, "unsupported_media_type"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
    ],
)
def test_malformed_bodies(
    api_no_worker: Api, raw: bytes, content_type: str, status: int, code: str
) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post(
        "/v2/images/generate", content=raw, headers={"X-API-Key": key, "Content-Type": content_type}
    )
    assert response.status_code == status
    assert response.json()["code"] == code


def test_oversized_body_is_a_400(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    api_no_worker.services.settings.max_body_bytes = 1000
    body = body_for("https://example.com/me.png", negative_prompt="x" * 1500)
    response = api_no_worker.generate(key, body)
    assert response.status_code == 400
    assert response.json()["code"] == "payload_too_large"


def test_data_uri_reference_becomes_an_upload(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    job = api_sqlite.submit_and_wait(key, body_for(data_uri(astronaut_png())))
    assert job["status"] == "COMPLETED"
    reference = job["input"]["ideogramParams"]["character_reference_image"]
    assert reference.startswith("upload://")
    uuid.UUID(reference.removeprefix("upload://"))


def test_upload_then_reference(api: Api) -> None:
    key = api.key()
    response = api.client.post(
        "/v2/uploads",
        headers={"X-API-Key": key},
        files={"file": ("me.png", astronaut_png(), "image/png")},
    )
    assert response.status_code == 201, response.text
    upload = response.json()
    assert upload["reference"] == f"upload://{upload['id']}"
    assert (upload["width"], upload["height"]) == (512, 512)
    assert (upload["kind"], upload["contentType"]) == ("image", "image/png")
    assert upload["byteSize"] == len(astronaut_png())
    assert api.file(upload["url"]) == astronaut_png()
    for source in (upload["url"], upload["reference"]):
        job = api.submit_and_wait(key, body_for(source))
        assert job["status"] == "COMPLETED"
        assert job["input"]["ideogramParams"]["character_reference_image"] == source
    other = api.key(account="other")
    # The URL is a public URL, as Apiframe's upload URLs are: another account may use it
    # (read from storage, never fetched); the upload:// reference stays the owner's.
    shared = api.submit_and_wait(other, body_for(upload["url"]))
    assert shared["status"] == "COMPLETED", shared
    response = api.generate(other, body_for(upload["reference"]))
    assert (response.status_code, response.json()["code"]) == (400, "upload_not_found")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"GIF89a" + b"\x00" * 100, "invalid_image"),
        (b"not an image at all", "invalid_image"),
        (astronaut_png()[:2000], "invalid_image"),
    ],
)
def test_upload_rejects_bad_images(api_no_worker: Api, payload: bytes, code: str) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post(
        "/v2/uploads", headers={"X-API-Key": key}, files={"file": ("x.png", payload, "image/png")}
    )
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert "file" in response.json()["details"]


def test_upload_requires_multipart_and_file(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post("/v2/uploads", headers={"X-API-Key": key}, json={})
    assert (response.status_code, response.json()["code"]) == (400, "unsupported_media_type")
    response = api_no_worker.client.post(
        "/v2/uploads", headers={"X-API-Key": key}, files={"other": ("x.png", b"x", "image/png")}
    )
    assert response.status_code == 400
    assert response.json()["details"] == {"file": ["the multipart field `file` is missing"]}


def test_unreachable_reference_fails_job_without_charge(
    api: Api, http_server: LoopbackServer
) -> None:
    key = api.key(credits=100)
    job = api.submit_and_wait(key, body_for(http_server.url("/missing.png")))
    assert job["status"] == "FAILED"
    assert job["errorCode"] == "reference_fetch_failed"
    assert "404" in job["error"]
    assert job["creditCost"] == 0
    account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["balance"], account["held"], account["available"]) == (100, 0, 100)


def test_reference_that_is_not_an_image_fails_with_invalid_image(
    api_sqlite: Api, http_server: LoopbackServer
) -> None:
    key = api_sqlite.key()
    url = http_server.serve_bytes("/page.html", b"<html>hello</html>", "text/html")
    job = api_sqlite.submit_and_wait(key, body_for(url))
    assert job["status"] == "FAILED"
    assert job["errorCode"] == "invalid_image"


def test_auth_errors(api_no_worker: Api) -> None:
    client = api_no_worker.client
    body = body_for("https://example.com/me.png")
    missing = client.post("/v2/images/generate", json=body)
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_api_key")
    unknown = client.post("/v2/images/generate", json=body, headers={"X-API-Key": "afk_live_x"})
    assert (unknown.status_code, unknown.json()["code"]) == (401, "invalid_api_key")
    key = api_no_worker.key()
    bearer = client.post(
        "/v2/images/generate", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert bearer.status_code == 202
    from castframe.jobs import accounts

    with api_no_worker.services.db.write() as conn:
        row = accounts.find_key(conn, key)
        assert row is not None
        accounts.set_key_active(conn, row["id"], False)
    inactive = client.get("/v2/jobs", headers={"X-API-Key": key})
    assert (inactive.status_code, inactive.json()["code"]) == (403, "api_key_inactive")
    with api_no_worker.services.db.write() as conn:
        accounts.revoke_key(conn, row["id"])
    revoked = client.get("/v2/jobs", headers={"X-API-Key": key})
    assert (revoked.status_code, revoked.json()["code"]) == (401, "invalid_api_key")


def test_a_key_revoked_in_this_process_stops_working_at_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    from castframe.jobs import accounts

    with open_api(tmp_path, sqlite_url, run_worker=False, key_cache_seconds=60) as api:
        key = api.key()
        assert api.client.get("/v2/jobs", headers={"X-API-Key": key}).status_code == 200
        with api.services.db.write() as conn:
            row = accounts.find_key(conn, key)
            assert row is not None
            accounts.revoke_key(conn, row["id"])
        # Cached a moment ago for a minute, but the change was made here: forgotten at once.
        revoked = api.client.get("/v2/jobs", headers={"X-API-Key": key})
        assert (revoked.status_code, revoked.json()["code"]) == (401, "invalid_api_key")


def test_key_cache_bounds_how_long_a_key_changed_elsewhere_keeps_working(
    tmp_path: Path, sqlite_url: str
) -> None:
    """On SQLite nothing announces another process's change: the TTL bounds it."""
    with open_api(tmp_path, sqlite_url, run_worker=False, key_cache_seconds=0.5) as api:
        key, fresh = api.key(), api.key("fresh")
        assert api.client.get("/v2/jobs", headers={"X-API-Key": key}).status_code == 200
        with api.services.db.write() as conn:  # what another process's revocation writes
            conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.key_hash == hash_key(key))
                .values(revoked_at=time.time())
            )
        # Revoked in the database, but this process looked it up a moment ago.
        assert api.client.get("/v2/jobs", headers={"X-API-Key": key}).status_code == 200
        assert api.client.get("/v2/jobs", headers={"X-API-Key": fresh}).status_code == 200
        time.sleep(0.6)
        expired = api.client.get("/v2/jobs", headers={"X-API-Key": key})
        assert (expired.status_code, expired.json()["code"]) == (401, "invalid_api_key")
        # Failures are never cached: the next lookup still reads the database.
        assert api.client.get("/v2/jobs", headers={"X-API-Key": key}).status_code == 401


def test_a_key_revoked_by_the_cli_stops_working_everywhere_within_moments(
    tmp_path: Path, postgres_url: str
) -> None:
    """On PostgreSQL the CLI's revocation (another process) clears every API's cache."""
    truncate_all(postgres_url)
    with open_api(tmp_path, postgres_url, run_worker=False, key_cache_seconds=600) as api:
        key = api.key()
        # The listener is up once its first (re)connect has run its handlers.
        wait_until(lambda: api.services.listener is not None, timeout=10)
        time.sleep(0.5)
        assert api.client.get("/v2/jobs", headers={"X-API-Key": key}).status_code == 200
        subprocess.run(
            [sys.executable, "-m", "castframe.cli", "keys", "revoke", key],
            env={**os.environ, "CASTFRAME_DATABASE_URL": postgres_url},
            check=True,
            capture_output=True,
        )
        started = time.monotonic()
        wait_until(
            lambda: api.client.get("/v2/jobs", headers={"X-API-Key": key}).status_code == 401,
            timeout=10,
        )
        assert time.monotonic() - started < 5  # the notification, not the 600 s TTL


def test_accounts_are_isolated(api_no_worker: Api) -> None:
    alice, bob = api_no_worker.key("alice"), api_no_worker.key("bob")
    job_id = api_no_worker.generate(alice, body_for("https://example.com/a.png")).json()["jobId"]
    client = api_no_worker.client
    for method, path in (
        ("GET", f"/v2/jobs/{job_id}"),
        ("POST", f"/v2/jobs/{job_id}/cancel"),
        ("GET", f"/v2/jobs/{job_id}/webhooks"),
    ):
        response = client.request(method, path, headers={"X-API-Key": bob})
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
        assert job_id not in response.text or "no job" in response.json()["error"]
    assert client.get("/v2/jobs", headers={"X-API-Key": bob}).json()["jobs"] == []
    assert len(client.get("/v2/jobs", headers={"X-API-Key": alice}).json()["jobs"]) == 1


def test_test_and_live_jobs_are_invisible_to_each_other(api_no_worker: Api) -> None:
    live = api_no_worker.key("acme", "live")
    test = api_no_worker.key("acme", "test")
    job_id = api_no_worker.generate(live, body_for("https://example.com/a.png")).json()["jobId"]
    assert (
        api_no_worker.client.get(f"/v2/jobs/{job_id}", headers={"X-API-Key": test}).status_code
        == 404
    )
    assert api_no_worker.client.get("/v2/jobs", headers={"X-API-Key": test}).json()["jobs"] == []


def test_list_jobs_paginates_newest_first_with_filters(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    ids = [
        api_no_worker.generate(key, body_for("https://example.com/a.png")).json()["jobId"]
        for _ in range(5)
    ]
    client = api_no_worker.client
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v2/jobs", params=params, headers={"X-API-Key": key}).json()
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        assert page["hasMore"] == (page["nextCursor"] is not None)
        if not page["hasMore"]:
            break
        cursor = page["nextCursor"]
    assert seen == list(reversed(ids))
    assert pages == 3
    client.post(f"/v2/jobs/{ids[0]}/cancel", headers={"X-API-Key": key})
    canceled = client.get("/v2/jobs", params={"status": "CANCELLED"}, headers={"X-API-Key": key})
    assert [j["id"] for j in canceled.json()["jobs"]] == [ids[0]]
    by_model = client.get("/v2/jobs", params={"model": "other"}, headers={"X-API-Key": key})
    assert by_model.json()["jobs"] == []
    for params in ({"limit": 0}, {"limit": 101}, {"status": "DONE"}, {"cursor": "!!"}):
        bad = client.get("/v2/jobs", params=params, headers={"X-API-Key": key})
        assert bad.status_code == 400, params
        assert bad.json()["code"] == "invalid_request"


def test_cancel_queued_job_releases_hold(api_no_worker: Api) -> None:
    key = api_no_worker.key(credits=100)
    client = api_no_worker.client
    job_id = api_no_worker.generate(key, body_for("https://example.com/a.png")).json()["jobId"]
    assert client.get("/v2/account", headers={"X-API-Key": key}).json()["held"] == 10
    response = client.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "CANCELLED"
    assert job["errorCode"] == "cancelled"
    assert job["error"] == "cancelled by the owner"
    assert job["creditCost"] == 0
    account = client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["held"], account["available"]) == (0, 100)
    again = client.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
    assert (again.status_code, again.json()["code"]) == (409, "job_not_cancelable")


def test_models_catalog(api_no_worker: Api) -> None:
    models = api_no_worker.client.get("/v2/models").json()["models"]
    assert [m["id"] for m in models] == list(MODELS)
    # Zero setup: every model with no key; the image tools on their real CPU models.
    tools = {
        m["id"]
        for m in models
        if m["operation"] in ("/v2/images/background-remove", "/v2/images/upscale")
    }
    assert {m["engine"] for m in models if m["id"] not in tools} == {"sandbox"}
    assert {m["engine"] for m in models if m["id"] in tools} == {"tools"}
    model = api_no_worker.client.get("/v2/models/ideogram-character").json()
    assert model["pricing"]["tiers"] == {"turbo": 10, "default": 15, "quality": 20}
    assert (model["costMin"], model["costMax"]) == (10, 80)
    props = model["schema"]["properties"]
    assert {"prompt", "model", "ideogramParams", "aspect_ratio", "webhookUrl"} <= set(props)
    missing = api_no_worker.client.get("/v2/models/nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_signed_urls_expire_and_reject_tampering(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    job = api_sqlite.submit_and_wait(key, body_for(ref))
    url = images_of(job)[0]["url"]
    assert url.startswith("http://testserver/v2/files/outputs/")
    assert api_sqlite.client.get(url).status_code == 200
    tampered = url.replace("signature=", "signature=0")
    response = api_sqlite.client.get(tampered)
    assert (response.status_code, response.json()["code"]) == (403, "invalid_signature")
    api_sqlite.services.settings.output_url_ttl = 1
    short = images_of(api_sqlite.get_job(key, job["id"]))[0]["url"]
    time.sleep(2.1)
    expired = api_sqlite.client.get(short)
    assert (expired.status_code, expired.json()["code"]) == (410, "url_expired")


def test_health_ready_openapi_and_unknown_routes(api_no_worker: Api) -> None:
    client = api_no_worker.client
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    # No worker runs beside this API: every served model waits for one.
    assert "ideogram-v3-turbo" in health["modelsWithoutWorker"]
    assert client.get("/readyz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert "/v2/images/generate" in spec["paths"]
    assert "requestBody" in spec["paths"]["/v2/images/generate"]["post"]
    assert client.get("/docs").status_code == 200
    nowhere = client.get("/v2/nowhere")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not_found")
    wrong = client.delete("/v2/images/generate")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


def test_every_error_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "errors.md").read_text()
    for code in ERROR_CODES:
        assert f"`{code}`" in doc, code


def test_output_png_is_a_real_picture(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    job = api_sqlite.submit_and_wait(key, body_for(ref))
    pixels = decode(api_sqlite.file(images_of(job)[0]["url"]))
    assert pixels.std() > 20  # not blank
    assert len({tuple(p) for p in pixels[::16, ::16].reshape(-1, 3)}) > 200  # not flat
    assert png_bytes(pixels)[:8] == b"\x89PNG\r\n\x1a\n"
