"""Typed results of the SDK, read from Apiframe v2's JSON shapes.

Every parser reads the fields Apiframe's spec defines and treats Castframe's extensions
(``errorCode``, ``result.imageDetails``, an upload's ``reference``/``width``/``height``, ...)
as optional, so the same objects come back from Castframe and from Apiframe itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


class CastframeError(Exception):
    """An error answer from the server (or the network).

    ``message`` is the body's ``error``; ``code`` the stable machine-readable code (``http_<status>``
    when a server sends none); ``details`` the messages by JSON path of the field they are about;
    ``body`` the whole error body (for any other field); ``request_id`` the answer's
    ``X-Request-Id`` (what the server logged the request under).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        details: dict[str, list[str]] | None = None,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details: dict[str, list[str]] = details or {}
        self.body: dict[str, Any] = body or {}
        self.request_id = request_id

    @property
    def credits_required(self) -> int | None:
        """A 402's ``creditsRequired``: what the refused job costs."""
        return _int(self.body.get("creditsRequired"))

    @property
    def credits_available(self) -> int | None:
        """A 402's ``creditsAvailable``: what the account could spend when it was refused."""
        return _int(self.body.get("creditsAvailable"))


@dataclass(frozen=True)
class Consistency:
    """Whether an output still shows the reference's face (Castframe's extension)."""

    face_detected: bool
    distance: float | None
    same_character: bool | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Consistency:
        return cls(bool(data.get("faceDetected")), data.get("distance"), data.get("sameCharacter"))


@dataclass(frozen=True)
class Image:
    """One output: its URL (``result.images[i]``) and, where the server gives them, its facts
    (``result.imageDetails[i]``; None for what a server does not say)."""

    url: str
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    prompt: str | None = None
    content_type: str | None = None
    consistency: Consistency | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, url: str, details: dict[str, Any] | None) -> Image:
        facts = details or {}
        score = facts.get("consistency")
        return cls(
            url=url,
            width=_int(facts.get("width")),
            height=_int(facts.get("height")),
            seed=_int(facts.get("seed")),
            prompt=_str(facts.get("prompt")),
            content_type=_str(facts.get("contentType")),
            consistency=Consistency.from_json(score) if isinstance(score, dict) else None,
            metadata=dict(facts.get("metadata") or {}),
        )


def _images(result: Any) -> list[Image]:
    """``images`` (URL strings) zipped with ``imageDetails`` (same order, may be absent)."""
    if isinstance(result, str):  # Apiframe documents a bare URL as the result of some models
        return [Image(url=result)]
    if not isinstance(result, dict):
        return []
    urls = result.get("images") or []
    details = result.get("imageDetails") or []
    return [
        Image.from_json(str(url), details[index] if index < len(details) else None)
        for index, url in enumerate(urls)
    ]


@dataclass(frozen=True)
class Job:
    """A job (``GET /v2/jobs/{id}``). ``error`` is the failure's message, ``error_code`` its
    stable code (Castframe's ``errorCode``, None from servers that do not send it)."""

    id: str
    status: str
    model: str
    progress: int
    credit_cost: int
    images: list[Image] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    webhook_status: str | None = None
    created_at: str | None = None
    completed_at: str | None = None
    expired: bool = False
    input: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    """``result.metadata`` (the engine that drew it, ...), empty when absent."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        """COMPLETED, FAILED or CANCELLED: the job will not change any more."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        result = data.get("result")
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            model=str(data.get("model") or ""),
            progress=int(data.get("progress") or 0),
            credit_cost=int(data.get("creditCost") or 0),
            images=_images(result),
            error=_str(data.get("error")),
            error_code=_str(data.get("errorCode")),
            webhook_status=_str(data.get("webhookStatus")),
            created_at=_str(data.get("createdAt")),
            completed_at=_str(data.get("completedAt")),
            expired=bool(data.get("expired")),
            input=data.get("input"),
            metadata=dict(result.get("metadata") or {}) if isinstance(result, dict) else {},
            raw=data,
        )


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /v2/jobs``; pass ``next_cursor`` as ``cursor`` for the next one.
    ``models`` (the model ids the caller has used) only when asked with ``include_models``."""

    jobs: list[Job]
    next_cursor: str | None
    has_more: bool
    models: list[str] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPage:
        next_cursor = _str(data.get("nextCursor"))
        models = data.get("models")
        return cls(
            jobs=[Job.from_json(item) for item in data.get("jobs") or []],
            next_cursor=next_cursor,
            has_more=bool(data.get("hasMore", next_cursor is not None)),
            models=[str(m) for m in models] if isinstance(models, list) else None,
        )


@dataclass(frozen=True)
class Upload:
    """``POST /v2/uploads``: ``url`` goes in any image field of a later request, until
    ``expires_at``. ``reference`` (``upload://<id>``), ``width`` and ``height`` are Castframe's."""

    id: str
    url: str
    kind: str
    content_type: str
    byte_size: int
    expires_at: str | None
    reference: str | None = None
    width: int | None = None
    height: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Upload:
        return cls(
            id=str(data["id"]),
            url=str(data["url"]),
            kind=str(data.get("kind") or "image"),
            content_type=str(data.get("contentType") or ""),
            byte_size=int(data.get("byteSize") or 0),
            expires_at=_str(data.get("expiresAt")),
            reference=_str(data.get("reference")),
            width=_int(data.get("width")),
            height=_int(data.get("height")),
            raw=data,
        )


@dataclass(frozen=True)
class User:
    id: str
    email: str | None
    role: str | None


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    credits: int
    plan: str | None
    customer_id: str | None
    max_concurrent_jobs: int | None


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str | None
    prefix: str | None
    mode: str | None


@dataclass(frozen=True)
class Me:
    """``GET /v2/me``: the caller, its team (``team.credits`` are the spendable ones) and key
    (None where a server answers ``apiKey: null``: a caller not authenticated by key)."""

    user: User
    team: Team
    api_key: ApiKey | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Me:
        user, team, key = data.get("user") or {}, data.get("team") or {}, data.get("apiKey")
        return cls(
            user=User(str(user.get("id", "")), _str(user.get("email")), _str(user.get("role"))),
            team=Team(
                id=str(team.get("id", "")),
                name=str(team.get("name", "")),
                credits=int(team.get("credits") or 0),
                plan=_str(team.get("plan")),
                customer_id=_str(team.get("customerId")),
                max_concurrent_jobs=_int(team.get("maxConcurrentJobs")),
            ),
            api_key=ApiKey(
                id=str(key.get("id", "")),
                name=_str(key.get("name")),
                prefix=_str(key.get("prefix")),
                mode=_str(key.get("mode")),
            )
            if isinstance(key, dict)
            else None,
            raw=data,
        )


@dataclass(frozen=True)
class Model:
    """An entry of ``GET /v2/models``; ``params_key`` names the body's parameters object
    (``ideogramParams``), ``schema`` describes what goes in it."""

    id: str
    label: str
    modality: str
    description: str
    cost_min: int | None
    cost_max: int | None
    pricing_mode: str | None
    params_key: str | None
    pricing: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(
            id=str(data["id"]),
            label=str(data.get("label") or data["id"]),
            modality=str(data.get("modality") or ""),
            description=str(data.get("description") or ""),
            cost_min=_int(data.get("costMin")),
            cost_max=_int(data.get("costMax")),
            pricing_mode=_str(data.get("pricingMode")),
            params_key=_str(data.get("paramsKey")),
            pricing=dict(data.get("pricing") or {}),
            schema=dict(data.get("schema") or {}),
            raw=data,
        )
