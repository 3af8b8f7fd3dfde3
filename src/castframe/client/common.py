"""What the sync and async clients share: request building, retry policy, error parsing."""

from __future__ import annotations

import base64
import io
import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from castframe.client.models import CastframeError, Job

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = (429, 500, 502, 503, 504)
PARAMS_OUTSIDE = ("aspect_ratio", "num_images", "webhook_url", "webhook_events")


def settings_from_env(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    key = api_key or os.environ.get("CASTFRAME_API_KEY", "")
    if not key:
        raise CastframeError("missing_api_key", "pass api_key= or set CASTFRAME_API_KEY")
    return key, (base_url or os.environ.get("CASTFRAME_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def error_from(response: httpx.Response) -> CastframeError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return CastframeError(
        str(body.get("code", f"http_{response.status_code}")),
        str(body.get("message", response.text[:200])),
        response.status_code,
        body.get("details"),
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


def is_local_file(reference: Any) -> bool:
    return isinstance(reference, Path) or (
        isinstance(reference, str)
        and not reference.startswith(("http://", "https://", "data:", "upload://"))
    )


def image_bytes(reference: Any) -> tuple[str, bytes, str]:
    """A file path, bytes or a PIL image -> (filename, bytes, content type) for an upload."""
    if isinstance(reference, bytes | bytearray):
        return ("reference.bin", bytes(reference), "application/octet-stream")
    if isinstance(reference, str | Path):
        path = Path(reference)
        if not path.is_file():
            raise CastframeError("file_not_found", f"no such file: {path}")
        suffix = path.suffix.lower()
        kind = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
            suffix, "image/png"
        )
        return (path.name, path.read_bytes(), kind)
    save = getattr(reference, "save", None)
    if callable(save):  # a PIL image
        buffer = io.BytesIO()
        save(buffer, format="PNG")
        return ("reference.png", buffer.getvalue(), "image/png")
    raise CastframeError("invalid_reference", f"cannot use {type(reference).__name__} as an image")


def data_uri(raw: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(raw).decode()}"


def generate_body(
    prompt: str, model: str, reference: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The JSON body: known top-level options go outside ``ideogramParams``."""
    top: dict[str, Any] = {"prompt": prompt, "model": model}
    inner: dict[str, Any] = {}
    if reference is not None:
        inner["character_reference_image"] = reference
    for name, value in params.items():
        if value is None:
            continue
        if name == "webhook_url":
            top["webhookUrl"] = value
        elif name == "webhook_events":
            top["webhookEvents"] = value
        elif name in PARAMS_OUTSIDE:
            top[name] = value
        else:
            inner[name] = value
    top["ideogramParams"] = inner
    return top


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def list_params(status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    return {
        k: v
        for k, v in {"status": status, "limit": limit, "cursor": cursor}.items()
        if v is not None
    }


class Poller:
    """The wait loop's decisions, shared by both clients: report changes, back off
    (0.25 s growing to 2 s), stop when the job ends, give up after ``timeout``."""

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
