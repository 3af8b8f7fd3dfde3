"""Wait mode, SSE, the Python SDK and the `generate`/`jobs` commands."""

from __future__ import annotations

import asyncio
import json
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
    body = generate_body(
        "p",
        "ideogram-character",
        "upload://x",
        {
            "aspect_ratio": "3:4",
            "seed": 3,
            "webhook_url": "https://h",
            "style_type": "REALISTIC",
            "negative_prompt": None,
        },
    )
    assert body == {
        "prompt": "p",
        "model": "ideogram-character",
        "aspect_ratio": "3:4",
        "webhookUrl": "https://h",
        "ideogramParams": {
            "character_reference_image": "upload://x",
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

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/v2/images/generate":
            self.keys.append(request.headers["idempotency-key"])
            if self.failures > 0:
                self.failures -= 1
                response.read()
                return httpx.Response(
                    503,
                    headers={"Retry-After": "0"},
                    json={"code": "internal_error", "message": "lost"},
                )
        return response


def test_sdk_retries_with_the_same_idempotency_key(api_sqlite: Api, tmp_path: Path) -> None:
    key = api_sqlite.key(credits=1000)
    flaky = Flaky(ThroughTestClient(api_sqlite), failures=2)
    with Castframe(api_key=key, base_url="http://testserver", transport=flaky) as cf:
        ref = tmp_path / "me.png"
        ref.write_bytes(astronaut_png())
        job = cf.generate(
            "a knight in a forest", ref, rendering_speed="turbo", num_images=2, timeout=60
        )
        assert job.status == "COMPLETED" and len(job.images) == 2
        assert job.images[0].consistency is not None and job.images[0].consistency.same_character
        assert len(flaky.keys) == 3 and len(set(flaky.keys)) == 1
        jobs, _ = cf.list_jobs()
        assert [j.id for j in jobs] == [job.id]  # the retries created no second job
        assert cf.account()["balance"] == 1000 - 20
        with pytest.raises(CastframeError) as info:
            cf.get_job("no-such-job")
        assert (info.value.code, info.value.status) == ("not_found", 404)
        with pytest.raises(CastframeError) as info:
            cf.generate("x", "https://example.com/a.png", style_type="WRONG")
        assert info.value.code == "validation_error"


def test_sdk_accepts_pil_and_bytes_and_downloads(
    api_sqlite: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = api_sqlite.key()
    with Castframe(
        api_key=key, base_url="http://testserver", transport=ThroughTestClient(api_sqlite)
    ) as cf:
        from_pil = cf.generate("in a cafe", Image.fromarray(astronaut()), rendering_speed="turbo")
        from_bytes = cf.generate("in a cafe", astronaut_png(), wait=False, rendering_speed="turbo")
        assert from_pil.status == "COMPLETED"
        assert from_bytes.status in ("QUEUED", "PROCESSING", "COMPLETED")
        seen: list[str] = []
        done = cf.wait(from_bytes.id, timeout=60, on_progress=lambda j: seen.append(j.status))
        assert done.status == "COMPLETED" and seen[-1] == "COMPLETED"
        monkeypatch.setattr(httpx, "get", lambda url, timeout: api_sqlite.client.get(url))
        paths = cf.download(from_pil, tmp_path / "out")
        assert [p.name for p in paths] == [f"{from_pil.id}-0.png"]
        assert Image.open(paths[0]).size == (1024, 1024)


def test_async_sdk(api_sqlite: Api) -> None:
    key = api_sqlite.key()

    class Bridge(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await asyncio.to_thread(api_sqlite.client._transport.handle_request, request)  # type: ignore[attr-defined]
            return httpx.Response(
                response.status_code, headers=response.headers, content=response.read()
            )

    async def run() -> Any:
        async with AsyncCastframe(
            api_key=key, base_url="http://testserver", transport=Bridge()
        ) as cf:
            job = await cf.generate(
                "at the beach", data_uri(astronaut_png()), rendering_speed="turbo", timeout=60
            )
            canceled = await cf.submit("later", "https://example.com/a.png")
            return job, await cf.get_job(canceled)

    job, other = asyncio.run(run())
    assert job.status == "COMPLETED"
    assert other.id


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASTFRAME_API_KEY", raising=False)
    with pytest.raises(CastframeError) as info:
        Castframe()
    assert info.value.code == "missing_api_key"
