"""The asynchronous client (httpx.AsyncClient): the same flows as ``Castframe``, awaited."""

from __future__ import annotations

import asyncio
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


class AsyncCastframe:
    """``Castframe``'s methods as coroutines (``async with AsyncCastframe() as cf:``)."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        connect_retries: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key, self.base_url = settings_from_env(api_key, base_url)
        self._flows = Flows(max_retries, connect_retries)
        api, files = client_options(key, self.base_url, timeout, transport)
        self._http = httpx.AsyncClient(**api)
        self._files = httpx.AsyncClient(**files)

    async def __aenter__(self) -> AsyncCastframe:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        await self._files.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        outcome: Any = None
        while True:
            try:
                step = flow.send(outcome)
            except StopIteration as stop:
                return cast(T, stop.value)
            outcome = await self._perform(step)

    async def _perform(self, step: Step) -> Any:
        if not isinstance(step, Http):
            await asyncio.sleep(step.seconds)
            return None
        client = self._http if step.api else self._files
        try:
            return await client.request(step.method, step.url, **step.options)
        except httpx.TransportError as exc:
            return exc

    # -- shared with Apiframe ----------------------------------------------------------------
    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self._run(self._flows.call(method, path, **kwargs))

    async def upload(self, image: Any) -> Upload:
        return await self._run(self._flows.upload(image))

    async def submit(
        self,
        prompt: str,
        reference: Any = None,
        *,
        model: str = "ideogram-character",
        idempotency_key: str | None = None,
        params_key: str = "ideogramParams",
        **params: Any,
    ) -> str:
        return await self._run(
            self._flows.submit(prompt, reference, model, idempotency_key, params_key, params)
        )

    async def generate(
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
        return await self._run(
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

    async def get_job(self, job_id: str) -> Job:
        return await self._run(self._flows.get_job(job_id))

    async def list_jobs(
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
        params = list_params(status, limit, cursor, model, scope, search, include_models)
        return await self._run(self._flows.list_jobs(params))

    async def wait(
        self, job_id: str, timeout: float = 300.0, on_progress: Callable[[Job], None] | None = None
    ) -> Job:
        return await self._run(self._flows.wait(job_id, timeout, on_progress))

    async def me(self) -> Me:
        return await self._run(self._flows.me())

    async def models(self, modality: str | None = None) -> list[Model]:
        return await self._run(self._flows.models(modality))

    async def download(self, job: Job, directory: str | Path) -> list[Path]:
        return await self._run(self._flows.download(job, directory))

    # -- Castframe only ----------------------------------------------------------------------
    async def cancel(self, job_id: str) -> Job:
        return await self._run(self._flows.cancel(job_id))

    async def account(self) -> dict[str, Any]:
        return await self._run(self._flows.account())
