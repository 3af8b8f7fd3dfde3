"""The ideogram engine through the real API and worker, against a fake Ideogram server."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from castframe.catalog import MODELS
from castframe.config import Settings
from castframe.engines.router import route_engine
from tests.conftest import Api, body_for, open_api
from tests.support.fake_ideogram import FakeIdeogram
from tests.support.http import LoopbackServer
from tests.support.images import astronaut_png, edit_pair, png_bytes
from tests.support.jobs import images_of
from tests.support.polling import wait_until


def test_routing_rules() -> None:
    assert route_engine(MODELS["ideogram-character"], "live", Settings()) == "sandbox"
    keyed = Settings(ideogram_api_key="k")
    assert route_engine(MODELS["ideogram-character"], "live", keyed) == "ideogram"
    assert route_engine(MODELS["ideogram-character"], "test", keyed) == "sandbox"
    forced = Settings(ideogram_api_key="k", routes="ideogram-character=sandbox")
    assert route_engine(MODELS["ideogram-character"], "live", forced) == "sandbox"


def test_generate_maps_every_parameter_and_stores_results(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, ref: str
) -> None:
    key = ideogram_api.key(credits=1000)
    body = body_for(
        ref,
        "a detective in a rainy street",
        style_type="realistic",
        magic_prompt_option="on",
        rendering_speed="turbo",
        seed=77,
        negative_prompt="blurry",
        top={"aspect_ratio": "3:4", "num_images": 2},
    )
    job = ideogram_api.submit_and_wait(key, body)
    assert job["status"] == "COMPLETED", job
    [call] = fake_ideogram.calls
    assert call.path == "/v1/ideogram-v3/generate"
    assert call.fields == {
        "prompt": "a detective in a rainy street",
        "rendering_speed": "TURBO",
        "magic_prompt": "ON",
        "style_type": "REALISTIC",
        "seed": "77",
        "num_images": "2",
        "aspect_ratio": "3x4",
        "negative_prompt": "blurry",
    }
    assert call.files["character_reference_images"] == [astronaut_png()]
    assert job["engine"] == "ideogram"
    images = images_of(job)
    assert [i["seed"] for i in images] == [77, 78]
    assert all(
        i["prompt"].endswith("rewritten by magic prompt with cinematic light") for i in images
    )
    assert {(i["width"], i["height"]) for i in images} == {(864, 1152)}
    assert images[0]["metadata"]["isImageSafe"] is True
    assert job["result"]["metadata"]["upstreamLatencyMs"] > 0
    # Results live in Castframe's storage, not at Ideogram's expiring links.
    assert images[0]["url"].startswith("http://testserver/v2/files/outputs/")
    pixels = np.asarray(Image.open(io.BytesIO(ideogram_api.file(images[0]["url"]))))
    assert pixels.shape == (1152, 864, 3)
    assert job["creditCost"] == 20


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"style_type": "DESIGN"}, "ideogramParams.style_type"),
        ({"style_preset": "OIL_PAINTING"}, "ideogramParams.style_preset"),
        (
            {"style_reference_images": ["https://example.com/look.png"]},
            "ideogramParams.style_reference_images",
        ),
        # Ideogram's inpaint route has no negative prompt: refused, not silently dropped.
        (
            {
                "image": "https://example.com/scene.png",
                "mask": "https://example.com/mask.png",
                "negative_prompt": "text",
            },
            "ideogramParams.negative_prompt",
        ),
    ],
)
def test_what_ideogram_refuses_with_a_reference_is_a_400_naming_the_engine(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, params: dict[str, Any], field: str
) -> None:
    live = ideogram_api.key()
    response = ideogram_api.generate(live, body_for("https://example.com/a.png", **params))
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "unsupported_parameter"
    assert "ideogram engine" in payload["error"]
    assert list(payload["details"]) == [field]
    # Test keys run on the sandbox, which honours all of them.
    test = ideogram_api.key(mode="test")
    assert (
        ideogram_api.generate(test, body_for("https://example.com/a.png", **params)).status_code
        == 202
    )
    assert fake_ideogram.calls == []


def test_resolution_is_sent_instead_of_an_aspect_ratio(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, ref: str
) -> None:
    key = ideogram_api.key()
    job = ideogram_api.submit_and_wait(key, body_for(ref, resolution="1280x800"))
    assert job["status"] == "COMPLETED", job
    [call] = fake_ideogram.calls
    assert call.fields["resolution"] == "1280x800"
    assert "aspect_ratio" not in call.fields


def test_edit_uses_the_inpaint_route_with_image_mask_and_reference(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, http_server: LoopbackServer, ref: str
) -> None:
    scene, mask = edit_pair()
    image_url = http_server.serve_bytes("/scene.png", png_bytes(scene))
    mask_url = http_server.serve_bytes("/mask.png", png_bytes(mask))
    key = ideogram_api.key()
    job = ideogram_api.submit_and_wait(
        key, body_for(ref, "put her at the window", image=image_url, mask=mask_url, seed=5)
    )
    assert job["status"] == "COMPLETED", job
    [call] = fake_ideogram.calls
    # Ideogram 3.0's inpaint route, never its legacy /v1/ideogram-v3/edit.
    assert call.path == "/v1/ideogram-v3/inpaint"
    assert call.fields == {
        "prompt": "put her at the window",
        "rendering_speed": "TURBO",
        "style_type": "AUTO",
        "seed": "5",
        "num_images": "1",
    }
    assert sorted(call.files) == ["character_reference_images", "image", "mask"]
    assert call.files["character_reference_images"] == [astronaut_png()]
    sent_image = np.asarray(Image.open(io.BytesIO(call.files["image"][0])).convert("RGB"))
    assert np.array_equal(sent_image, scene)
    sent_mask = np.asarray(Image.open(io.BytesIO(call.files["mask"][0])).convert("L"))
    assert sent_mask.shape == (480, 640)
    assert np.array_equal(sent_mask < 128, mask[..., 0] < 128)  # black = edit, as sent
    assert (images_of(job)[0]["width"], images_of(job)[0]["height"]) == (640, 480)


@pytest.mark.parametrize(
    ("script", "code", "charged"),
    [
        (["400"], "upstream_rejected", 0),
        (["422-safety"], "content_filtered", 0),
        (["unsafe"], "content_filtered", 0),
        (["500", "500", "500", "500"], "upstream_unavailable", 0),
    ],
)
def test_upstream_failures_map_to_job_errors(
    ideogram_api: Api,
    fake_ideogram: FakeIdeogram,
    ref: str,
    script: list[str],
    code: str,
    charged: int,
) -> None:
    fake_ideogram.script.extend(script)
    key = ideogram_api.key(credits=100)
    job = ideogram_api.submit_and_wait(key, body_for(ref))
    assert job["status"] == "FAILED"
    assert job["errorCode"] == code
    assert job["creditCost"] == charged
    if code == "upstream_rejected":
        assert "Prompt is too long" in job["error"]
    account = ideogram_api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["balance"], account["held"]) == (100, 0)


def test_unsafe_images_among_safe_ones_are_dropped_and_not_charged(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, ref: str
) -> None:
    fake_ideogram.script.append("half-unsafe")
    key = ideogram_api.key(credits=100)
    job = ideogram_api.submit_and_wait(key, body_for(ref, top={"num_images": 4}))
    assert job["status"] == "COMPLETED"
    assert len(images_of(job)) == 2
    assert job["result"]["metadata"]["withheldUnsafe"] == 2
    assert job["creditCost"] == 20  # 2 of 4 turbo images


def test_429_is_retried_after_retry_after(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, ref: str
) -> None:
    fake_ideogram.script.extend(["429:1", "ok"])
    key = ideogram_api.key()
    job = ideogram_api.submit_and_wait(key, body_for(ref))
    assert job["status"] == "COMPLETED"
    assert len(fake_ideogram.calls) == 2
    assert fake_ideogram.calls[1].at - fake_ideogram.calls[0].at >= 1.0


def test_read_timeout_is_retried_at_most_once(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, ref: str
) -> None:
    fake_ideogram.script.extend(["slow:4", "slow:4", "ok"])
    key = ideogram_api.key()
    job = ideogram_api.submit_and_wait(key, body_for(ref))
    assert job["status"] == "FAILED"
    assert job["errorCode"] == "upstream_unavailable"
    assert len(fake_ideogram.calls) == 2


def test_wrong_operator_key_is_engine_misconfigured(
    tmp_path: Path,
    sqlite_url: str,
    fake_ideogram: FakeIdeogram,
    ref: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with open_api(
        tmp_path, sqlite_url, ideogram_api_key="wrong", ideogram_base_url=fake_ideogram.base_url
    ) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(ref))
        assert job["status"] == "FAILED"
        assert job["errorCode"] == "engine_misconfigured"
        assert job["creditCost"] == 0
    assert any("REJECTED THE OPERATOR'S API KEY" in r.message for r in caplog.records)


def test_canceled_job_never_calls_upstream(
    tmp_path: Path, sqlite_url: str, fake_ideogram: FakeIdeogram, ref: str
) -> None:
    fake_ideogram.script.extend(["slow:2"])
    with open_api(
        tmp_path,
        sqlite_url,
        ideogram_api_key=fake_ideogram.api_key,
        ideogram_base_url=fake_ideogram.base_url,
        ideogram_concurrency=1,
        ideogram_timeout=10.0,
    ) as api:
        key = api.key()
        first = api.generate(key, body_for(ref)).json()["jobId"]
        wait_until(lambda: len(fake_ideogram.calls) == 1, 10)
        second = api.generate(key, body_for(ref)).json()["jobId"]
        wait_until(lambda: api.get_job(key, second)["status"] == "PROCESSING", 10)
        api.client.post(f"/v2/jobs/{second}/cancel", headers={"X-API-Key": key})
        assert api.wait(key, second)["status"] == "CANCELLED"
        assert api.wait(key, first)["status"] == "COMPLETED"
        time.sleep(0.5)
        assert len(fake_ideogram.calls) == 1


def test_fake_rejects_what_ideogram_rejects(fake_ideogram: FakeIdeogram) -> None:
    """The fake is only useful if it is strict: check its refusals directly."""
    import httpx

    url = fake_ideogram.base_url + "/v1/ideogram-v3/generate"
    files = {"character_reference_images": ("r.png", astronaut_png(), "image/png")}
    ok = {"prompt": "p", "rendering_speed": "TURBO", "style_type": "AUTO"}
    assert httpx.post(url, data=ok, files=files).status_code == 401  # no Api-Key
    assert (
        httpx.post(
            url, data=ok, files=files, headers={"Authorization": f"Bearer {fake_ideogram.api_key}"}
        ).status_code
        == 401
    )
    headers = {"Api-Key": fake_ideogram.api_key}
    for bad in (
        {"prompt": "p", "rendering_speed": "turbo", "style_type": "AUTO"},
        {"prompt": "p", "aspect_ratio": "1:1", "style_type": "AUTO"},
        {"prompt": "p", "magic_prompt_option": "ON", "style_type": "AUTO"},
        {"prompt": "p", "style_type": "DESIGN"},
        {"prompt": "p"},  # GENERAL, the default style, is refused with a character
        {"rendering_speed": "TURBO", "style_type": "AUTO"},
    ):
        assert httpx.post(url, data=bad, files=files, headers=headers).status_code == 400, bad
    good = httpx.post(url, data=ok, files=files, headers=headers)
    assert good.status_code == 200
    item = good.json()["data"][0]
    assert set(item) == {"url", "prompt", "resolution", "is_image_safe", "seed", "style_type"}
    assert httpx.get(item["url"]).status_code == 200
    # The legacy 3.0 edit route is to be removed: the fake does not serve it.
    legacy = httpx.post(
        fake_ideogram.base_url + "/v1/ideogram-v3/edit", data=ok, files=files, headers=headers
    )
    assert legacy.status_code == 404


def test_an_upstream_trickling_its_headers_is_cut_at_the_call_deadline(
    ideogram_api: Api, fake_ideogram: FakeIdeogram, ref: str
) -> None:
    """Ideogram answering 200 and then one header byte every 0.25 s never trips httpx's
    per-read timeout: the call's one deadline (ideogram_timeout, 3 s here) cuts it, and it
    counts as a timeout (retried once, as the upstream may have billed)."""
    fake_ideogram.script.extend(["trickle:40", "trickle:40", "ok"])
    key = ideogram_api.key()
    job_id = ideogram_api.generate(key, body_for(ref)).json()["jobId"]
    job = ideogram_api.wait(key, job_id, timeout=30)
    assert (job["status"], job["errorCode"]) == ("FAILED", "upstream_unavailable")
    assert "timed out twice" in job["error"]
    assert len(fake_ideogram.calls) == 2
