"""The synchronous client (httpx.Client): runs the flows of ``common.Flows``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from castframe.client.common import (
    Flow,
    Flows,
    Http,
    Step,
    client_options,
    list_params,
    settings_from_env,
)
from castframe.client.models import Job, JobPage, Me, Model, Upload

T = TypeVar("T")


class Castframe:
    """Castframe's (and Apiframe's) v2 API. ``base_url`` (or ``CASTFRAME_BASE_URL``) picks the
    server: ``https://api.apiframe.ai`` works for the operations both share."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        connect_retries: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key, self.base_url = settings_from_env(api_key, base_url)
        self._flows = Flows(max_retries, connect_retries)
        api, files = client_options(key, self.base_url, timeout, transport)
        self._http = httpx.Client(**api)
        self._files = httpx.Client(**files)

    def __enter__(self) -> Castframe:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._files.close()

    def _run(self, flow: Flow[T]) -> T:
        outcome: Any = None
        while True:
            try:
                step = flow.send(outcome)
            except StopIteration as stop:
                return cast(T, stop.value)
            outcome = self._perform(step)

    def _perform(self, step: Step) -> Any:
        if not isinstance(step, Http):
            time.sleep(step.seconds)
            return None
        client = self._http if step.api else self._files
        try:
            return client.request(step.method, step.url, **step.options)
        except httpx.TransportError as exc:
            return exc

    # -- shared with Apiframe ----------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with retries on 429/5xx and network errors (honouring Retry-After)."""
        return self._run(self._flows.call(method, path, **kwargs))

    def upload(self, image: Any) -> Upload:
        """Upload a file path, bytes or PIL image; its ``url`` works in any image field."""
        return self._run(self._flows.upload(image))

    def submit(
        self,
        prompt: str,
        reference: Any = None,
        *,
        model: str = "ideogram-character",
        idempotency_key: str | None = None,
        params_key: str = "ideogramParams",
        **params: Any,
    ) -> str:
        """Submit and return the job id at once. Local images are uploaded first."""
        return self._run(
            self._flows.submit(prompt, reference, model, idempotency_key, params_key, params)
        )

    def generate(
        self,
        prompt: str,
        reference: Any = None,
        *,
        model: str = "ideogram-character",
        idempotency_key: str | None = None,
        params_key: str = "ideogramParams",
        wait: bool = True,
        timeout: float = 300.0,
        on_progress: Callable[[Job], None] | None = None,
        **params: Any,
    ) -> Job:
        """Submit, then (by default) wait for the job to finish and return it."""
        return self._run(
            self._flows.generate(
                prompt,
                reference,
                model,
                idempotency_key,
                params_key,
                params,
                wait,
                timeout,
                on_progress,
            )
        )

    def get_job(self, job_id: str) -> Job:
        return self._run(self._flows.get_job(job_id))

    def list_jobs(
        self,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        *,
        model: str | None = None,
        scope: str | None = None,
        search: str | None = None,
        include_models: bool = False,
    ) -> JobPage:
        """One page of jobs, newest first; ``page.next_cursor`` fetches the next."""
        params = list_params(status, limit, cursor, model, scope, search, include_models)
        return self._run(self._flows.list_jobs(params))

    def wait(
        self, job_id: str, timeout: float = 300.0, on_progress: Callable[[Job], None] | None = None
    ) -> Job:
        """Poll with backoff (0.25 s growing to 2 s) until the job ends; TimeoutError if not."""
        return self._run(self._flows.wait(job_id, timeout, on_progress))

    def me(self) -> Me:
        return self._run(self._flows.me())

    def models(self, modality: str | None = None) -> list[Model]:
        return self._run(self._flows.models(modality))

    def download(self, job: Job, directory: str | Path) -> list[Path]:
        """Save a job's images as ``<job id>-<n>.<ext>`` in ``directory``; returns the paths."""
        return self._run(self._flows.download(job, directory))

    # -- Castframe only ----------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        return self._run(self._flows.cancel(job_id))

    def account(self) -> dict[str, Any]:
        """Balance, held and available credits, active jobs (``GET /v2/account``)."""
        return self._run(self._flows.account())
