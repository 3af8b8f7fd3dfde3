"""Wait mode, SSE, the Python SDK and the `generate`/`jobs` commands."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from castframe.client import AsyncCastframe, Castframe, CastframeError
from castframe.client.common import generate_body
from tests.conftest import Api, body_for
from tests.support.images import astronaut, astronaut_png, data_uri


def test_prefer_wait_returns_the_finished_job(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    response = api_sqlite.generate(key, body_for(data_uri(astronaut_png())), Prefer="wait=30")
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=30"
    job = response.json()
    assert job["status"] == "COMPLETED" and job["result"]["images"]


def test_prefer_wait_times_out_with_202_and_the_job(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    response = api_no_worker.generate(
        key, body_for("https://example.com/a.png"), Prefer="respond-async, wait=1"
    )
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "QUEUED" and "id" in job
    assert response.headers["location"] == f"/v2/jobs/{job['id']}"
    plain = api_no_worker.generate(key, body_for("https://example.com/a.png"))
    assert set(plain.json()) == {"jobId", "status"}


def test_sse_streams_progress_until_the_end(api_sqlite: Api) -> None:
    key = api_sqlite.key()
    job_id = api_sqlite.generate(
        key, body_for(data_uri(astronaut_png()), rendering_speed="quality", top={"num_images": 3})
    ).json()["jobId"]
    events = []
    with api_sqlite.client.stream(
        "GET", f"/v2/jobs/{job_id}/events", headers={"X-API-Key": key}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "job":
                events.append(json.loads(line[6:]))
            elif line.startswith("data: ") and kind == "end":
                break
    assert events[-1]["status"] == "COMPLETED"
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and len(set(progress)) >= 2
    other = api_sqlite.key("other")
    assert (
        api_sqlite.client.get(f"/v2/jobs/{job_id}/events", headers={"X-API-Key": other}).status_code
        == 404
    )


def test_generate_body_puts_options_where_the_api_expects_them() -> None:
    """Apiframe's body: only prompt, model and the webhook options outside ideogramParams."""
    body = generate_body(
        "p",
        "ideogram-character",
        "https://example.com/me.png",
        {
            "aspect_ratio": "3:4",
            "num_images": 2,
            "seed": 3,
            "webhook_url": "https://h",
            "webhook_events": ["completed"],
            "style_type": "REALISTIC",
            "negative_prompt": None,
        },
    )
    assert body == {
        "prompt": "p",
        "model": "ideogram-character",
        "webhookUrl": "https://h",
        "webhookEvents": ["completed"],
        "ideogramParams": {
            "character_reference_image": "https://example.com/me.png",
            "aspect_ratio": "3:4",
            "num_images": 2,
            "seed": 3,
            "style_type": "REALISTIC",
        },
    }


class ThroughTestClient(httpx.BaseTransport):
    """An httpx transport that sends every request through the app's TestClient.

    (Starlette's TestClient may be built on httpx2; its own transport cannot be handed to an
    httpx client, so requests are re-issued and answers copied.)"""

    def __init__(self, api: Api) -> None:
        self.api = api

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.api.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(
            answer.status_code, headers=list(answer.headers.items()), content=answer.content
        )


class Flaky(httpx.BaseTransport):
    """Wraps a real transport: the first N submissions get a 503 after being processed."""

    def __init__(self, inner: httpx.BaseTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.keys: list[str] = []
        self.bodies: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/v2/images/generate":
            self.keys.append(request.headers["idempotency-key"])
            self.bodies.append(json.loads(request.content))
            if self.failures > 0:
                self.failures -= 1
                response.read()
                return httpx.Response(
                    503,
                    headers={"Retry-After": "0"},
                    json={"error": "lost", "code": "internal_error", "details": {}},
                )
        return response


def through(api: Api, key: str, transport: httpx.BaseTransport | None = None) -> Castframe:
    return Castframe(
        api_key=key, base_url="http://testserver", transport=transport or ThroughTestClient(api)
    )


def test_sdk_retries_with_the_same_idempotency_key(api_sqlite: Api, tmp_path: Path) -> None:
    key = api_sqlite.key(credits=1000)
    flaky = Flaky(ThroughTestClient(api_sqlite), failures=2)
    with through(api_sqlite, key, flaky) as cf:
        ref = tmp_path / "me.png"
        ref.write_bytes(astronaut_png())
        job = cf.generate(
            "a knight in a forest", ref, rendering_speed="turbo", num_images=2, timeout=60
        )
        assert job.status == "COMPLETED" and len(job.images) == 2
        assert (job.error, job.error_code, job.expired) == (None, None, False)
        assert job.credit_cost == 20 and job.created_at and job.completed_at
        first = job.images[0]
        assert first.url.startswith("http://testserver/v2/files/")
        assert (first.width, first.height, first.content_type) == (1024, 1024, "image/png")
        assert isinstance(first.seed, int) and first.prompt
        assert job.images[1].seed != first.seed
        assert first.consistency is not None and first.consistency.same_character
        # The local file went up as an upload; its url (not upload://) is what was submitted.
        sent = flaky.bodies[0]["ideogramParams"]["character_reference_image"]
        assert sent.startswith("http://testserver/v2/files/uploads/")
        assert flaky.bodies[0]["ideogramParams"]["num_images"] == 2
        assert len(flaky.keys) == 3 and len(set(flaky.keys)) == 1
        page = cf.list_jobs()
        assert [j.id for j in page.jobs] == [job.id]  # the retries created no second job
        assert (page.next_cursor, page.has_more, page.models) == (None, False, None)
        assert cf.list_jobs(include_models=True).models == ["ideogram-character"]
        assert [j.id for j in cf.list_jobs(search=job.id, scope="team").jobs] == [job.id]
        assert cf.account()["balance"] == 1000 - 20
        assert cf.me().team.credits == 1000 - 20
        with pytest.raises(CastframeError) as info:
            cf.get_job(str(uuid.uuid4()))
        assert (info.value.code, info.value.status) == ("not_found", 404)
        assert info.value.message.startswith("no job")
        with pytest.raises(CastframeError) as info:
            cf.get_job("no-such-job")
        assert (info.value.code, info.value.status) == ("invalid_request", 400)
        with pytest.raises(CastframeError) as info:
            cf.generate("x", "https://example.com/a.png", style_type="WRONG")
        assert (info.value.code, info.value.status) == ("validation_error", 400)
        assert list(info.value.details) == ["ideogramParams.style_type"]
        assert "AUTO" in info.value.details["ideogramParams.style_type"][0]
        assert info.value.credits_required is None


def test_sdk_reuses_an_upload_url_and_reads_me_and_models(api_sqlite: Api) -> None:
    key = api_sqlite.key(credits=1000)
    with through(api_sqlite, key) as cf:
        upload = cf.upload(astronaut_png())
        assert upload.url.startswith("http://testserver/v2/files/uploads/")
        assert (upload.kind, upload.content_type) == ("image", "image/png")
        assert upload.byte_size == len(astronaut_png()) and upload.expires_at
        assert upload.reference == f"upload://{upload.id}"
        assert (upload.width, upload.height) == Image.open(io.BytesIO(astronaut_png())).size
        first = cf.generate("in a cafe", upload.url, rendering_speed="turbo", timeout=60)
        second = cf.generate("on a boat", upload.url, rendering_speed="turbo", timeout=60)
        assert (first.status, second.status) == ("COMPLETED", "COMPLETED")
        assert first.input is not None
        assert first.input["ideogramParams"]["character_reference_image"] == upload.url
        assert second.images[0].consistency is not None
        me = cf.me()
        assert (me.user.email, me.user.role) == ("acme@castframe.local", "OWNER")
        assert (me.team.name, me.team.plan, me.team.credits) == ("acme", "self-hosted", 1000 - 20)
        assert me.team.customer_id is None and me.team.max_concurrent_jobs
        assert me.api_key is not None and me.api_key.mode == "live"
        assert me.api_key.prefix and key.startswith(me.api_key.prefix)
        (model,) = [item for item in cf.models() if item.id == "ideogram-character"]
        assert (model.id, model.label, model.modality) == (
            "ideogram-character",
            "Ideogram Character",
            "image",
        )
        assert (model.cost_min, model.pricing_mode, model.params_key) == (
            10,
            "per-output",
            "ideogramParams",
        )
        assert model.cost_max and model.schema
        assert cf.models(modality="video") == []


def test_sdk_error_carries_the_402_credits(api_sqlite: Api) -> None:
    key = api_sqlite.key(credits=5)
    with through(api_sqlite, key) as cf, pytest.raises(CastframeError) as info:
        cf.submit("a knight", "https://example.com/a.png", rendering_speed="turbo")
    error = info.value
    assert (error.code, error.status, error.message) == (
        "insufficient_credits",
        402,
        "Insufficient credits",
    )
    assert (error.credits_required, error.credits_available) == (10, 5)
    assert error.details == {} and error.body["balance"] == 5
    assert error.request_id  # the answer's X-Request-Id


def test_wait_stops_at_cancelled_in_both_clients(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    with through(api_no_worker, key) as cf:
        job_id = cf.submit("later", "https://example.com/a.png")
        assert cf.get_job(job_id).status == "QUEUED"
        assert cf.cancel(job_id).status == "CANCELLED"
        seen: list[str] = []
        done = cf.wait(job_id, timeout=5, on_progress=lambda j: seen.append(j.status))
    assert done.done and done.status == "CANCELLED" and seen == ["CANCELLED"]
    assert (done.error_code, done.credit_cost, done.images) == ("cancelled", 0, [])
    assert done.error and "cancel" in done.error

    async def run() -> Any:
        async with AsyncCastframe(
            api_key=key, base_url="http://testserver", transport=Bridge(api_no_worker)
        ) as cf:
            job_id = await cf.submit("later", "https://example.com/a.png")
            await cf.cancel(job_id)
            return await cf.wait(job_id, timeout=5)

    other = asyncio.run(run())
    assert other.status == "CANCELLED" and other.error_code == "cancelled"


def test_sdk_accepts_pil_and_bytes_and_downloads(api_sqlite: Api, tmp_path: Path) -> None:
    key = api_sqlite.key()
    with through(api_sqlite, key) as cf:
        from_pil = cf.generate("in a cafe", Image.fromarray(astronaut()), rendering_speed="turbo")
        from_bytes = cf.generate("in a cafe", astronaut_png(), wait=False, rendering_speed="turbo")
        assert from_pil.status == "COMPLETED"
        assert from_bytes.status in ("QUEUED", "PROCESSING", "COMPLETED")
        seen: list[str] = []
        done = cf.wait(from_bytes.id, timeout=60, on_progress=lambda j: seen.append(j.status))
        assert done.status == "COMPLETED" and seen[-1] == "COMPLETED"
        paths = cf.download(from_pil, tmp_path / "out")
        assert [p.name for p in paths] == [f"{from_pil.id}-0.png"]
        assert Image.open(paths[0]).size == (1024, 1024)


class Bridge(httpx.AsyncBaseTransport):
    def __init__(self, api: Api) -> None:
        self.api = api

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The TestClient's own transport (which may be httpx2's: typed loosely on purpose).
        transport: Any = self.api.client._transport
        response = await asyncio.to_thread(transport.handle_request, request)
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.read()
        )


def test_async_sdk(api_sqlite: Api, tmp_path: Path) -> None:
    key = api_sqlite.key()

    async def run() -> Any:
        async with AsyncCastframe(
            api_key=key, base_url="http://testserver", transport=Bridge(api_sqlite)
        ) as cf:
            upload = await cf.upload(astronaut_png())
            job = await cf.generate(
                "at the beach", data_uri(astronaut_png()), rendering_speed="turbo", timeout=60
            )
            later = await cf.submit("later", upload.url)
            paths = await cf.download(job, tmp_path)
            return job, await cf.get_job(later), await cf.me(), paths

    job, other, me, paths = asyncio.run(run())
    assert job.status == "COMPLETED" and job.images[0].width == 1024
    assert other.id and other.input is not None
    assert other.input["ideogramParams"]["character_reference_image"].startswith("http://")
    assert me.team.name == "acme"
    assert [p.name for p in paths] == [f"{job.id}-0.png"]


APIFRAME_JOB = {
    # Apiframe's documented completed job: none of Castframe's extensions.
    "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    "status": "COMPLETED",
    "model": "ideogram-character",
    "progress": 100,
    "result": {"images": ["https://cdn.example/1.png", "https://cdn.example/2.png"]},
    "error": None,
    "creditCost": 15,
    "webhookStatus": "sent",
    "createdAt": "2026-03-15T10:00:00.000Z",
    "completedAt": "2026-03-15T10:00:32.000Z",
}


def test_sdk_speaks_the_spec_to_an_apiframe_server(tmp_path: Path) -> None:
    """Against a server that sends only Apiframe's fields, every shared operation works."""
    seen: list[httpx.Request] = []

    def apiframe(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if request.url.host == "cdn.example":
            assert "x-api-key" not in request.headers  # files are fetched without the key
            return httpx.Response(200, content=b"png", headers={"content-type": "image/png"})
        assert request.headers["x-api-key"] == "afk_x"
        if path == "/v2/uploads":
            return httpx.Response(
                201,
                json={
                    "id": "u1",
                    "url": "https://cdn.example/u1.png",
                    "kind": "image",
                    "contentType": "image/png",
                    "byteSize": 3,
                    "expiresAt": "2026-03-16T10:00:00.000Z",
                },
            )
        if path == "/v2/images/generate":
            body = json.loads(request.content)
            if body["ideogramParams"].get("style_type") == "WRONG":
                return httpx.Response(400, json={"error": "Validation failed"})
            return httpx.Response(202, json={"jobId": APIFRAME_JOB["id"], "status": "QUEUED"})
        if path.startswith("/v2/jobs/"):
            return httpx.Response(200, json=APIFRAME_JOB)
        if path == "/v2/jobs":
            return httpx.Response(
                200,
                json={
                    "jobs": [{**APIFRAME_JOB, "result": "https://cdn.example/r.png"}],
                    "nextCursor": "c2",
                    "hasMore": True,
                },
            )
        return httpx.Response(404, json={"error": "Not found"})

    ref = tmp_path / "me.png"
    ref.write_bytes(b"png")
    with Castframe(
        api_key="afk_x", base_url="https://api.example", transport=httpx.MockTransport(apiframe)
    ) as cf:
        job = cf.generate("a knight", ref, aspect_ratio="9:16", style_type="FICTION", timeout=5)
        body = json.loads(seen[1].content)
        assert body == {
            "prompt": "a knight",
            "model": "ideogram-character",
            "ideogramParams": {
                "character_reference_image": "https://cdn.example/u1.png",
                "aspect_ratio": "9:16",
                "style_type": "FICTION",
            },
        }
        assert [i.url for i in job.images] == [
            "https://cdn.example/1.png",
            "https://cdn.example/2.png",
        ]
        assert job.images[0].width is None and job.images[0].consistency is None
        assert (job.error_code, job.expired, job.webhook_status) == (None, False, "sent")
        page = cf.list_jobs(status="COMPLETED", limit=10)
        assert [i.url for i in page.jobs[0].images] == ["https://cdn.example/r.png"]
        assert (page.next_cursor, page.has_more) == ("c2", True)
        assert [p.name for p in cf.download(job, tmp_path / "out")] == [
            f"{job.id}-0.png",
            f"{job.id}-1.png",
        ]
        with pytest.raises(CastframeError) as info:
            cf.submit("x", "https://cdn.example/a.png", style_type="WRONG")
        assert (info.value.code, info.value.message, info.value.details) == (
            "http_400",
            "Validation failed",
            {},
        )


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASTFRAME_API_KEY", raising=False)
    with pytest.raises(CastframeError) as info:
        Castframe()
    assert info.value.code == "missing_api_key"
