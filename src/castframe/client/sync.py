"""The synchronous client (httpx.Client)."""

from __future__ import annotations

import time
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


class Castframe:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key, self.base_url = settings_from_env(api_key, base_url)
        self.max_retries = max_retries
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"X-API-Key": key, "User-Agent": "castframe-python"},
        )

    def __enter__(self) -> Castframe:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with retries on 429/5xx and network errors (honouring Retry-After)."""
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise CastframeError("network_error", str(exc) or type(exc).__name__) from exc
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                    raise error_from(response)
            time.sleep(retry_delay(attempt, response))
            attempt += 1

    # -- API -------------------------------------------------------------------------------
    def upload(self, image: Any) -> str:
        """Upload a file path, bytes or PIL image; returns its ``upload://`` reference."""
        name, data, kind = image_bytes(image)
        response = self.request("POST", "/v2/uploads", files={"file": (name, data, kind)})
        return str(response.json()["reference"])

    def _reference(self, reference: Any) -> str | None:
        if reference is None or (isinstance(reference, str) and not is_local_file(reference)):
            return reference
        return self.upload(reference)

    def submit(
        self,
        prompt: str,
        reference: Any = None,
        *,
        model: str = "ideogram-character",
        idempotency_key: str | None = None,
        **params: Any,
    ) -> str:
        """Submit and return the job id at once. Local images are uploaded first."""
        for name in ("image", "mask"):
            if params.get(name) is not None:
                params[name] = self._reference(params[name])
        body = generate_body(prompt, model, self._reference(reference), params)
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        response = self.request("POST", "/v2/images/generate", json=body, headers=headers)
        return str(response.json()["jobId"])

    def generate(
        self,
        prompt: str,
        reference: Any = None,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_progress: Callable[[Job], None] | None = None,
        **params: Any,
    ) -> Job:
        """Submit, then (by default) wait for the job to finish and return it."""
        job_id = self.submit(prompt, reference, **params)
        if not wait:
            return self.get_job(job_id)
        return self.wait(job_id, timeout=timeout, on_progress=on_progress)

    def get_job(self, job_id: str) -> Job:
        return Job.from_json(self.request("GET", f"/v2/jobs/{job_id}").json())

    def list_jobs(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        params = list_params(status, limit, cursor)
        data = self.request("GET", "/v2/jobs", params=params).json()
        return [Job.from_json(item) for item in data["jobs"]], data.get("nextCursor")

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self.request("POST", f"/v2/jobs/{job_id}/cancel").json())

    def wait(
        self, job_id: str, timeout: float = 300.0, on_progress: Callable[[Job], None] | None = None
    ) -> Job:
        """Poll with backoff (0.25 s growing to 2 s) until the job ends; TimeoutError if not."""
        poller = Poller(job_id, timeout, on_progress)
        while True:
            job = self.get_job(job_id)
            delay = poller.observe(job)
            if delay is None:
                return job
            time.sleep(delay)

    def account(self) -> dict[str, Any]:
        data: dict[str, Any] = self.request("GET", "/v2/account").json()
        return data

    def download(self, job: Job, directory: str | Path) -> list[Path]:
        """Save a job's images as ``<job id>-<n>.png`` in ``directory``; returns the paths."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, image in enumerate(job.images):
            response = httpx.get(image.url, timeout=60)
            if response.status_code != 200:
                raise CastframeError(
                    "download_failed",
                    f"{image.url}: HTTP {response.status_code}",
                    response.status_code,
                )
            path = folder / f"{job.id}-{index}.png"
            path.write_bytes(response.content)
            paths.append(path)
        return paths
