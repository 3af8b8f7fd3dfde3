"""Errors with a stable machine-readable code, raised anywhere and rendered by the API.

Every code a client can see is listed in ``ERROR_CODES`` with its HTTP status; the docs'
error table is generated from it, so adding a code here documents it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

ERROR_CODES: dict[str, tuple[int, str]] = {
    # 400: Apiframe answers every request it cannot accept as given with 400 (its SDK's
    # ValidationError), with `details` keyed by the field's JSON path.
    "invalid_json": (
        400,
        "The body is not valid JSON, not a JSON object, or nested deeper than 64 levels.",
    ),
    "invalid_idempotency_key": (400, "Idempotency-Key must be 1-255 printable ASCII characters."),
    "invalid_request": (400, "A path or query parameter or a header is malformed."),
    "validation_error": (
        400,
        "A field is missing, unknown, of the wrong type or out of range, or holds text that "
        "cannot be stored (a NUL character, an unpaired surrogate).",
    ),
    "unknown_model": (400, "`model` is not in the catalog (see GET /v2/models)."),
    "unsupported_parameter": (
        400,
        "The engine that runs this job cannot honour a parameter; the message names both.",
    ),
    "invalid_image": (400, "An image is not a decodable PNG, JPEG or WebP within the limits."),
    "image_too_large": (400, "An image is over the byte or pixel limit."),
    # Apiframe lists no 413 or 415: a body it cannot read is a 400 like any other.
    "payload_too_large": (400, "The request body is over its size limit."),
    "body_timeout": (
        400,
        "The request body did not arrive in full within CASTFRAME_BODY_READ_TIMEOUT seconds.",
    ),
    "unsupported_media_type": (
        400,
        "The request body must be application/json (multipart/form-data for uploads).",
    ),
    "url_not_allowed": (
        400,
        "A URL is malformed (over 2048 characters, control characters or spaces, a bad host or "
        "port), not http(s), or points at a private/reserved address.",
    ),
    "reference_fetch_failed": (400, "An image URL could not be fetched (status, timeout, size)."),
    "upload_not_found": (400, "An upload URL names no upload of this account."),
    "upload_expired": (400, "An upload URL is past its expiresAt; upload the file again."),
    "character_not_found": (400, "`character_id` names no (undeleted) character of this account."),
    "no_face_found": (400, "A character image must show one clear face; none was found."),
    "multiple_faces": (400, "A character image must show exactly one face; several were found."),
    "face_too_small": (400, "The face in a character image is too small to be recognised."),
    "missing_api_key": (401, "No API key in X-API-Key or Authorization: Bearer."),
    "invalid_api_key": (401, "The API key is unknown or revoked."),
    "insufficient_credits": (402, "The account's available credits are below the job's price."),
    "api_key_inactive": (403, "The API key is deactivated."),
    "invalid_signature": (403, "A signed file URL's signature does not match."),
    "metrics_forbidden": (
        403,
        "GET /metrics answers loopback clients only, unless CASTFRAME_METRICS_TOKEN is set; "
        "then any client sending `Authorization: Bearer <token>`.",
    ),
    "not_found": (404, "No such resource for this API key (other accounts' objects included)."),
    "method_not_allowed": (405, "The path does not accept this HTTP method."),
    "job_not_cancelable": (409, "The job already finished."),
    "job_not_finished": (409, "The job has not finished yet."),
    "webhook_not_configured": (409, "The job was submitted without a webhookUrl."),
    "idempotency_key_reused": (409, "This Idempotency-Key was used with a different request."),
    "idempotency_key_in_use": (409, "A request with this Idempotency-Key is still in progress."),
    "url_expired": (410, "A signed file URL is past its expiry."),
    "output_expired": (
        410,
        "The job's output files were deleted after CASTFRAME_OUTPUT_RETENTION_HOURS (the job "
        "reads `expired: true`); generate again.",
    ),
    "range_not_satisfiable": (
        416,
        "A file's Range starts past its end; Content-Range says the size.",
    ),
    "rate_limited": (
        429,
        "Too many requests: submissions per key (CASTFRAME_RATE_LIMIT_*), uploads per account "
        "(CASTFRAME_UPLOAD_RATE_*) or saved-character creations per account "
        "(CASTFRAME_CHARACTER_RATE_*), webhook redeliveries per key (CASTFRAME_REDELIVER_PER_MINUTE); "
        "see Retry-After.",
    ),
    "too_many_active_jobs": (429, "The account has too many unfinished jobs."),
    "too_many_listeners": (
        429,
        "The API key holds CASTFRAME_LIVE_LISTENERS_PER_KEY live-status listeners (event "
        "streams, Prefer: wait) in this API process; close one, or retry after Retry-After.",
    ),
    "internal_error": (500, "An unexpected server error; it is logged with the request id."),
    "not_ready": (503, "The server cannot reach its database; retry after Retry-After."),
    "storage_unavailable": (
        503,
        "The server cannot read or write its file storage right now (I/O error, permissions, "
        "S3 unreachable or failing); nothing was stored or charged. Retry after Retry-After.",
    ),
    "storage_full": (
        507,
        "The server's file storage or database is out of space; nothing was stored or "
        "charged. Retry once the operator has freed some.",
    ),
    "characters_busy": (
        503,
        "The API process is saving CASTFRAME_CHARACTER_CONCURRENCY characters (fetch, decode, "
        "face check) and as many wait for a slot; retry after Retry-After.",
    ),
    "storage_quota_exceeded": (
        507,
        "The account's stored uploads (uploads, saved characters' images, inline images of "
        "unfinished jobs) would pass CASTFRAME_UPLOAD_QUOTA_BYTES; nothing was stored. Delete "
        "saved characters or wait for uploads to expire (`storedBytes`, `quotaBytes` say how "
        "far).",
    ),
    "model_unavailable": (
        503,
        "No live worker serves this model and the operator refuses such submissions "
        "(CASTFRAME_UNSERVED_MODELS=reject); nothing was stored or charged. Retry once a "
        "worker serving it runs (GET /v2/models shows `hasWorker`).",
    ),
    "listeners_exhausted": (
        503,
        "The API process holds CASTFRAME_LIVE_LISTENERS live-status listeners; retry after "
        "Retry-After (another process may have room), or poll GET /v2/jobs/{id}.",
    ),
}

JOB_ERROR_CODES: dict[str, str] = {
    "reference_fetch_failed": "An input image URL could not be fetched (status, timeout, size).",
    "invalid_image": "An input image is not a decodable PNG, JPEG or WebP within the limits.",
    "url_not_allowed": "An input URL resolves to a private or reserved address.",
    "upload_not_found": "An upload:// reference no longer exists.",
    "upload_expired": "An upload URL was past its expiresAt.",
    "cancelled": "The job was cancelled by its owner.",
    "engine_error": "The engine failed on this input; the message says why.",
    "engine_misconfigured": "The engine is not set up correctly (operator action needed).",
    "upstream_rejected": "The upstream provider refused the request.",
    "upstream_unavailable": "The upstream provider kept failing after retries.",
    "content_filtered": "The prompt or image was refused by a safety filter.",
    "worker_lost": "Workers running the job died repeatedly; it was given up.",
    "out_of_memory": "The engine ran out of memory on this request.",
    "internal_error": "Castframe itself failed while running the job (the operator's log has "
    "the details, by job id); the job was not charged.",
    "storage_failed": (
        "The job's images could not be stored or its inputs read (storage full or "
        "unavailable); it was retried with backoff, then given up. Nothing was charged."
    ),
}


_LIBRARY_VERSION = re.compile(r"\b(OpenCV|libpng|libjpeg|libwebp)\(?[\d.]+\)?", re.IGNORECASE)
_PATH = re.compile(
    r"(?<![\w:/.])(?:[A-Za-z]:\\|/)(?:[\w.+@~-]+[\\/])+[\w.+@~-]+(?::\d+)?(?::\d+)?:?"
)
_OPENCV_ERROR = re.compile(r"\berror:\s*\((-?\d+):([^)]*)\)\s*")


def public_message(text: str) -> str:
    """A library's message as a client may read it: no file paths (``/usr/lib/.../x.cpp:42``),
    no library build strings (``OpenCV(4.10.0)``); OpenCV's ``error: (-215:Assertion
    failed) cond in function 'f'`` reads ``assertion failed in 'f'``. The operator's log keeps
    the original."""
    text = _LIBRARY_VERSION.sub(lambda m: m.group(1), text)
    text = _OPENCV_ERROR.sub(lambda m: f"{m.group(2).strip().lower() or 'error'}: ", text)
    text = _PATH.sub("", text)
    text = re.sub(r"\s{2,}", " ", text).strip(" :")
    return text


Details = dict[str, list[str]]
"""Apiframe's ``details``: messages keyed by the JSON path of the field they are about."""


MAX_PROBLEMS = 20
"""The most (field, message) problems an error lists: a body with thousands of unknown keys
gets the first ones, not an answer as large as itself."""
MAX_PROBLEM_CHARS = 200
"""The longest field path or message an error repeats: a message may quote the client's value
(an unknown ratio, an unknown key), which may be megabytes long."""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 1] + "…"


def bounded(problems: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """At most ``MAX_PROBLEMS`` problems, each path and message cut to ``MAX_PROBLEM_CHARS``:
    every list of problems goes through here before it becomes an error's text."""
    return [(_cut(path), _cut(message)) for path, message in islice(problems, MAX_PROBLEMS)]


def details_of(problems: Iterable[tuple[str, str]]) -> Details:
    """(field path, message) pairs -> ``details``, keeping every message of a field (within
    ``bounded``'s limits)."""
    details: Details = {}
    for path, message in bounded(problems):
        details.setdefault(path, []).append(message)
    return details


@dataclass
class ApiError(Exception):
    """An error the client caused or must act on.

    Rendered as Apiframe's error body: ``error`` (the message Apiframe's SDK shows), Castframe's
    stable ``code``, ``details`` by field path, and any ``extra`` fields (402's credits).
    """

    code: str
    message: str = ""
    details: Details = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"undocumented error code {self.code!r}")
        if not self.message:
            self.message = ERROR_CODES[self.code][1]
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code][0]

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "details": self.details, **self.extra}


def field_error(code: str, field_path: str, message: str) -> ApiError:
    """An ApiError about one request field, with the field named in ``details``."""
    return ApiError(code, message, details={field_path: [message]})


@dataclass
class JobFailure(Exception):
    """Why a job failed: the job's ``error`` is the message and ``errorCode`` the code.

    ``retryable`` failures (upstream hiccups, a lost worker) are queued again with backoff
    until the attempt limit; the others fail the job at once.
    """

    code: str
    message: str
    retryable: bool = False
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.code not in JOB_ERROR_CODES:
            raise ValueError(f"undocumented job error code {self.code!r}")
        # A job's error is read by its owner: no library paths or build strings in it.
        self.message = public_message(self.message)
        super().__init__(self.message)
