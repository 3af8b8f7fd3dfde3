"""The SDK's core, shared by the sync and the async client.

Every operation is a *flow*: a generator that yields I/O steps (``Http``: one HTTP request;
``Sleep``: a pause) and is sent each step's outcome back. Request building, retries, uploads
before a submission, polling, downloads and the parsing of answers are written once, here; a
client only performs steps (``Castframe`` with ``httpx.Client`` and ``time.sleep``,
``AsyncCastframe`` with ``httpx.AsyncClient`` and ``asyncio.sleep``).

The shared operations use only what Apiframe's v2 spec defines (the ``X-API-Key`` header,
``ideogramParams``, an upload's ``url`` in image fields, ``error`` as the message), so the SDK
works against Apiframe itself as well as against Castframe.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import os
import random
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from castframe.client.models import CastframeError, Job, JobPage, Me, Model, Upload

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = "castframe-python"
RETRY_STATUSES = (429, 500, 502, 503, 504)
TOP_LEVEL = {"webhook_url": "webhookUrl", "webhook_events": "webhookEvents"}
"""The only options outside the model's parameters object in Apiframe's request body."""
IMAGE_PARAMS = ("image", "mask")
"""Parameters that take one image source (a local one is uploaded first)."""
IMAGE_LIST_PARAMS = ("style_reference_images",)
"""Parameters that take a list of image sources."""
PASSED_THROUGH = ("http://", "https://", "data:", "upload://")
"""Image sources sent as given; any other string is a local file's path."""

T = TypeVar("T")


@dataclass(frozen=True)
class Http:
    """One HTTP request. ``url`` is a path on the API, or (``api=False``) an absolute URL of a
    file to download, which is fetched without the API key: another host may serve it."""

    method: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    api: bool = True


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Http | Sleep
Flow = Generator[Step, Any, T]
"""Yields steps; an ``Http`` step is answered with the ``httpx.Response`` or with the
``httpx.TransportError`` the request raised, a ``Sleep`` with None."""


def settings_from_env(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    key = api_key or os.environ.get("CASTFRAME_API_KEY", "")
    if not key:
        raise CastframeError("missing_api_key", "pass api_key= or set CASTFRAME_API_KEY")
    return key, (base_url or os.environ.get("CASTFRAME_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def network_message(error: Any) -> str:
    """What a failed request says: the server it could not reach, then why."""
    reason = str(error) or type(error).__name__
    try:
        url = error.request.url
    except (AttributeError, RuntimeError):  # an httpx error raised before it had a request
        return reason
    return f"cannot reach {url.scheme}://{url.netloc.decode()} ({reason})"


def client_options(
    key: str, base_url: str, timeout: float, transport: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """httpx client arguments: the API's (with the key) and the downloads' (without it)."""
    api = {
        "base_url": base_url,
        "timeout": timeout,
        "transport": transport,
        "headers": {"X-API-Key": key, "User-Agent": USER_AGENT},
    }
    files = {
        "timeout": timeout,
        "transport": transport,
        "follow_redirects": True,
        "headers": {"User-Agent": USER_AGENT},
    }
    return api, files


def _details(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {
        str(path): [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]
        for path, messages in value.items()
    }


def error_from(response: httpx.Response, fallback_code: str | None = None) -> CastframeError:
    """The error body (``error``, ``code``, ``details``, extras) -> CastframeError."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("error")
    if not isinstance(message, str) or not message:
        message = response.text[:200] or response.reason_phrase or f"HTTP {response.status_code}"
    return CastframeError(
        str(body.get("code") or fallback_code or f"http_{response.status_code}"),
        message,
        response.status_code,
        _details(body.get("details")),
        body,
        response.headers.get("x-request-id"),
    )


def retry_delay(
    attempt: int, response: httpx.Response | None, base: float = 0.5, cap: float = 30.0
) -> float:
    """Exponential backoff with jitter; a server's ``Retry-After`` wins when it is longer."""
    delay = min(cap, base * 2**attempt) * random.uniform(0.8, 1.2)
    if response is not None:
        header = response.headers.get("retry-after", "")
        if header.isdigit():
            delay = max(delay, min(float(header), cap * 4))
    return delay


def is_local_file(source: Any) -> bool:
    return isinstance(source, Path) or (
        isinstance(source, str) and not source.startswith(PASSED_THROUGH)
    )


def image_bytes(source: Any) -> tuple[str, bytes, str]:
    """A file path, bytes or a PIL image -> (filename, bytes, content type) for an upload."""
    if isinstance(source, bytes | bytearray):
        return ("image.bin", bytes(source), "application/octet-stream")
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise CastframeError("file_not_found", f"no such file: {path}")
        suffix = path.suffix.lower()
        kind = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
            suffix, "image/png"
        )
        return (path.name, path.read_bytes(), kind)
    save = getattr(source, "save", None)
    if callable(save):  # a PIL image
        buffer = io.BytesIO()
        save(buffer, format="PNG")
        return ("image.png", buffer.getvalue(), "image/png")
    raise CastframeError("invalid_reference", f"cannot use {type(source).__name__} as an image")


def data_uri(raw: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(raw).decode()}"


def generate_body(
    prompt: str,
    model: str,
    reference: str | None,
    params: dict[str, Any],
    params_key: str = "ideogramParams",
) -> dict[str, Any]:
    """Apiframe's body: ``prompt``, ``model``, the webhook options, and every other option
    (``aspect_ratio`` and ``num_images`` included) in the model's parameters object."""
    top: dict[str, Any] = {"prompt": prompt, "model": model}
    inner: dict[str, Any] = {}
    if reference is not None:
        inner["character_reference_image"] = reference
    for name, value in params.items():
        if value is None:
            continue
        if name in TOP_LEVEL:
            top[TOP_LEVEL[name]] = value
        else:
            inner[name] = value
    top[params_key] = inner
    return top


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def list_params(
    status: str | None,
    limit: int,
    cursor: str | None,
    model: str | None = None,
    scope: str | None = None,
    search: str | None = None,
    include_models: bool = False,
) -> dict[str, Any]:
    values = {
        "status": status,
        "model": model,
        "limit": limit,
        "cursor": cursor,
        "scope": scope,
        "search": search,
        "include_models": "true" if include_models else None,
    }
    return {k: v for k, v in values.items() if v is not None}


EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def file_extension(content_type: str | None) -> str:
    kind = (content_type or "").split(";")[0].strip().lower()
    return EXTENSIONS.get(kind) or mimetypes.guess_extension(kind) or ".png"


class Poller:
    """The wait loop's decisions: report changes, back off (0.25 s growing to 2 s), stop when
    the job ends (COMPLETED, FAILED or CANCELLED), give up after ``timeout``."""

    def __init__(
        self, job_id: str, timeout: float, on_progress: Callable[[Job], None] | None
    ) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.on_progress = on_progress
        self.deadline = time.monotonic() + timeout
        self.delay = 0.25
        self.last: tuple[str, int] | None = None

    def observe(self, job: Job) -> float | None:
        """None when ``job`` has finished, else seconds to sleep; TimeoutError past the deadline."""
        if self.on_progress and (job.status, job.progress) != self.last:
            self.on_progress(job)
        self.last = (job.status, job.progress)
        if job.done:
            return None
        if time.monotonic() + self.delay > self.deadline:
            raise TimeoutError(f"job {self.job_id} still {job.status} after {self.timeout:g}s")
        delay, self.delay = self.delay, min(self.delay * 1.5, 2.0)
        return delay


class Flows:
    """Every SDK operation as a flow. Both clients run these and nothing else."""

    def __init__(self, max_retries: int, connect_retries: int | None = None) -> None:
        self.max_retries = max_retries
        # A server that refuses connections is usually not running: a command line wants to
        # say so at once rather than after the whole retry schedule.
        self.connect_retries = max_retries if connect_retries is None else connect_retries

    # -- transport -------------------------------------------------------------------------
    def call(
        self, method: str, url: str, *, api: bool = True, **options: Any
    ) -> Flow[httpx.Response]:
        """One request with retries on 429/5xx and network errors (honouring Retry-After).

        A request is sent again unchanged, headers included, so a submission's
        ``Idempotency-Key`` is the same on every attempt."""
        step = Http(method, url, options, api)
        attempt = 0
        while True:
            outcome = yield step
            response = outcome if isinstance(outcome, httpx.Response) else None
            if response is not None and response.status_code < 400:
                return response
            unreachable = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
            if (
                attempt >= self.max_retries
                or (unreachable and attempt >= self.connect_retries)
                or (response is not None and response.status_code not in RETRY_STATUSES)
            ):
                if response is None:
                    raise CastframeError("network_error", network_message(outcome)) from outcome
                raise error_from(response, None if api else "download_failed")
            yield Sleep(retry_delay(attempt, response))
            attempt += 1

    def json(self, method: str, path: str, **options: Any) -> Flow[dict[str, Any]]:
        response = yield from self.call(method, path, **options)
        data: dict[str, Any] = response.json()
        return data

    # -- shared with Apiframe ----------------------------------------------------------------
    def upload(self, image: Any) -> Flow[Upload]:
        name, data, kind = image_bytes(image)
        body = yield from self.json("POST", "/v2/uploads", files={"file": (name, data, kind)})
        return Upload.from_json(body)

    def image_source(self, source: Any) -> Flow[Any]:
        """A local image (path, bytes, PIL image) -> its upload's ``url``; others unchanged."""
        if source is None or (isinstance(source, str) and not is_local_file(source)):
            return source
        upload = yield from self.upload(source)
        return upload.url

    def submit(
        self,
        prompt: str,
        reference: Any,
        model: str,
        idempotency_key: str | None,
        params_key: str,
        params: dict[str, Any],
    ) -> Flow[str]:
        params = dict(params)
        reference = yield from self.image_source(reference)
        for name in IMAGE_PARAMS:
            params[name] = yield from self.image_source(params.get(name))
        for name in IMAGE_LIST_PARAMS:
            if params.get(name) is not None:
                sources = []
                for source in params[name]:
                    sources.append((yield from self.image_source(source)))
                params[name] = sources
        body = generate_body(prompt, model, reference, params, params_key)
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        answer = yield from self.json("POST", "/v2/images/generate", json=body, headers=headers)
        return str(answer["jobId"])

    def get_job(self, job_id: str) -> Flow[Job]:
        return Job.from_json((yield from self.json("GET", f"/v2/jobs/{job_id}")))

    def list_jobs(self, params: dict[str, Any]) -> Flow[JobPage]:
        return JobPage.from_json((yield from self.json("GET", "/v2/jobs", params=params)))

    def wait(
        self, job_id: str, timeout: float, on_progress: Callable[[Job], None] | None
    ) -> Flow[Job]:
        poller = Poller(job_id, timeout, on_progress)
        while True:
            job = yield from self.get_job(job_id)
            delay = poller.observe(job)
            if delay is None:
                return job
            yield Sleep(delay)

    def generate(
        self,
        prompt: str,
        reference: Any,
        model: str,
        idempotency_key: str | None,
        params_key: str,
        params: dict[str, Any],
        wait: bool,
        timeout: float,
        on_progress: Callable[[Job], None] | None,
    ) -> Flow[Job]:
        job_id = yield from self.submit(
            prompt, reference, model, idempotency_key, params_key, params
        )
        if not wait:
            return (yield from self.get_job(job_id))
        return (yield from self.wait(job_id, timeout, on_progress))

    def me(self) -> Flow[Me]:
        return Me.from_json((yield from self.json("GET", "/v2/me")))

    def models(self, modality: str | None) -> Flow[list[Model]]:
        params = {"modality": modality} if modality else {}
        data = yield from self.json("GET", "/v2/models", params=params)
        return [Model.from_json(item) for item in data.get("models") or []]

    def download(self, job: Job, directory: str | Path) -> Flow[list[Path]]:
        """Each image to ``<directory>/<job id>-<n>.<ext>`` (the extension from its content
        type); the URLs are fetched without the API key."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, image in enumerate(job.images):
            response = yield from self.call("GET", image.url, api=False)
            kind = image.content_type or response.headers.get("content-type")
            path = folder / f"{job.id}-{index}{file_extension(kind)}"
            path.write_bytes(response.content)
            paths.append(path)
        return paths

    # -- Castframe only ----------------------------------------------------------------------
    def cancel(self, job_id: str) -> Flow[Job]:
        return Job.from_json((yield from self.json("POST", f"/v2/jobs/{job_id}/cancel")))

    def account(self) -> Flow[dict[str, Any]]:
        return (yield from self.json("GET", "/v2/account"))
