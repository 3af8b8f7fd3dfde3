"""``BflEngine``: the FLUX models through Black Forest Labs' API, behind Castframe's contract.

The operator holds the BFL key (``x-key`` header); users only see Castframe. BFL's API is
asynchronous: a ``POST /v1/<model route>`` answers ``{"id", "polling_url"}``, and
``GET polling_url`` answers the task's ``status`` until it is ``Ready`` with
``result.sample``, a signed URL that expires after about ten minutes. Per job:

1. the JSON body is built from the job's params (``request_body``: only the fields the
   route has; what it lacks was refused at submission by ``check_params``);
2. before the POST a *submitting* mark, and after it BFL's id and polling URL, are written
   to the job's upstream journal (``hooks.upstream``, kept in the database by the worker),
   so an attempt that finds an id resumes polling it instead of paying for a second
   generation, and one that finds only the mark (its submit's outcome unknown: a read
   timeout, a killed worker) fails rather than submit again;
3. the polling URL is polled (progress reported, cancellation checked between polls: a
   cancelled job stops polling; BFL has no cancel call, so a started task may still be
   billed by BFL);
4. the result is downloaded at once through the safe fetcher (an expired link is re-polled
   for a fresh one once) and returned as pixels: clients never see a BFL URL.

Error policy (the operator pays BFL per image):
- ``Request Moderated`` / ``Content Moderated`` -> ``content_filtered`` (the job is not
  charged);
- 401/403, and 402 (the BFL account is out of credits) -> ``engine_misconfigured`` and an
  ERROR log line for the operator;
- 400/404/413/422 on submit, and the ``Error`` status -> ``upstream_rejected``;
- 429, 5xx and connection errors -> retried with exponential backoff (``Retry-After``
  honoured), then ``upstream_unavailable``; a failure while polling is retryable: the next
  attempt resumes the same task;
- ``Task not found`` (BFL no longer knows the task) -> ``upstream_unavailable``, not retried.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from castframe.engines.base import (
    EngineRequest,
    EngineResult,
    GeneratedImage,
    InputImage,
    RunHooks,
)
from castframe.engines.fill_canvas import fill_paint_mask, outpaint_inputs
from castframe.errors import JobFailure
from castframe.media.images import ImageRejected, decode_image, encode_png

log = logging.getLogger("castframe.engines.bfl")

ROUTES: dict[str, str] = {
    "flux-1.1-pro": "/v1/flux-pro-1.1",
    "flux-1.1-pro-ultra": "/v1/flux-pro-1.1-ultra",
    "flux-2-pro": "/v1/flux-2-pro",
    "flux-2-flex": "/v1/flux-2-flex",
    "flux-2-max": "/v1/flux-2-max",
    "flux-fill-pro": "/v1/flux-pro-1.0-fill",
}
"""Castframe's model id -> BFL's route."""

_SIZED = {"width", "height", "aspect_ratio", "resolution", "seed", "output_format"}
HONOURED: dict[str, frozenset[str]] = {
    # The fluxParams fields each BFL route has (everything else is refused, naming bfl).
    "flux-1.1-pro": frozenset(_SIZED | {"prompt_upsampling", "image_prompt"}),
    "flux-1.1-pro-ultra": frozenset(
        {"aspect_ratio", "resolution", "seed", "output_format", "raw", "image_prompt"}
        | {"image_prompt_strength", "prompt_upsampling"}
    ),
    "flux-2-pro": frozenset(_SIZED | {"input_images", "prompt_upsampling"}),
    "flux-2-max": frozenset(_SIZED | {"input_images", "prompt_upsampling"}),
    "flux-2-flex": frozenset(_SIZED | {"input_images", "prompt_upsampling", "steps", "guidance"}),
}
FLUX_FIELDS = (
    "aspect_ratio",
    "go_fast",
    "guidance",
    "height",
    "image_prompt",
    "image_prompt_strength",
    "input_images",
    "output_format",
    "output_quality",
    "prompt_upsampling",
    "raw",
    "resolution",
    "seed",
    "steps",
    "width",
)
MIN_FILL_STEPS = 15
"""BFL's fill route refuses fewer steps (Apiframe's schema allows 1)."""
MAX_INPUT_IMAGES = 8
"""FLUX.2 [pro], [flex] and [max] take ``input_image`` to ``input_image_8``."""
PENDING = {"Pending", "Reasoning", "Generating", "Queued", "Processing"}
MODERATED = {"Request Moderated", "Content Moderated"}
MAX_SENT_BYTES = 10 * 1024 * 1024
"""An input image sent as it came up to this size; larger ones are re-encoded as JPEG."""
NOT_FOUND_TOLERANCE = 2
"""``Task not found`` answers tolerated right after a submit (the task may not be visible
everywhere yet) before the task is taken as lost."""

Downloader = Callable[[str], bytes]


class UpstreamJournal(Protocol):
    """Where a job's upstream task is recorded, so that a later attempt of the same job finds
    it (the worker keeps it in the database; ``hooks.upstream``)."""

    def recorded(self) -> Mapping[str, Any] | None:
        """What the job's earlier attempts recorded, or None."""

    def record(self, state: Mapping[str, Any]) -> None:
        """Store ``state`` durably before returning; raise if it cannot be stored."""


def serves(model_id: str) -> bool:
    return model_id in ROUTES


def check_params(model_id: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Submission-time refusals for jobs routed here: (bare field, message naming bfl)."""
    if model_id == "flux-fill-pro":
        # Every fluxFillParams field maps onto the fill route; BFL's takes 15 steps or more.
        steps = params.get("steps")
        if steps is not None and steps < MIN_FILL_STEPS:
            return [("steps", f"the bfl engine needs steps >= {MIN_FILL_STEPS} for flux-fill-pro")]
        return []
    honoured = HONOURED[model_id]
    route = ROUTES[model_id]
    problems = []
    given = dict(params)
    if not given.get("size_given"):
        given["width"] = given["height"] = None  # computed from the ratio, not given
    for name in FLUX_FIELDS:
        if given.get(name) is not None and name not in honoured:
            problems.append(
                (
                    name,
                    f"the bfl engine cannot honour {name} for {model_id}: BFL's {route} route "
                    "has no such field",
                )
            )
    images = params.get("input_images") or []
    if len(images) > MAX_INPUT_IMAGES and "input_images" in honoured:
        problems.append(
            (
                "input_images",
                f"the bfl engine sends at most {MAX_INPUT_IMAGES} input_images to {model_id}",
            )
        )
    return problems


def _encoded(image: InputImage) -> str:
    """Base64 of the image as it came (PNG, JPEG or WebP), or of a JPEG re-encoding."""
    raw = image.raw
    if raw and len(raw) <= MAX_SENT_BYTES:
        return base64.b64encode(raw).decode()
    buffer = io.BytesIO()
    Image.fromarray(image.pixels).save(buffer, format="JPEG", quality=92)
    return base64.b64encode(buffer.getvalue()).decode()


def _png(pixels: np.ndarray) -> str:
    return base64.b64encode(encode_png(pixels)).decode()


def _mask_png(paint: np.ndarray) -> str:
    """BFL's mask: white where it paints, black where it keeps."""
    gray = np.where(paint, 255, 0).astype(np.uint8)
    return _png(np.stack([gray] * 3, axis=-1))


def request_body(request: EngineRequest) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Pure: a job -> (BFL route, JSON body, facts for the result's metadata)."""
    model = request.model
    route = ROUTES[model]
    facts: dict[str, Any] = {}
    body: dict[str, Any] = {"prompt": request.prompt, "seed": request.seed}
    param = request.param
    if model == "flux-fill-pro":
        image = request.inputs.image
        if image is None:
            raise JobFailure("engine_error", "flux-fill-pro needs an image")
        if param("mode") == "outpaint":
            pixels, paint, canvas = outpaint_inputs(image.pixels, str(param("outpaint")))
            body["image"] = _png(pixels)
            body["mask"] = _mask_png(paint)
            facts["canvas"] = {"width": canvas.width, "height": canvas.height}
        else:
            painted = fill_paint_mask(request)
            if painted is None:
                raise JobFailure("engine_error", "an inpaint needs a mask")
            body["image"] = _encoded(image)
            body["mask"] = _mask_png(painted)
        for name in ("steps", "guidance", "prompt_upsampling", "safety_tolerance"):
            if param(name) is not None:
                body[name] = param(name)
        body["output_format"] = param("output_format", "jpeg")
        return route, body, facts
    body["output_format"] = param("output_format", "jpeg")
    if model == "flux-1.1-pro-ultra":
        body["aspect_ratio"] = param("aspect_ratio", "16:9")
        for name in ("raw", "image_prompt_strength", "prompt_upsampling"):
            if param(name) is not None:
                body[name] = param(name)
        if request.inputs.style_references:
            body["image_prompt"] = _encoded(request.inputs.style_references[0])
        return route, body, facts
    if not param("match_input_image"):
        body["width"], body["height"] = request.width, request.height
    if model == "flux-1.1-pro":
        if param("prompt_upsampling") is not None:
            body["prompt_upsampling"] = param("prompt_upsampling")
        if request.inputs.style_references:
            body["image_prompt"] = _encoded(request.inputs.style_references[0])
        return route, body, facts
    for index, reference in enumerate(request.inputs.references[:MAX_INPUT_IMAGES]):
        body["input_image" if index == 0 else f"input_image_{index + 1}"] = _encoded(reference)
    if model == "flux-2-flex":
        for name in ("steps", "guidance", "prompt_upsampling"):
            if param(name) is not None:
                body[name] = param(name)
    elif param("prompt_upsampling") is not None:
        # FLUX.2 [pro] and [max] upsample prompts unless told not to (``disable_pup``).
        body["disable_pup"] = not param("prompt_upsampling")
    return route, body, facts


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return min(float(value), 300.0) if value.replace(".", "", 1).isdigit() else None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            where = ".".join(str(part) for part in first.get("loc", [])[1:])
            return f"{where}: {first.get('msg', '')}"[:300]
        for key in ("detail", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return str(body)[:300]


@dataclass
class Task:
    id: str
    polling_url: str


@dataclass
class BflEngine:
    api_key: str
    base_url: str
    download: Downloader
    timeout: float = 60.0
    max_retries: int = 3
    retry_base: float = 2.0
    concurrency: int = 24
    poll_interval: float = 1.0
    poll_timeout: float = 900.0
    max_image_bytes: int = 40 * 1024 * 1024
    max_image_pixels: int = 40_000_000

    name = "bfl"

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=10.0))

    def close(self) -> None:
        self._client.close()

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        if request.model not in ROUTES:
            raise JobFailure(
                "engine_misconfigured", f"the bfl engine does not serve {request.model}"
            )
        route, body, facts = request_body(request)
        journal: UpstreamJournal | None = getattr(hooks, "upstream", None)
        hooks.progress(5)
        while not self._slots.acquire(timeout=0.5):
            hooks.check_cancelled()  # waiting for an upstream slot: a cancel wins
        try:
            hooks.check_cancelled()
            task, resumed = self._task(route, body, journal, hooks)
            started = time.monotonic()
            pixels = self._result(task, hooks)
        finally:
            self._slots.release()
        hooks.progress(95)
        return EngineResult(
            images=[
                GeneratedImage(
                    pixels=pixels,
                    seed=request.seed,
                    prompt=request.prompt,
                    metadata={"upstreamTask": task.id, **facts},
                )
            ],
            metadata={
                "engine": self.name,
                "route": route,
                "resumed": resumed,
                "upstreamLatencyMs": round((time.monotonic() - started) * 1000, 1),
            },
        )

    # -- the task: found in the journal, or submitted (and recorded) -------------------------
    def _task(
        self,
        route: str,
        body: dict[str, Any],
        journal: UpstreamJournal | None,
        hooks: RunHooks,
    ) -> tuple[Task, bool]:
        recorded = journal.recorded() if journal is not None else None
        if recorded and recorded.get("engine") == self.name and recorded.get("phase") != "refused":
            if recorded.get("id") and recorded.get("polling_url"):
                log.info("resuming BFL task %s (recorded by an earlier attempt)", recorded["id"])
                return Task(str(recorded["id"]), str(recorded["polling_url"])), True
            raise JobFailure(
                "upstream_unavailable",
                "an earlier attempt's submission to BFL may have been accepted (its answer "
                "never arrived); it is not submitted again, so it cannot be billed twice",
            )
        if journal is not None:
            self._record(journal, {"engine": self.name, "route": route, "phase": "submitting"})
        task = self._submit(route, body, hooks, journal)
        if journal is not None:
            self._record(
                journal,
                {
                    "engine": self.name,
                    "route": route,
                    "phase": "submitted",
                    "id": task.id,
                    "polling_url": task.polling_url,
                },
            )
        return task, False

    @staticmethod
    def _record(journal: UpstreamJournal, state: Mapping[str, Any]) -> None:
        try:
            journal.record(state)
        except JobFailure:
            raise
        except Exception as exc:
            phase = state.get("phase")
            raise JobFailure(
                "upstream_unavailable",
                f"the BFL task could not be recorded ({phase}); tried again later",
                retryable=phase == "submitting",  # nothing was sent yet: safe to retry
            ) from exc

    def _submit(
        self, route: str, body: dict[str, Any], hooks: RunHooks, journal: UpstreamJournal | None
    ) -> Task:
        url = self.base_url.rstrip("/") + route
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = self._client.post(url, json=body, headers=self._headers())
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                reason = type(exc).__name__  # never reached BFL: safe to retry
            except httpx.TransportError as exc:
                # The request may have reached BFL (a read timeout, a dropped connection):
                # submitting again could pay for a second, unseen generation.
                log.warning("BFL submit to %s ended without an answer (%s)", route, exc)
                raise JobFailure(
                    "upstream_unavailable",
                    f"BFL did not answer the submission ({type(exc).__name__}); it is not "
                    "submitted again, so it cannot be billed twice",
                ) from None
            else:
                status = response.status_code
                if status == 200:
                    return self._accepted(response)
                self._refuse(status, response)
                wait = _retry_after(response)
                reason = f"HTTP {status}"
            if attempt > self.max_retries:
                if journal is not None:
                    self._clear(journal, route)
                raise JobFailure(
                    "upstream_unavailable",
                    f"BFL kept failing ({reason}) after {attempt} attempts",
                    retryable=True,
                )
            delay = max(wait or 0.0, self.retry_base * 2 ** (attempt - 1))
            log.info("BFL submit %s; retry %d in %.1fs", reason, attempt, delay)
            self._sleep(delay, hooks)

    def _clear(self, journal: UpstreamJournal, route: str) -> None:
        """Every submit was refused (429/5xx, connection errors): nothing runs at BFL, so a
        later attempt may submit afresh."""
        try:
            journal.record({"engine": self.name, "route": route, "phase": "refused"})
        except Exception:
            log.warning("could not clear the BFL submitting mark", exc_info=True)

    def _accepted(self, response: httpx.Response) -> Task:
        try:
            payload = response.json()
            task = Task(str(payload["id"]), str(payload.get("polling_url") or ""))
        except (ValueError, KeyError, TypeError):
            raise JobFailure(
                "upstream_unavailable", "BFL accepted the submission with an unreadable answer"
            ) from None
        if not task.id:
            raise JobFailure("upstream_unavailable", "BFL's answer has no task id")
        return task

    def _refuse(self, status: int, response: httpx.Response) -> None:
        """Raise for answers that are final (not retried)."""
        if status in (401, 403):
            log.error(
                "BFL REJECTED THE OPERATOR'S API KEY (HTTP %s): %s. Check CASTFRAME_BFL_API_KEY.",
                status,
                _message(response),
            )
            raise JobFailure("engine_misconfigured", "the server's BFL credentials were refused")
        if status == 402:
            log.error("THE BFL ACCOUNT IS OUT OF CREDITS (HTTP 402): %s", _message(response))
            raise JobFailure("engine_misconfigured", "the server's BFL account has no credits left")
        if status in (400, 404, 413, 415, 422):
            raise JobFailure("upstream_rejected", f"BFL rejected the request: {_message(response)}")

    def _headers(self) -> dict[str, str]:
        return {"x-key": self.api_key, "accept": "application/json"}

    def _poll_url(self, task: Task) -> str:
        """BFL's polling URL when it is on BFL's domain (or the configured base's host); else
        the base's ``get_result``: the key is never sent to a host BFL's answer made up."""
        base = urlsplit(self.base_url)
        given = urlsplit(task.polling_url)
        trusted = given.scheme in ("https", base.scheme) and (
            given.netloc == base.netloc
            or (given.scheme == "https" and (given.hostname or "").endswith(".bfl.ai"))
        )
        if task.polling_url and trusted:
            return task.polling_url
        return f"{self.base_url.rstrip('/')}/v1/get_result?id={task.id}"

    # -- polling and the result -----------------------------------------------------------
    def _result(self, task: Task, hooks: RunHooks) -> np.ndarray:
        url = self._ready(task, hooks)
        try:
            raw = self.download(url)
        except JobFailure as first:
            # The signed link may have expired between Ready and the download: ask again.
            log.info(
                "BFL result of %s not downloadable (%s); polling again", task.id, first.message
            )
            url = self._ready(task, hooks)
            try:
                raw = self.download(url)
            except JobFailure as exc:
                raise JobFailure(
                    "upstream_unavailable", f"BFL's result could not be downloaded: {exc.message}"
                ) from exc
        try:
            decoded = decode_image(
                raw, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels
            )
        except ImageRejected as exc:
            raise JobFailure("upstream_unavailable", f"BFL's image is unusable: {exc}") from exc
        pixels: np.ndarray = decoded.pixels
        return pixels

    def _ready(self, task: Task, hooks: RunHooks) -> str:
        """Poll until Ready: the result's URL."""
        url = self._poll_url(task)
        deadline = time.monotonic() + self.poll_timeout
        failures = 0
        not_found = 0
        while True:
            hooks.check_cancelled()
            reason = ""
            wait: float | None = None
            try:
                response = self._client.get(url, headers=self._headers())
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            else:
                status = response.status_code
                if status in (401, 403):
                    self._refuse(status, response)
                if status == 200 or status == 404:
                    try:
                        payload = response.json()
                    except ValueError:
                        payload = None
                    state = payload.get("status") if isinstance(payload, dict) else None
                    if state == "Task not found" or (status == 404 and state is None):
                        not_found += 1
                        if not_found > NOT_FOUND_TOLERANCE:
                            raise JobFailure(
                                "upstream_unavailable",
                                f"BFL no longer knows task {task.id} (expired or lost); it is "
                                "not submitted again",
                            )
                        reason = "task not found yet"
                    elif isinstance(payload, dict) and state is not None:
                        failures = 0
                        ready = self._status(task, payload, hooks)
                        if ready is not None:
                            return ready
                    else:
                        reason = "unreadable answer"
                else:
                    wait = _retry_after(response)
                    reason = f"HTTP {status}"
            if reason:
                failures += 1
                if failures > self.max_retries:
                    raise JobFailure(
                        "upstream_unavailable",
                        f"polling BFL kept failing ({reason}); the task is resumed later",
                        retryable=True,
                    )
            if time.monotonic() > deadline:
                raise JobFailure(
                    "upstream_unavailable",
                    f"BFL task {task.id} was not ready after {self.poll_timeout:.0f}s",
                    retryable=True,
                )
            delay = self.poll_interval
            if reason and not reason.startswith("task not found"):
                delay = max(wait or 0.0, self.retry_base * 2 ** (failures - 1))
            self._sleep(delay, hooks)

    def _status(self, task: Task, payload: dict[str, Any], hooks: RunHooks) -> str | None:
        state = str(payload.get("status"))
        if state == "Ready":
            result = payload.get("result")
            sample = result.get("sample") if isinstance(result, dict) else None
            if not isinstance(sample, str) or not sample:
                raise JobFailure("upstream_unavailable", "BFL's ready task has no result image")
            return sample
        if state in MODERATED:
            details = payload.get("details")
            reasons = details.get("Moderation Reasons") if isinstance(details, dict) else None
            why = (
                f": {', '.join(map(str, reasons))}" if isinstance(reasons, list) and reasons else ""
            )
            what = "request" if state.startswith("Request") else "output"
            raise JobFailure("content_filtered", f"BFL's moderation refused the {what}{why}")
        if state == "Error":
            details = payload.get("details")
            raise JobFailure(
                "upstream_rejected",
                f"BFL reported an error for the task{f': {details}' if details else ''}"[:400],
            )
        progress = payload.get("progress")
        if isinstance(progress, int | float) and not isinstance(progress, bool):
            hooks.progress(10 + int(80 * min(max(float(progress), 0.0), 1.0)))
        if state not in PENDING:
            log.info("BFL task %s has an unknown status %r; polling on", task.id, state)
        return None

    @staticmethod
    def _sleep(seconds: float, hooks: RunHooks) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
            hooks.check_cancelled()
