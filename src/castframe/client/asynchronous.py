"""The asynchronous client (httpx.AsyncClient); same methods as ``Castframe``, awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from castframe.client.common import (
    RETRY_STATUSES,
    Poller,
    error_from,
    generate_body,
    image_bytes,
    is_local_file,
    list_params,
    new_idempotency_key,
    retry_delay,
    settings_from_env,
)
from castframe.client.models import CastframeError, Job


class AsyncCastframe:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key, self.base_url = settings_from_env(api_key, base_url)
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"X-API-Key": key, "User-Agent": "castframe-python"},
        )

    async def __aenter__(self) -> AsyncCastframe:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise CastframeError("network_error", str(exc) or type(exc).__name__) from exc
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                    raise error_from(response)
            await asyncio.sleep(retry_delay(attempt, response))
            attempt += 1

    async def upload(self, image: Any) -> str:
        name, data, kind = image_bytes(image)
        response = await self.request("POST", "/v2/uploads", files={"file": (name, data, kind)})
        return str(response.json()["reference"])

    async def _reference(self, reference: Any) -> str | None:
        if reference is None or (isinstance(reference, str) and not is_local_file(reference)):
            return reference
        return await self.upload(reference)

    async def submit(
        self,
        prompt: str,
        reference: Any = None,
        *,
        model: str = "ideogram-character",
        idempotency_key: str | None = None,
        **params: Any,
    ) -> str:
        for name in ("image", "mask"):
            if params.get(name) is not None:
                params[name] = await self._reference(params[name])
        body = generate_body(prompt, model, await self._reference(reference), params)
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        response = await self.request("POST", "/v2/images/generate", json=body, headers=headers)
        return str(response.json()["jobId"])

    async def generate(
        self,
        prompt: str,
        reference: Any = None,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_progress: Callable[[Job], None] | None = None,
        **params: Any,
    ) -> Job:
        job_id = await self.submit(prompt, reference, **params)
        if not wait:
            return await self.get_job(job_id)
        return await self.wait(job_id, timeout=timeout, on_progress=on_progress)

    async def get_job(self, job_id: str) -> Job:
        return Job.from_json((await self.request("GET", f"/v2/jobs/{job_id}")).json())

    async def list_jobs(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        params = list_params(status, limit, cursor)
        data = (await self.request("GET", "/v2/jobs", params=params)).json()
        return [Job.from_json(item) for item in data["jobs"]], data.get("nextCursor")

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json((await self.request("POST", f"/v2/jobs/{job_id}/cancel")).json())

    async def wait(
        self, job_id: str, timeout: float = 300.0, on_progress: Callable[[Job], None] | None = None
    ) -> Job:
        poller = Poller(job_id, timeout, on_progress)
        while True:
            job = await self.get_job(job_id)
            delay = poller.observe(job)
            if delay is None:
                return job
            await asyncio.sleep(delay)

    async def account(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self.request("GET", "/v2/account")).json()
        return data

    async def download(self, job: Job, directory: str | Path) -> list[Path]:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        async with httpx.AsyncClient(timeout=60) as client:
            for index, image in enumerate(job.images):
                response = await client.get(image.url)
                if response.status_code != 200:
                    raise CastframeError(
                        "download_failed", f"HTTP {response.status_code}", response.status_code
                    )
                path = folder / f"{job.id}-{index}.png"
                path.write_bytes(response.content)
                paths.append(path)
        return paths
