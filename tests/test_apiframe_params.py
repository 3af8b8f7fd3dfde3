"""Apiframe's ideogram-character parameters, upload URLs and job queries, through the API."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from castframe.catalog import MODELS
from castframe.catalog.ideogram_params import ASPECT_SIZES, RESOLUTIONS, STYLE_PRESETS
from castframe.engines.open_weights import families
from castframe.engines.router import check_params
from tests.conftest import PG_ADMIN_URL, Api, body_for, make_settings, open_api
from tests.support.images import astronaut_png, decode, edit_pair, png_bytes
from tests.support.jobs import images_of


def upload(api: Api, key: str, raw: bytes) -> dict[str, Any]:
    response = api.client.post(
        "/v2/uploads", headers={"X-API-Key": key}, files={"file": ("f.png", raw, "image/png")}
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refused(api: Api, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.generate(key, body)
    assert response.status_code == 400, response.text
    payload: dict[str, Any] = response.json()
    return payload


@pytest.mark.parametrize("ratio", sorted(ASPECT_SIZES))
def test_every_ideogram_aspect_ratio_renders_at_ideograms_size(
    api_sqlite: Api, ref: str, ratio: str
) -> None:
    key = api_sqlite.key()
    # Ideogram's own spelling (16x9) and Castframe's (16:9) are the same ratio.
    spelled = ratio.replace(":", "x") if ratio.startswith("1") else ratio
    job = api_sqlite.submit_and_wait(
        key, body_for(ref, aspect_ratio=spelled, rendering_speed="turbo")
    )
    assert job["status"] == "COMPLETED", job
    width, height = ASPECT_SIZES[ratio]
    [image] = images_of(job)
    assert (image["width"], image["height"]) == (width, height)
    assert decode(api_sqlite.file(image["url"])).shape[:2] == (height, width)
    assert job["input"]["ideogramParams"]["aspect_ratio"] == ratio


def test_aspect_sizes_are_ideograms_resolutions() -> None:
    assert len(ASPECT_SIZES) == 15 and len(RESOLUTIONS) == 69
    for width, height in ASPECT_SIZES.values():
        assert f"{width}x{height}" in RESOLUTIONS


def test_resolution_sets_the_exact_size(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    job = api_sqlite.submit_and_wait(key, body_for(ref, resolution="1536x640"))
    [image] = images_of(job)
    assert (image["width"], image["height"]) == (1536, 640)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"resolution": "1000x1000"}, "ideogramParams.resolution"),
        ({"resolution": "1024x1024", "aspect_ratio": "1:1"}, "ideogramParams"),
        ({"aspect_ratio": "7:5"}, "ideogramParams.aspect_ratio"),
        ({"style_preset": "NOT_A_PRESET"}, "ideogramParams.style_preset"),
        ({"style_reference_images": []}, "ideogramParams.style_reference_images"),
        (
            {"style_reference_images": ["https://example.com/s.png"] * 4},
            "ideogramParams.style_reference_images",
        ),
        (
            {"style_reference_images": "https://example.com/s.png"},
            "ideogramParams.style_reference_images",
        ),
    ],
)
def test_bad_new_params_are_400_with_the_field(
    api_no_worker: Api, params: dict[str, Any], field: str
) -> None:
    key = api_no_worker.key()
    payload = refused(api_no_worker, key, body_for("https://example.com/me.png", **params))
    assert payload["code"] == "validation_error"
    assert field in payload["details"], payload["details"]


def test_resolution_does_not_apply_to_edits(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    body = body_for(
        "https://example.com/me.png",
        image="https://example.com/scene.png",
        mask="https://example.com/mask.png",
        resolution="1024x1024",
    )
    assert "resolution" in refused(api_no_worker, key, body)["error"]


def test_style_preset_changes_the_sandbox_look_and_is_normalised(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    plain = api_sqlite.submit_and_wait(key, body_for(ref, seed=5, style_type="REALISTIC"))
    preset = api_sqlite.submit_and_wait(
        key, body_for(ref, seed=5, style_type="REALISTIC", style_preset="flat_vector")
    )
    assert preset["input"]["ideogramParams"]["style_preset"] == "FLAT_VECTOR"
    [with_preset], [without] = images_of(preset), images_of(plain)
    assert with_preset["metadata"]["stylePreset"] == "FLAT_VECTOR"
    assert with_preset["metadata"]["style"] == "DESIGN"  # "flat", "vector": the poster look
    assert without["metadata"]["style"] == "REALISTIC"
    assert api_sqlite.file(with_preset["url"]) != api_sqlite.file(without["url"])
    assert "WATERCOLOR" in STYLE_PRESETS


def test_style_references_give_the_sandbox_output_their_palette(api_sqlite: Api, ref: str) -> None:
    key = api_sqlite.key()
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 220
    red[..., 1:] = 30
    style = upload(api_sqlite, key, png_bytes(red))
    plain = api_sqlite.submit_and_wait(key, body_for(ref, seed=9))
    styled = api_sqlite.submit_and_wait(
        key, body_for(ref, seed=9, style_reference_images=[style["url"], style["url"]])
    )
    assert styled["status"] == "COMPLETED", styled
    assert styled["input"]["ideogramParams"]["style_reference_images"] == [style["url"]] * 2
    [before], [after] = images_of(plain), images_of(styled)
    assert after["metadata"]["styleReferences"] == 2
    mean_before = decode(api_sqlite.file(before["url"])).reshape(-1, 3).mean(axis=0)
    mean_after = decode(api_sqlite.file(after["url"])).reshape(-1, 3).mean(axis=0)
    # Redder than without the reference, and closer to it.
    assert mean_after[0] - mean_after[2] > mean_before[0] - mean_before[2] + 20
    assert np.abs(mean_after - red[0, 0]).sum() < np.abs(mean_before - red[0, 0]).sum()


def test_engines_name_themselves_when_they_refuse_a_parameter(tmp_path: Path) -> None:
    params = {
        "character_reference_image": "upload://y",
        "style_type": "AUTO",
        "style_preset": "WATERCOLOR",
        "style_reference_images": ["upload://x"],
        "negative_prompt": "blurry",
    }
    settings = make_settings(tmp_path, "sqlite://")
    character = MODELS["ideogram-character"]
    ideogram = dict(check_params("ideogram", character, params, settings))
    assert set(ideogram) == {
        "ideogramParams.style_preset",
        "ideogramParams.style_reference_images",
    }
    assert all("ideogram engine" in message for message in ideogram.values())
    assert check_params("sandbox", character, params, settings) == []
    # diffusers: no style images on any family; a negative prompt needs true CFG.
    klein = dict(families.check_params(params, families.FLUX2_KLEIN))
    assert set(klein) == {
        "style_reference_images",
        "negative_prompt",
    }
    assert all("diffusers engine" in message for message in klein.values())
    qwen = dict(families.check_params(params, families.QWEN_IMAGE_EDIT))
    assert list(qwen) == ["style_reference_images"]
    lightning = families.check_params(params, families.QWEN_IMAGE_EDIT, few_step=True)
    assert "step-distilled" in dict(lightning)["negative_prompt"]


def test_upload_url_works_on_a_locked_down_server_at_a_private_address(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The upload's URL is read from storage: no fetch to the private address happens."""
    with open_api(
        tmp_path, sqlite_url, allow_private_urls=False, public_url="http://10.20.30.40:8000"
    ) as api:
        key = api.key()
        answer = upload(api, key, astronaut_png())
        assert answer["url"].startswith("http://10.20.30.40:8000/v2/files/uploads/")
        uuid.UUID(answer["id"])
        scene, mask = edit_pair()
        image, mask_upload = upload(api, key, png_bytes(scene)), upload(api, key, png_bytes(mask))
        job = api.submit_and_wait(
            key, body_for(answer["url"], image=image["url"], mask=mask_upload["url"])
        )
        assert job["status"] == "COMPLETED", job
        [output] = images_of(job)
        assert (output["width"], output["height"]) == (scene.shape[1], scene.shape[0])
        # A URL of that private address that this server did not sign stays refused.
        forged = answer["url"].split("?")[0] + "?expires=9999999999&signature=00"
        assert refused(api, key, body_for(forged))["code"] == "url_not_allowed"


def test_an_expired_upload_url_is_refused_at_submission(tmp_path: Path, sqlite_url: str) -> None:
    with open_api(tmp_path, sqlite_url, run_worker=False, upload_retention_hours=1 / 3600) as api:
        key = api.key()
        answer = upload(api, key, astronaut_png())
        assert api.generate(key, body_for(answer["url"])).status_code == 202
        time.sleep(2.1)
        payload = refused(api, key, body_for(answer["url"]))
        assert payload["code"] == "upload_expired"
        assert list(payload["details"]) == ["ideogramParams.character_reference_image"]


def test_job_ids_must_be_uuids(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    headers = {"X-API-Key": key}
    for path in ("/v2/jobs/not-a-uuid", "/v2/jobs/123", "/v2/jobs/not-a-uuid/cancel"):
        method = "POST" if path.endswith("cancel") else "GET"
        response = api_no_worker.client.request(method, path, headers=headers)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_request"), path
        assert "id" in response.json()["details"]
    unknown = api_no_worker.client.get(f"/v2/jobs/{uuid.uuid4()}", headers=headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")


def test_list_scope_search_and_include_models(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    headers = {"X-API-Key": key}
    client = api_no_worker.client
    ids = [
        api_no_worker.generate(key, body_for("https://example.com/a.png")).json()["jobId"]
        for _ in range(3)
    ]
    plain = client.get("/v2/jobs", headers=headers).json()
    assert "models" not in plain
    assert all(job["expired"] is False for job in plain["jobs"])
    for scope in ("user", "team"):
        page = client.get("/v2/jobs", params={"scope": scope}, headers=headers).json()
        assert [job["id"] for job in page["jobs"]] == list(reversed(ids))
    found = client.get("/v2/jobs", params={"search": ids[1].upper()}, headers=headers).json()
    assert [job["id"] for job in found["jobs"]] == [ids[1]]
    models = client.get("/v2/jobs", params={"include_models": "true"}, headers=headers).json()
    assert models["models"] == ["ideogram-character"]
    other = api_no_worker.key(account="other")
    empty = client.get("/v2/jobs", params={"include_models": "true"}, headers={"X-API-Key": other})
    assert empty.json()["models"] == [] and empty.json()["jobs"] == []
    for params in ({"scope": "everyone"}, {"search": "abc"}, {"include_models": "yes"}):
        bad = client.get("/v2/jobs", params=params, headers=headers)
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request"), params
        assert list(bad.json()["details"]) == list(params), bad.json()


def test_me_and_models_in_apiframes_shape(api_no_worker: Api) -> None:
    key = api_no_worker.key(account="Acme Studio")
    me = api_no_worker.client.get("/v2/me", headers={"X-API-Key": key}).json()
    assert me["user"]["email"] == "acme-studio@castframe.local"
    assert me["user"]["role"] == "OWNER"
    assert me["team"]["credits"] == 100_000 and me["team"]["customerId"] is None
    assert key.startswith(me["apiKey"]["prefix"])
    catalog = api_no_worker.client.get("/v2/models", params={"modality": "image"}).json()
    [entry] = [model for model in catalog["models"] if model["id"] == "ideogram-character"]
    assert (entry["label"], entry["modality"], entry["pricingMode"]) == (
        "Ideogram Character",
        "image",
        "per-output",
    )
    assert (entry["costMin"], entry["costMax"]) == (10, 80)
    assert api_no_worker.client.get("/v2/models", params={"modality": "video"}).json() == {
        "models": []
    }
    bad = api_no_worker.client.get("/v2/models", params={"modality": "text"})
    assert (bad.status_code, list(bad.json()["details"])) == (400, ["modality"])


def test_an_unreachable_database_is_a_503_with_retry_after(tmp_path: Path) -> None:
    """PostgreSQL refusing connections (and dropping the open ones): every endpoint that
    needs it answers 503 not_ready with Retry-After, then recovers by itself."""
    name = f"castframe_outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        with (
            open_api(tmp_path, url, run_worker=False) as api,
            psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin,
        ):
            key = api.key()
            job_id = api.generate(key, body_for("https://example.com/a.png")).json()["jobId"]
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            api.services.key_cache.clear()
            requests = [
                ("GET", f"/v2/jobs/{job_id}", None),
                ("GET", "/v2/jobs", None),
                ("GET", "/v2/me", None),
                ("POST", "/v2/images/generate", body_for("https://example.com/a.png")),
            ]
            for method, path, body in requests:
                response = api.client.request(method, path, json=body, headers={"X-API-Key": key})
                assert response.status_code == 503, (path, response.text)
                assert response.json()["code"] == "not_ready"
                assert int(response.headers["Retry-After"]) > 0
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            recovered = [
                api.client.get(f"/v2/jobs/{job_id}", headers={"X-API-Key": key}).status_code
                for _ in range(12)
            ]
            assert recovered[-1] == 200, recovered
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
